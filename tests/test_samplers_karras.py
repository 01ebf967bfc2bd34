"""Euler, Euler ancestral, Heun and DPM-Solver++(2M) against diffusers' schedulers (independent oracles), the Karras
spacing and the log-sigma map to fractional training steps, and exact identities.

Documented differences from diffusers (each checked or avoided below):
- diffusers' Euler and Heun "linspace" keep *unrounded* steps linspace(0, T - 1, n) (fractional, with sigma
  interpolated linearly in t) and DPM-Solver's "linspace" keeps n of n + 1 points; ours is the rounded even spacing
  that DDPM and DDIM use. The pipelines are therefore compared on our chain's steps, handed to diffusers as
  ``timesteps=`` (or as ``use_karras_sigmas=True``, which both compute the same way).
- diffusers' DPMSolverMultistepScheduler rounds the Karras levels' timesteps to integers before calling the network
  (the update still uses the unrounded sigma); we call the network at the fractional step, as its Euler and Heun
  schedulers do. DPM-Solver++ with Karras sigmas is compared step by step on the same network outputs.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import (DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler,
                       HeunDiscreteScheduler)

from explainer.diffusion.exact import ExactDenoiser
from explainer.diffusion.respacing import karras_sigmas, make_chain, network_timesteps, training_timesteps
from explainer.diffusion.samplers import (SAMPLERS, check_sampler_args, dpmpp_2m_weights, network_calls, run,
                                          sample)
from explainer.diffusion.schedules import make_schedule
from explainer.model.checkpoint import DiffusionModel
from tests.test_samplers import ToyUNet, tiny_unet

LINEAR = make_schedule("linear", 1000)
COSINE = make_schedule("cosine", 1000)


# ----------------------------------------------------------------------------------------------------
# the map from a noise level to a training step, and the Karras levels


def diffusers_sigma_to_t(sigma: float, schedule) -> float:
    """diffusers' ``_sigma_to_t`` on our schedule (0-based index), as a reference."""
    ref = EulerDiscreteScheduler(beta_schedule="linear")
    log_sigmas = np.log(np.sqrt((1 - schedule.alpha_bars) / schedule.alpha_bars))
    return float(ref._sigma_to_t(np.array(sigma), log_sigmas))


@pytest.mark.parametrize("schedule", [LINEAR, COSINE], ids=["linear", "cosine"])
def test_training_timesteps_interpolate_log_sigma_as_diffusers(schedule):
    rng = np.random.default_rng(0)
    sigmas = np.exp(rng.uniform(np.log(schedule.sigma_at(1)) - 1, np.log(schedule.sigma_at(1000)) + 1, 200))
    ours = training_timesteps(torch.from_numpy(1 / (1 + sigmas ** 2)), schedule).numpy()
    ref = np.array([diffusers_sigma_to_t(s, schedule) for s in sigmas]) + 1  # diffusers' index + 1 = paper step
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-7)
    assert ours.min() >= 1 and ours.max() <= 1000


def test_training_levels_map_to_their_own_integer_steps():
    steps = np.arange(1, 1001)
    got = training_timesteps(torch.from_numpy(LINEAR.alpha_bars.copy()), LINEAR).numpy()
    np.testing.assert_array_equal(got, steps)
    # through sigma and back (1 / (1 + sigma^2)), still the step itself
    back = 1 / (1 + LINEAR.sigma_at(steps) ** 2)
    np.testing.assert_array_equal(training_timesteps(torch.from_numpy(back), LINEAR).numpy(), steps)


def test_network_timesteps_are_fractional_between_steps():
    mid = math.exp(0.5 * (math.log(LINEAR.sigma_at(500)) + math.log(LINEAR.sigma_at(501))))
    t = network_timesteps(1 / (1 + mid ** 2), LINEAR, torch.zeros(3, 2))
    assert t.dtype == torch.float32 and t.shape == (3,)
    assert t[0].item() == pytest.approx(500.5, abs=1e-3)


