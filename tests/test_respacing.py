"""Respacing and schedule swaps against diffusers' set_timesteps and the respacing identities.

diffusers indexes timesteps 0..T-1; the paper's (and our) t is diffusers' index + 1.

Where diffusers and we differ (documented here, tested below):
- linspace with n = 1: diffusers keeps index 0 (paper t = 1, an almost clean image); we keep t = T so one
  step still starts from pure noise.
- DDIMScheduler takes the previous step as t - T // n, which is the next kept step only for ``leading``
  spacing (and ``trailing`` when n divides T); for ``linspace`` it is wrong (diffusers issues #12633,
  #11347, #9261). Our chain always uses the next kept step. DDPMScheduler looks the previous step up in
  its timestep list and agrees with us for every spacing.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from explainer.diffusion.respacing import (STEP_SPACINGS as SPACINGS, make_chain, network_timesteps,
                                          spaced_timesteps, training_timesteps)
from explainer.diffusion.schedules import make_schedule


def mapped_steps(inference, steps, training) -> np.ndarray:
    """The training steps ``training_timesteps`` gives the inference schedule's noise levels at ``steps``."""
    return training_timesteps(torch.from_numpy(inference.alpha_bars[np.asarray(steps) - 1]), training).numpy()


def diffusers_timesteps(T, n, spacing, cls=DDPMScheduler):
    s = cls(num_train_timesteps=T, timestep_spacing=spacing)
    s.set_timesteps(n)
    return s, np.sort(s.timesteps.numpy()) + 1  # to paper t, ascending


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("T", [10, 97, 100])
def test_spaced_timesteps_match_diffusers_for_every_n(spacing, T):
    for n in range(1, T + 1):
        if spacing == "linspace" and n == 1:
            continue  # documented difference, tested below
        ours = spaced_timesteps(T, n, spacing)
        for cls in (DDPMScheduler, DDIMScheduler):
            _, ref = diffusers_timesteps(T, n, spacing, cls)
            np.testing.assert_array_equal(ours, ref, err_msg=f"T={T} n={n} {spacing} {cls.__name__}")


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 25, 33, 50, 100, 250, 333, 999, 1000])
def test_spaced_timesteps_T1000(spacing, n):
    ours = spaced_timesteps(1000, n, spacing)
    assert len(ours) == n and np.all(np.diff(ours) > 0) and ours[0] >= 1 and ours[-1] <= 1000
    if not (spacing == "linspace" and n == 1):
        np.testing.assert_array_equal(ours, diffusers_timesteps(1000, n, spacing)[1])
    # which ends each spacing visits
    if spacing == "linspace":
        assert ours[-1] == 1000 and (ours[0] == 1 or n == 1)
    elif spacing == "leading":
        assert ours[0] == 1 and (ours[-1] < 1000 or n == 1000)
    else:
        assert ours[-1] == 1000


def test_linspace_single_step_differs_from_diffusers():
    assert spaced_timesteps(1000, 1, "linspace").tolist() == [1000]
    assert diffusers_timesteps(1000, 1, "linspace")[1].tolist() == [1]


