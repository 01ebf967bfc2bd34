"""Noise schedules against diffusers' DDPMScheduler (an independent float32 oracle) and published values."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from explainer.diffusion.respacing import make_chain
from explainer.diffusion.schedules import SCHEDULES, make_schedule, rescale_zero_terminal_snr

# diffusers computes in float32: its betas/alpha_bars carry ~1e-7 relative rounding error, and the
# cumulative product over 1000 steps a little more.
ATOL = 1e-6


def diffusers_arrays(T, **kw):
    s = DDPMScheduler(num_train_timesteps=T, **kw)
    return s.betas.double().numpy(), s.alphas_cumprod.double().numpy()


@pytest.mark.parametrize("T", [1000, 250, 37])
@pytest.mark.parametrize("ours, theirs", [
    ("linear", dict(beta_schedule="linear")),
    ("cosine", dict(beta_schedule="squaredcos_cap_v2")),
    ("squaredcos_cap_v2", dict(beta_schedule="squaredcos_cap_v2")),
    ("scaled_linear", dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)),
    ("sigmoid", dict(beta_schedule="sigmoid")),
    # quadratic = linear in sqrt(beta) between the linear schedule's end points = diffusers' scaled_linear there
    ("quadratic", dict(beta_schedule="scaled_linear", beta_start=1e-4, beta_end=0.02)),
])
def test_matches_diffusers(ours, theirs, T):
    s = make_schedule(ours, T)
    betas, abar = diffusers_arrays(T, **theirs)
    assert s.T == T and s.betas.dtype == np.float64 and s.alpha_bars.dtype == np.float64
    np.testing.assert_allclose(s.betas, betas, rtol=1e-5, atol=ATOL)
    np.testing.assert_allclose(s.alpha_bars, abar, rtol=1e-5, atol=ATOL)
    np.testing.assert_allclose(s.alphas, 1 - s.betas, rtol=0, atol=0)


def test_float64_exactness():
    """Our arrays are computed in float64: the cumulative product is exact to ~1e-15, diffusers' is not."""
    s = make_schedule("linear", 1000)
    ref = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000, dtype=np.float64))
    np.testing.assert_allclose(s.alpha_bars, ref, rtol=1e-13)
    for name in ("linear", "cosine", "sigmoid"):
        sch = make_schedule(name, 100)
        beta_tilde = make_chain(sch).coefficients().beta_tilde
        for arr in (sch.betas, sch.alphas, sch.alpha_bars, sch.snr, sch.log_snr, beta_tilde):
            assert arr.dtype == np.float64


def test_sanity_values_from_math_notes():
    lin, cos = make_schedule("linear"), make_schedule("cosine")
    assert lin.alpha_bars[-1] == pytest.approx(4.0358e-5, rel=1e-4)
    assert cos.alpha_bars[-1] == pytest.approx(2.43e-9, rel=1e-2)
    assert lin.steps_near_pure_noise(0.01) / lin.T == pytest.approx(0.327, abs=5e-4)
    assert cos.steps_near_pure_noise(0.01) / cos.T == pytest.approx(0.065, abs=5e-4)
    beta_tilde = make_chain(lin).coefficients().beta_tilde[::-1]  # the full chain, noisiest first: reversed to t - 1
    assert beta_tilde[488 - 1] == pytest.approx(0.009792, abs=5e-7)
    # only beta_T hits the 0.999 cap on the cosine schedule; SNR never reaches 0 on either
    assert np.sum(cos.betas >= 0.999) == 1 and cos.betas[-1] == pytest.approx(0.999)
    assert np.all(lin.snr > 0) and np.all(cos.snr > 0)
    # 1/sqrt(alpha_bar_T): about 157 (linear) and about 20,000 (cosine), as the notes say
    assert 1 / math.sqrt(lin.alpha_bars[-1]) == pytest.approx(157.4, abs=0.5)
    assert 1 / math.sqrt(cos.alpha_bars[-1]) == pytest.approx(20290, rel=0.01)


def test_cosine_closed_form():
    """Nichol & Dhariwal eq. 17 directly: alpha_bar_t = f(t)/f(0) wherever beta is not capped."""
    T, s = 1000, 0.008
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    sch = make_schedule("cosine", T)
    for t in (1, 10, 500, 900, 999):
        assert sch.alpha_bars[t - 1] == pytest.approx(f(t) / f(0), rel=1e-12)


def test_derived_quantities_by_hand():
    sch = make_schedule("linear", 1000)
    t = 300
    b, ab, ab_prev = sch.betas[t - 1], np.prod(1 - sch.betas[:t]), np.prod(1 - sch.betas[:t - 1])
    assert sch.alpha_bar_at(t) == pytest.approx(ab, rel=1e-13)
    assert sch.alpha_bar_at(0) == 1.0
    assert sch.snr[t - 1] == pytest.approx(ab / (1 - ab), rel=1e-12)
    assert sch.log_snr[t - 1] == pytest.approx(math.log(ab / (1 - ab)), rel=1e-12)
    # the sampling chain's coefficients at t on the full chain: posterior variance and mean of Ho et al. eq. 7
    full = make_chain(sch).coefficients()
    row = full.row(sch.T - t)
    assert row.beta_tilde == pytest.approx(b * (1 - ab_prev) / (1 - ab), rel=1e-12)
    assert full.beta_tilde[-1] == 0.0  # beta_tilde_1 = 0 (alpha_bar_0 = 1)
    assert row.posterior_mean_coef1 == pytest.approx(b * math.sqrt(ab_prev) / (1 - ab), rel=1e-12)
    assert row.posterior_mean_coef2 == pytest.approx((1 - ab_prev) * math.sqrt(1 - b) / (1 - ab), rel=1e-12)
    summ = sch.summary_at(t)
    assert summ["alpha_bar_t"] == pytest.approx(ab) and summ["beta_t"] == pytest.approx(b)
    assert sch.summary_at(0)["alpha_bar_t"] == 1.0 and sch.summary_at(0)["snr"] == math.inf