def with_our_alphas(ref, schedule=LINEAR):
    """A diffusers scheduler with our float64 alpha_bar in place of its float32 ones (checked against each other in
    test_schedules.py), so its own logic is compared, not float32 rounding of sigma_min (~1e-4 relative)."""
    ab = torch.from_numpy(schedule.alpha_bars.copy())
    ref.alphas_cumprod = ab
    if hasattr(ref, "lambda_t"):  # DPM-Solver keeps alpha_t, sigma_t and lambda_t from __init__
        ref.alpha_t, ref.sigma_t = ab.sqrt(), (1 - ab).sqrt()
        ref.lambda_t = torch.log(ref.alpha_t) - torch.log(ref.sigma_t)
    return ref


def test_karras_sigmas_match_diffusers():
    ref = with_our_alphas(EulerDiscreteScheduler(beta_schedule="linear", use_karras_sigmas=True))
    ref.set_timesteps(12)
    chain = make_chain(LINEAR, 12, "karras")
    sig = np.sqrt((1 - chain.alpha_bar) / chain.alpha_bar)
    np.testing.assert_allclose(sig, ref.sigmas[:-1].numpy(), rtol=2e-6)  # diffusers keeps float32
    np.testing.assert_allclose(chain.timesteps, ref.timesteps.numpy() + 1, rtol=0, atol=2e-3)
    ends = karras_sigmas(LINEAR.sigma_at(1), LINEAR.sigma_at(1000), 5)
    assert ends[0] == pytest.approx(LINEAR.sigma_at(1000)) and ends[-1] == pytest.approx(LINEAR.sigma_at(1))
    assert chain.timesteps[0] == 1000 and chain.timesteps[-1] == 1  # the ends are training steps


def test_karras_spacing_refuses_zero_terminal_snr():
    with pytest.raises(ValueError, match="zero-terminal-SNR"):
        make_chain(make_schedule("linear", 1000, zero_terminal_snr=True), 10, "karras")


# ----------------------------------------------------------------------------------------------------
# identities on the exact denoiser