def test_half_rounding_case():
    """linspace(0, 999, 3) = [0, 499.5, 999]: numpy rounds 499.5 to 500, so the middle step is paper t = 501."""
    assert spaced_timesteps(1000, 3, "linspace").tolist() == [1, 501, 1000]


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_keeping_every_step_is_the_original_chain(name):
    s = make_schedule(name, 1000)
    for spacing in SPACINGS:
        c = make_chain(s, 1000, spacing)
        np.testing.assert_array_equal(c.timesteps, np.arange(1000, 0, -1))
        np.testing.assert_array_equal(c.model_t, c.timesteps)
        np.testing.assert_allclose(c.coefficients().beta, s.betas[::-1], rtol=1e-12, atol=1e-15)
        alpha_bars_prev = np.concatenate([[1.0], s.alpha_bars[:-1]])  # alpha_bar_{t-1}, alpha_bar_0 = 1
        beta_tilde = s.betas * (1 - alpha_bars_prev) / (1 - s.alpha_bars)  # Ho et al. 2020, eq. 7, written out
        np.testing.assert_allclose(c.coefficients().beta_tilde, beta_tilde[::-1], rtol=1e-9, atol=1e-15)
        np.testing.assert_array_equal(c.alpha_bar, s.alpha_bars[::-1])
        np.testing.assert_array_equal(c.alpha_bar_prev, alpha_bars_prev[::-1])
    assert len(make_chain(s)) == 1000


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("n", [10, 37, 250])
def test_respaced_betas(spacing, n):
    s = make_schedule("linear", 1000)
    c = make_chain(s, n, spacing)
    kept = c.timesteps
    assert np.all(np.diff(kept) < 0) and len(c) == n
    np.testing.assert_array_equal(c.timesteps_prev, np.append(kept[1:], 0))
    ab = s.alpha_bars[kept - 1]
    ab_prev = np.append(ab[1:], 1.0)
    np.testing.assert_array_equal(c.alpha_bar, ab)
    np.testing.assert_array_equal(c.alpha_bar_prev, ab_prev)
    # beta'_i = 1 - abar_{s_i} / abar_{s_{i-1}} (Nichol & Dhariwal sec. 4), NOT the original beta_{s_i}
    np.testing.assert_allclose(c.coefficients().beta, 1 - ab / ab_prev, rtol=1e-12)
    assert np.all(c.coefficients().beta[:-1] > s.betas[kept[:-1] - 1] * 1.5)
    np.testing.assert_allclose(c.coefficients().beta_tilde, (1 - ab / ab_prev) * (1 - ab_prev) / (1 - ab), rtol=1e-12)
    # the respaced chain is itself a diffusion: its cumulative product reproduces alpha_bar at the kept steps
    np.testing.assert_allclose(np.cumprod((1 - c.coefficients().beta)[::-1])[::-1], ab, rtol=1e-10)


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("n", [10, 37])
def test_respaced_variances_match_diffusers_ddpm(spacing, n):
    """DDPMScheduler's fixed_large variance is beta'_i and fixed_small is beta_tilde'_i on the respaced chain."""
    s = make_schedule("linear", 1000)
    c = make_chain(s, n, spacing)
    ref, _ = diffusers_timesteps(1000, n, spacing)
    for i, t in enumerate(ref.timesteps.tolist()):
        assert t + 1 == c.timesteps[i]
        large = ref._get_variance(t, variance_type="fixed_large").item()
        small = ref._get_variance(t, variance_type="fixed_small").item()
        assert large == pytest.approx(c.coefficients().beta[i], rel=2e-5, abs=1e-7)
        assert small == pytest.approx(max(c.coefficients().beta_tilde[i], 1e-20), rel=2e-4, abs=1e-7)


@pytest.mark.parametrize("spacing, n, agrees", [("leading", 10, True), ("leading", 37, True), ("trailing", 10, True),
                                                ("trailing", 37, False), ("linspace", 10, False)])
def test_ddim_previous_step_vs_diffusers(spacing, n, agrees):
    """diffusers' DDIM uses abar at t - T//n as alpha_bar_prev; that is the next kept step only sometimes."""
    s = make_schedule("linear", 1000)
    c = make_chain(s, n, spacing)
    ref, _ = diffusers_timesteps(1000, n, spacing, DDIMScheduler)
    prev = ref.timesteps.numpy() - 1000 // n
    ref_ab_prev = np.where(prev >= 0, ref.alphas_cumprod.double().numpy()[np.maximum(prev, 0)], 1.0)
    same = np.allclose(ref_ab_prev, c.alpha_bar_prev, rtol=1e-5, atol=1e-7)
    assert same == agrees


def test_bad_arguments():
    for n in (0, -1, 1001):
        with pytest.raises(ValueError, match="1..1000"):
            spaced_timesteps(1000, n)
    with pytest.raises(ValueError, match="spacing"):
        spaced_timesteps(1000, 10, "uniform")
    s = make_schedule("linear", 100)
    with pytest.raises(ValueError):
        make_chain(s, 101)
    with pytest.raises(ValueError):
        make_chain(s, 10, "nope")


def test_swap_identity_when_schedules_equal():
    a, b = make_schedule("cosine", 1000), make_schedule("cosine", 1000)
    steps = spaced_timesteps(1000, 50)
    np.testing.assert_array_equal(mapped_steps(a, steps, b), steps)
    c = make_chain(a, 50, inference=b)
    np.testing.assert_array_equal(c.model_t, c.timesteps)
    assert "interpolated" not in c.description