def test_sigma_and_noise_std_closed_form():
    """sigma_t = sqrt(1 / alpha_bar_t - 1) (Karras et al. 2022, Table 1, VP) and sqrt(1 - alpha_bar_t), with alpha_bar
    the cumulative product of the linear betas written out; 0 at t = 0, inf at a zero terminal SNR."""
    ab = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    s = make_schedule("linear", 1000)
    t = np.array([1, 2, 250, 500, 999, 1000])
    np.testing.assert_allclose(s.sigma_at(t), np.sqrt(1 / ab[t - 1] - 1), rtol=1e-12)
    np.testing.assert_allclose(s.noise_std_at(t), np.sqrt(1 - ab[t - 1]), rtol=1e-12)
    assert s.sigma_at(1000) == pytest.approx(math.sqrt((1 - 4.0358e-5) / 4.0358e-5), rel=1e-4)  # about 157.4
    assert s.sigma_at(0) == 0.0 and s.noise_std_at(0) == 0.0
    assert make_schedule("linear", 1000, zero_terminal_snr=True).sigma_at(1000) == math.inf
    with pytest.raises(ValueError, match="0..1000"):
        s.sigma_at(1001)


@pytest.mark.parametrize("name", ["linear", "cosine", "scaled_linear"])
def test_zero_terminal_snr(name):
    base = make_schedule(name, 1000)
    z = make_schedule(name, 1000, zero_terminal_snr=True)
    assert z.alpha_bars[-1] == pytest.approx(0.0, abs=1e-20)
    assert z.betas[-1] == pytest.approx(1.0)
    assert z.alpha_bars[0] == pytest.approx(base.alpha_bars[0], rel=1e-12)
    assert np.all(np.diff(z.alpha_bars) < 0)
    # Lin et al. Algorithm 1: sqrt(alpha_bar) is an affine map of the original sqrt(alpha_bar)
    sa, sz = np.sqrt(base.alpha_bars), np.sqrt(z.alpha_bars)
    np.testing.assert_allclose(sz, (sa - sa[-1]) * sa[0] / (sa[0] - sa[-1]), rtol=1e-10, atol=1e-14)
    theirs = {"linear": "linear", "cosine": "squaredcos_cap_v2", "scaled_linear": "scaled_linear"}[name]
    kw = dict(beta_start=0.00085, beta_end=0.012) if name == "scaled_linear" else {}
    betas, abar = diffusers_arrays(1000, beta_schedule=theirs, rescale_betas_zero_snr=True, **kw)
    np.testing.assert_allclose(z.alpha_bars, abar, rtol=1e-4, atol=ATOL)
    np.testing.assert_allclose(z.betas[:-1], betas[:-1], rtol=1e-4, atol=1e-5)


def test_rescale_function_vs_diffusers():
    from diffusers.schedulers.scheduling_ddpm import rescale_zero_terminal_snr as theirs
    betas = np.linspace(1e-4, 0.02, 200)
    ours = rescale_zero_terminal_snr(betas)
    np.testing.assert_allclose(ours, theirs(torch.tensor(betas)).numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("T", [2, 3, 10, 999, 4000])
@pytest.mark.parametrize("name", SCHEDULES)
def test_any_T(name, T):
    s = make_schedule(name, T)
    assert len(s.betas) == len(s.alpha_bars) == T
    assert np.all((s.betas > 0) & (s.betas <= 0.999 + 1e-12))
    assert np.all(np.diff(s.alpha_bars) < 0) and 0 < s.alpha_bars[-1] < s.alpha_bars[0] < 1
    assert np.all(np.isfinite(s.log_snr)) and np.all(np.diff(s.log_snr) < 0)


@pytest.mark.parametrize("name, T", [("nope", 1000), ("Linear", 1000), ("linear", 1), ("linear", 0),
                                     ("linear", -5), ("linear", 10.5), ("linear", "1000"), ("cosine", None)])
def test_bad_arguments(name, T):
    with pytest.raises(ValueError):
        make_schedule(name, T)


def test_bad_t():
    s = make_schedule("linear", 100)
    for bad in (-1, 101):
        with pytest.raises(ValueError, match="0..100"):
            s.alpha_bar_at(bad)
        with pytest.raises(ValueError):
            s.summary_at(bad)
    with pytest.raises(ValueError, match="1..100"):
        s.check_t(0)


def test_arrays_read_only():
    s = make_schedule("linear", 10)
    with pytest.raises(ValueError):
        s.betas[0] = 0.5