def exact_denoiser(n_points=5, seed=0):
    pts = torch.randn(n_points, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return ExactDenoiser(pts, LINEAR), pts


@pytest.mark.parametrize("n, spacing", [(10, "karras"), (25, "linspace"), (7, "trailing")])
def test_euler_is_ddim_eta0(n, spacing):
    """The probability-flow ODE's Euler step in sigma and DDIM's eta = 0 step are the same update (Song et al. 2021,
    eq. 14; Karras et al. 2022, sec. 3): shown on the exact denoiser of five points, to 1e-9."""
    den, _ = exact_denoiser()
    chain = make_chain(LINEAR, n, spacing)
    kw = dict(seed=3, dtype=torch.float64)
    euler = list(sample(den, chain, (64, 2), method="euler", **kw))
    ddim = list(sample(den, chain, (64, 2), method="ddim", eta=0.0, **kw))
    for a, b in zip(euler, ddim):
        torch.testing.assert_close(a.x_prev, b.x_prev, rtol=0, atol=1e-9)


def test_euler_ancestral_is_ddim_eta1():
    """sigma_up^2 of the ancestral step, carried back to x_t, is the DDPM posterior variance: Euler a = DDIM, eta 1."""
    den, _ = exact_denoiser()
    chain = make_chain(LINEAR, 20, "karras")
    a = run(den, chain, (64, 2), method="euler-a", seed=5, dtype=torch.float64)
    b = run(den, chain, (64, 2), method="ddim", eta=1.0, seed=5, dtype=torch.float64)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


@pytest.mark.parametrize("method", ["heun", "euler", "dpmpp-2m"])
def test_exact_denoiser_of_one_point_lands_on_it(method):
    """With one training point the exact x0_hat is that point at every level: every ODE sampler ends on it."""
    point = torch.tensor([[0.7, -0.3]], dtype=torch.float64)
    den = ExactDenoiser(point, LINEAR)
    x = run(den, make_chain(LINEAR, 6, "karras"), (32, 2), method=method, seed=1, dtype=torch.float64)
    torch.testing.assert_close(x, point.expand(32, 2), rtol=0, atol=1e-9)


def gaussian_data_eps(s2=0.25):
    """The exact eps_hat for data ~ N(0, s2 I): x0_hat = sqrt(abar) s2 x_t / (abar s2 + 1 - abar), a smooth ODE."""
    def eps_fn(x, ab, labels=None):
        x0 = math.sqrt(ab) * s2 * x / (ab * s2 + 1 - ab)
        return (x - math.sqrt(ab) * x0) / math.sqrt(1 - ab)
    return eps_fn


def test_heun_is_second_order():
    """On the exact ODE of Gaussian data, Heun's error falls about 4x when the steps double, Euler's about 2x."""
    den = gaussian_data_eps()
    ref = run(den, make_chain(LINEAR, 1000, "karras"), (256, 2), method="heun", seed=0, dtype=torch.float64)
    errs = {}
    for m in ("euler", "heun"):
        errs[m] = [(run(den, make_chain(LINEAR, n, "karras"), (256, 2), method=m, seed=0, dtype=torch.float64)
                    - ref).abs().mean().item() for n in (10, 20)]
    assert errs["heun"][0] / errs["heun"][1] > 3.0, errs
    assert 1.5 < errs["euler"][0] / errs["euler"][1] < 3.0, errs
    assert errs["heun"][1] < errs["euler"][1] / 2, errs


def test_network_calls_are_counted():
    den, _ = exact_denoiser()
    calls = []
    counting = lambda x, ab, y: calls.append(ab) or den(x, ab, y)
    for method in SAMPLERS:
        calls.clear()
        recs = list(sample(counting, make_chain(LINEAR, 10, "karras"), (4, 2), method=method, seed=0,
                           dtype=torch.float64))
        assert len(calls) == network_calls(method, 10) == sum(r.nfe for r in recs)
    assert network_calls("heun", 10) == 19


@pytest.mark.parametrize("method, steps, match", [("heun", 1, "Heun needs at least 2 steps"),
                                                  ("dpmpp-2m", 1, "DPM\\+\\+ 2M needs at least 2 steps"),
                                                  ("euler", 10, None), ("dpm", 10, "unknown sampler 'dpm'")])
def test_bad_sampler_settings(method, steps, match):
    chain = make_chain(LINEAR, steps, "karras")
    if match is None:
        check_sampler_args(method, chain=chain)
        with pytest.raises(ValueError, match="infinite at zero terminal SNR"):
            check_sampler_args(method, chain=make_chain(make_schedule("linear", 1000, zero_terminal_snr=True), 10))
        return
    with pytest.raises(ValueError, match=match):
        list(sample(lambda x, ab, y: x, chain, (1, 2), method=method))


# ----------------------------------------------------------------------------------------------------
# single DPM-Solver++(2M) steps vs DPMSolverMultistepScheduler, Karras levels, on the same model outputs


@pytest.mark.parametrize("n", [6, 20])
def test_dpmpp_2m_steps_match_diffusers(n):
    ref = with_our_alphas(DPMSolverMultistepScheduler(beta_schedule="linear", algorithm_type="dpmsolver++",
                                                      solver_order=2, use_karras_sigmas=True))
    ref.set_timesteps(n)
    chain = make_chain(LINEAR, n, "karras")
    np.testing.assert_allclose(np.sqrt((1 - chain.alpha_bar) / chain.alpha_bar), ref.sigmas[:-1].numpy(), rtol=2e-6)
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    outputs = [torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(10 + i)) for i in range(n)]
    eps_at = {float(ab): outputs[i] for i, ab in enumerate(chain.alpha_bar)}
    ours = list(sample(lambda x_t, ab, y: eps_at[float(ab)], chain, x.shape, method="dpmpp-2m", x_T=x))
    theirs = x.clone()
    for i, t in enumerate(ref.timesteps):
        theirs = ref.step(outputs[i], t, theirs).prev_sample
        torch.testing.assert_close(ours[i].x_prev, theirs, rtol=1e-4, atol=1e-4)
        assert ours[i].parts["second_order"] == (0 < i < n - 1)