def brute_force_steps(levels: np.ndarray, train) -> np.ndarray:
    """For each level, the training steps k, k + 1 whose log sigma brackets it, found by a linear scan, and the
    fraction of the way between them in log sigma (clamped to [1, T]): the reference for ``training_timesteps``."""
    log_sig = 0.5 * (np.log1p(-train.alpha_bars) - np.log(train.alpha_bars))
    out = []
    for ab in levels:
        target = 0.5 * (np.log1p(-ab) - np.log(ab)) if 0 < ab < 1 else (np.inf if ab == 0 else -np.inf)
        if target <= log_sig[0]:
            out.append(1.0)
        elif target >= log_sig[-1]:
            out.append(float(train.T))
        else:
            k = max(i for i in range(train.T) if log_sig[i] <= target)
            out.append(k + 1 + (target - log_sig[k]) / (log_sig[k + 1] - log_sig[k]))
    return np.array(out)


@pytest.mark.parametrize("train_name, infer_name, T_inf", [("linear", "cosine", 1000), ("cosine", "linear", 1000),
                                                           ("linear", "cosine", 200), ("linear", "sigmoid", 1000)])
def test_swap_interpolates_in_log_sigma(train_name, infer_name, T_inf):
    train, infer = make_schedule(train_name, 1000), make_schedule(infer_name, T_inf)
    steps = np.arange(1, T_inf + 1)
    mapped = mapped_steps(infer, steps, train)
    assert mapped.dtype == np.float64
    assert np.all((mapped >= 1) & (mapped <= train.T))
    assert np.all(np.diff(mapped) >= 0)  # monotone: noisier inference step -> noisier training step
    np.testing.assert_allclose(mapped, brute_force_steps(infer.alpha_bars, train), rtol=0, atol=1e-8)
    # the chain uses the inference alpha_bars and the mapped training steps
    c = make_chain(train, 20, "linspace", infer)
    np.testing.assert_array_equal(c.alpha_bar, infer.alpha_bars[c.timesteps - 1])
    np.testing.assert_array_equal(c.model_t, mapped_steps(infer, c.timesteps, train))
    assert "interpolated in log sigma" in c.description


def test_any_noise_level_goes_to_its_fractional_step():
    """network_timesteps, through which every network denoiser maps the level it is told: levels between and beyond
    the training steps, one per row or one for the batch, go to the step of the same log sigma (brute force)."""
    train = make_schedule("linear", 1000)
    levels = np.concatenate([np.random.default_rng(0).uniform(0, 1, 300), train.alpha_bars[[0, 499, 999]],
                             [train.alpha_bars[-1] / 3, 0.9999999]])
    got = network_timesteps(torch.from_numpy(levels), train, torch.zeros(len(levels), 2))
    assert got.dtype == torch.float32 and got.shape == (len(levels),)
    np.testing.assert_allclose(got.numpy(), brute_force_steps(levels, train), rtol=1e-6, atol=1e-4)
    assert got[-5:-2].tolist() == [1, 500, 1000] and got[-2] == 1000 and got[-1] == 1
    for level, step in ((float(levels[7]), float(got[7])), (0.0, 1000), (1.0, 1)):  # one level for the batch
        assert network_timesteps(level, train, torch.zeros(3, 2)).tolist() == [step] * 3
    assert network_timesteps(torch.tensor([0.5], dtype=torch.float64), train, torch.zeros(4, 2)).shape == (4,)
    zsnr = make_schedule("linear", 1000, zero_terminal_snr=True)  # alpha_bar_T = 0: log sigma +inf at T itself
    np.testing.assert_array_equal(mapped_steps(zsnr, np.arange(1, 1001), zsnr), np.arange(1, 1001))
    with pytest.raises(TypeError, match="not a step"):
        network_timesteps(torch.tensor([500]), train, torch.zeros(1, 2))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        network_timesteps(1.5, train, torch.zeros(1, 2))


def test_swap_saturates_at_the_ends():
    """Cosine goes noisier than linear ever does (abar_T 2.4e-9 vs 4.0e-5): its last steps map to T."""
    train, infer = make_schedule("linear", 1000), make_schedule("cosine", 1000)
    mapped = mapped_steps(infer, np.array([1, 1000]), train)
    assert mapped[-1] == 1000
    assert mapped[0] == 1  # cosine's abar_1 is closer to 1 than linear's abar_1