def test_dpmpp_2m_weights_sum_to_the_first_order_weight():
    """D = (1 + 1/2r) D_i - 1/2r D_(i-1): the two weights sum to the first-order one (a constant x0_hat gives it)."""
    c_x, w0, w1 = dpmpp_2m_weights(0.3, 0.5, 0.2, True)
    _, c_d, _ = dpmpp_2m_weights(0.3, 0.5, None, False)
    assert w0 + w1 == pytest.approx(c_d) and w1 < 0 < w0


# ----------------------------------------------------------------------------------------------------
# whole walks vs diffusers' schedulers driving the same tiny UNet2DModel with the same noise


def diffusers_walk(unet, scheduler, n, seed=7, **set_kw):
    """The loop every diffusers pipeline runs: scale the input, call the network, step."""
    if set_kw:
        scheduler.set_timesteps(**set_kw)
    else:
        scheduler.set_timesteps(n)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 1, 8, 8, generator=gen) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        with torch.no_grad():
            eps = unet(scheduler.scale_model_input(x, t), t).sample
        noisy = isinstance(scheduler, EulerAncestralDiscreteScheduler)
        x = scheduler.step(eps, t, x, **(dict(generator=gen) if noisy else {})).prev_sample
    return x


def ours_walk(unet, chain, method, seed=7):
    model = DiffusionModel(net=unet, schedule=LINEAR, image_size=8, channels=1, kind="diffusers")
    return run(model.eps, chain, (2, 1, 8, 8), method=method, generator=torch.Generator().manual_seed(seed))


CASES = [("euler", EulerDiscreteScheduler, dict(use_karras_sigmas=True), 12, "karras"),
         ("euler", EulerDiscreteScheduler, {}, 25, "linspace"),
         ("euler", EulerDiscreteScheduler, dict(timestep_spacing="trailing"), 10, "trailing"),
         ("euler-a", EulerAncestralDiscreteScheduler, {}, 30, "leading"),
         ("heun", HeunDiscreteScheduler, dict(use_karras_sigmas=True), 8, "karras"),
         ("heun", HeunDiscreteScheduler, dict(timestep_spacing="trailing"), 10, "trailing"),
         ("dpmpp-2m", DPMSolverMultistepScheduler, dict(algorithm_type="dpmsolver++", solver_order=2), 20, "linspace"),
         ("dpmpp-2m", DPMSolverMultistepScheduler, dict(algorithm_type="dpmsolver++", solver_order=2), 8, "trailing")]


@pytest.mark.parametrize("method, cls, kw, n, spacing", CASES,
                         ids=[f"{c[0]}-{c[4]}-{c[3]}" for c in CASES])
def test_walk_matches_diffusers_scheduler(method, cls, kw, n, spacing):
    unet = tiny_unet(ToyUNet)
    chain = make_chain(LINEAR, n, spacing)
    sched = with_our_alphas(cls(beta_schedule="linear", **kw))
    if spacing in ("linspace", "leading") or cls is DPMSolverMultistepScheduler:
        set_kw = dict(timesteps=[int(t) - 1 for t in chain.timesteps])  # our steps (see the module docstring)
    else:
        set_kw = {}
    if cls is EulerAncestralDiscreteScheduler:  # it takes no custom steps: "leading" is the same kept steps
        sched = with_our_alphas(cls(beta_schedule="linear", timestep_spacing="leading"))
        set_kw = {}
    ref = diffusers_walk(unet, sched, n, **set_kw)
    if not set_kw:
        np.testing.assert_allclose(chain.timesteps, sched.timesteps.numpy()[::2 if cls is HeunDiscreteScheduler
                                                                               else 1][:n] + 1, atol=2e-3)
    ours = ours_walk(unet, chain, method)
    inside = ((ref > -1) & (ref < 1)).float().mean().item()
    assert inside > 0.3, "comparison would be meaningless: the samples saturate"
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=2e-4)
