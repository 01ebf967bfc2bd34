"""Samplers against diffusers' schedulers and pipelines (independent oracles) and exact identities.

Documented differences from diffusers (each checked below):
- DDIMScheduler's previous step is t - T//n, so single DDIM steps are compared on ``leading`` chains,
  where that is the next kept step (see test_respacing.py).
- With ``trailing`` spacing the last kept step is t > 1; DDPMScheduler then still adds noise at the final
  step (it only skips noise at index 0). We add no noise at the last step (Ho et al. Algorithm 2;
  improved-diffusion), so with ``fixed_large`` the final images differ by that one noise draw.
- With clipping, DDIM re-derives eps from the clipped x0_hat (improved-diffusion, GLIDE), which is
  diffusers' ``use_clipped_model_output=True``.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DModel
from diffusers.models.unets.unet_2d import UNet2DOutput

from explainer.model.checkpoint import DiffusionModel
from explainer.diffusion.forward import predict_x0_from_eps
from explainer.diffusion.respacing import make_chain
from explainer.diffusion.samplers import ddim_step, ddpm_step, guided_eps, run, sample
from explainer.diffusion.schedules import make_schedule

LINEAR = make_schedule("linear", 1000)
SHAPE = (3, 1, 6, 6)


def rand(seed, shape=SHAPE, dtype=torch.float32):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def assert_close(ours, ref, scale=1.0, tol=2e-6, rtol=3e-5):
    """Float32 comparison; ``scale`` is the largest coefficient that multiplies float32 rounding errors.

    rtol: diffusers' float32 alpha at the cosine schedule's capped last step, 1 - 0.999, is only good to
    ~3e-5 relative, which carries into everything at t = T.
    """
    err = (ours - ref).abs().max().item()
    bound = tol * max(1.0, scale) + rtol * ref.abs().max().item()
    assert err <= bound, f"max abs diff {err:.3g} > {bound:.3g}"


def err_scale(alpha_bar):
    """How much float32 rounding grows at a step: 1/sqrt(abar) amplifies eps errors, and diffusers' float32
    1 - abar loses digits when abar is near 1 (relative error ~6e-8 / (1 - abar))."""
    return 1 / math.sqrt(alpha_bar) + 0.1 / math.sqrt(1 - alpha_bar)


# ----------------------------------------------------------------------------------------------------
# single steps vs diffusers' schedulers


def reference(cls, name="linear", float64=False, **kw):
    """A stock diffusers scheduler; with ``float64`` its alphas are replaced by float64 ones so that its step
    logic can be compared at 1e-10 (diffusers computes them in float32: e.g. beta'_2 = 1 - abar_2/abar_1 then
    keeps only ~3 digits). The float64 betas are ours, checked against diffusers in test_schedules.py."""
    theirs = {"linear": "linear", "cosine": "squaredcos_cap_v2"}[name]
    ref = cls(beta_schedule=theirs, **kw)
    if float64:
        ref.betas = torch.from_numpy(make_schedule(name, 1000).betas.copy())
        ref.alphas = 1.0 - ref.betas
        ref.alphas_cumprod = torch.cumprod(ref.alphas, dim=0)
        ref.one = torch.tensor(1.0, dtype=torch.float64)
        if hasattr(ref, "final_alpha_cumprod"):
            ref.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    return ref


PRECISIONS = [pytest.param(True, id="float64"), pytest.param(False, id="float32")]


def check(ours, ref, alpha_bar, float64):
    if float64:
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-11 * err_scale(alpha_bar))
    else:  # stock float32 diffusers: bounded by its own rounding (see ``reference``)
        assert_close(ours.float(), ref.float(), err_scale(alpha_bar), tol=1e-4)


@pytest.mark.parametrize("float64", PRECISIONS)
@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("clip", [False, True])
def test_x0_hat_matches_pred_original_sample(name, clip, float64):
    sch = make_schedule(name, 1000)
    ref = reference(DDPMScheduler, name, float64, clip_sample=clip)
    dtype = torch.float64 if float64 else torch.float32
    x, eps = rand(0, dtype=dtype) * 1.3, rand(1, dtype=dtype)
    for t in (1, 2, 10, 488, 900, 999, 1000):
        out = ref.step(eps, t - 1, x, generator=torch.Generator().manual_seed(0))
        ours = predict_x0_from_eps(x, eps, float(sch.alpha_bars[t - 1]))
        ours = ours.clamp(-1.0, 1.0) if clip else ours  # the samplers' clip_x0
        if not float64:  # the tight float32 bound: x0_hat involves no differences of alpha_bars
            assert_close(ours, out.pred_original_sample, err_scale(sch.alpha_bars[t - 1]))
        check(ours, out.pred_original_sample, sch.alpha_bars[t - 1], float64)
        if clip:
            assert ours.abs().max() <= 1.0


@pytest.mark.parametrize("float64", PRECISIONS)
@pytest.mark.parametrize("variance, vtype", [("beta", "fixed_large"), ("beta_tilde", "fixed_small")])
@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("n, spacing", [(None, "leading"), (50, "leading"), (37, "linspace"), (10, "trailing")])
def test_ddpm_steps_match_diffusers(variance, vtype, clip, n, spacing, float64):
    """Every kind of single DDPM step, with diffusers' own noise draw reproduced from the same seed."""
    chain = make_chain(LINEAR, n, spacing)
    ref = reference(DDPMScheduler, "linear", float64, variance_type=vtype, clip_sample=clip, timestep_spacing=spacing)
    if n is not None:
        ref.set_timesteps(n)
    ts = ref.timesteps.tolist()
    assert [t + 1 for t in ts] == chain.timesteps.tolist()
    dtype = torch.float64 if float64 else torch.float32
    picks = sorted({0, 1, len(chain) // 2, len(chain) - 2, len(chain) - 1})
    for i in picks:
        x, eps = rand(10 + i, dtype=dtype), rand(20 + i, dtype=dtype)
        out = ref.step(eps, ts[i], x, generator=torch.Generator().manual_seed(i))
        last = i == len(chain) - 1
        # diffusers draws noise unless its index is 0; a trailing chain's last index is not 0 (see module doc)
        z = None if last else torch.randn(SHAPE, generator=torch.Generator().manual_seed(i), dtype=dtype)
        row = chain.coefficients("ddpm", variance).row(i)
        x_prev, x0_hat, coefs = ddpm_step(x, eps, row, clip_x0=clip, z=z)
        ab = chain.alpha_bar[i]
        check(x0_hat, out.pred_original_sample, ab, float64)
        if last and ts[i] > 0:
            if vtype == "fixed_small":  # beta_tilde is 0 at the last step: diffusers' draw is scaled by 1e-10
                tol = 1e-9 if float64 else 1e-5
                torch.testing.assert_close(x_prev, out.prev_sample, rtol=tol, atol=tol)
            else:
                assert coefs.sigma == 0.0 and (x_prev - out.prev_sample).abs().max() > 1e-3
            continue
        check(x_prev, out.prev_sample, ab, float64)
        sigma2 = row.beta if variance == "beta" else row.beta_tilde
        assert coefs.sigma == pytest.approx(0.0 if last else math.sqrt(sigma2), rel=1e-12)


@pytest.mark.parametrize("float64", PRECISIONS)
@pytest.mark.parametrize("eta", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("name, n", [("linear", 50), ("linear", 1000), ("cosine", 20)])
def test_ddim_steps_match_diffusers(eta, clip, name, n, float64):
    sch = make_schedule(name, 1000)
    chain = make_chain(sch, n, "leading")
    ref = reference(DDIMScheduler, name, float64, clip_sample=clip, timestep_spacing="leading", set_alpha_to_one=True)
    ref.set_timesteps(n)
    ts = ref.timesteps.tolist()
    assert [t + 1 for t in ts] == chain.timesteps.tolist()
    dtype = torch.float64 if float64 else torch.float32
    for i in sorted({0, 1, n // 2, n - 1}):
        x, eps, z = rand(30 + i, dtype=dtype), rand(40 + i, dtype=dtype), rand(50 + i, dtype=dtype)
        out = ref.step(eps, ts[i], x, eta=eta, use_clipped_model_output=True,
                       variance_noise=z if eta > 0 else None)
        x_prev, x0_hat, coefs = ddim_step(x, eps, chain.coefficients("ddim", eta=eta).row(i), clip_x0=clip, z=z)
        check(x0_hat, out.pred_original_sample, chain.alpha_bar[i], float64)
        check(x_prev, out.prev_sample, chain.alpha_bar[i], float64)
        ref_sigma = eta * math.sqrt(ref._get_variance(ts[i], ts[i] - 1000 // n).item())
        assert coefs.sigma == pytest.approx(ref_sigma, rel=1e-9 if float64 else 1e-3, abs=1e-12 if float64 else 1e-6)


# ----------------------------------------------------------------------------------------------------
# identities


def oracle_eps_fn(x0):
    """The exact eps of a known x0 at the noise level it is given: eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar)."""
    def eps_fn(x, alpha_bar, labels):
        return (x - math.sqrt(alpha_bar) * x0) / math.sqrt(1 - alpha_bar)
    return eps_fn


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("n, spacing", [(None, "linspace"), (20, "linspace"), (7, "trailing"), (13, "leading")])
def test_ddim_eta0_with_oracle_eps_recovers_x0(name, n, spacing):
    sch = make_schedule(name, 1000)
    x0 = torch.rand(SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    chain = make_chain(sch, n, spacing)
    recs = list(sample(oracle_eps_fn(x0), chain, SHAPE, method="ddim", eta=0.0, seed=1, dtype=torch.float64))
    torch.testing.assert_close(recs[-1].x_prev, x0, rtol=0, atol=1e-9)
    for r in recs:  # x0_hat is exact at every step
        torch.testing.assert_close(r.x0_hat, x0, rtol=0, atol=1e-7 / math.sqrt(sch.alpha_bar_at(r.t)) * 1e-2 + 1e-8)


def test_ddpm_with_oracle_eps_ends_at_x0():
    """Ancestral sampling with the exact eps: the last step (abar_prev = 1) lands exactly on x0."""
    x0 = torch.rand(SHAPE, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2 - 1
    for variance in ("beta", "beta_tilde"):
        x = run(oracle_eps_fn(x0), make_chain(LINEAR, 25), SHAPE, variance=variance, seed=4, dtype=torch.float64)
        torch.testing.assert_close(x, x0, rtol=0, atol=1e-9)


@pytest.mark.parametrize("n, spacing", [(1000, "linspace"), (50, "linspace"), (9, "trailing")])
def test_ddim_eta1_is_ddpm_with_beta_tilde(n, spacing):
    chain = make_chain(make_schedule("cosine", 1000), n, spacing)
    ab, ab_prev = chain.alpha_bar, chain.alpha_bar_prev
    eq16 = np.sqrt((1 - ab_prev) / (1 - ab)) * np.sqrt(1 - ab / ab_prev)  # Song et al. 2021, eq. 16 with eta = 1
    beta_tilde = (1 - ab / ab_prev) * (1 - ab_prev) / (1 - ab)  # Ho et al. 2020, eq. 7 on the respaced chain
    np.testing.assert_allclose(eq16 ** 2, beta_tilde, rtol=1e-10, atol=1e-18)
    np.testing.assert_allclose(chain.coefficients("ddim", eta=1.0).sigma[:-1], eq16[:-1], rtol=1e-12, atol=1e-18)
    np.testing.assert_allclose(chain.coefficients("ddpm").sigma[:-1] ** 2, beta_tilde[:-1], rtol=1e-10, atol=1e-18)
    for i in (0, len(chain) // 2, len(chain) - 2):  # and the whole step, with the same z
        x, eps, z = rand(i, dtype=torch.float64), rand(i + 1, dtype=torch.float64), rand(i + 2, dtype=torch.float64)
        ddim, ddpm = chain.coefficients("ddim", eta=1.0).row(i), chain.coefficients("ddpm", "beta_tilde").row(i)
        torch.testing.assert_close(ddim_step(x, eps, ddim, z=z)[0], ddpm_step(x, eps, ddpm, z=z)[0], rtol=1e-9,
                                   atol=1e-9)


def test_ddpm_eps_form_equals_posterior_mean_form():
    """Ho et al. eq. 11 (eps form, used without clipping) equals mu_tilde(x_t, x0_hat) of eq. 7."""
    chain = make_chain(LINEAR, 40)
    for i in (0, 20, 39):
        x, eps = rand(i, dtype=torch.float64), rand(i + 7, dtype=torch.float64)
        a, b = float(chain.alpha_bar[i]), float(chain.alpha_bar_prev[i])
        x_prev, x0_hat, _ = ddpm_step(x, eps, chain.coefficients().row(i))
        mu = (1 - a / b) * math.sqrt(b) / (1 - a) * x0_hat + (1 - b) * math.sqrt(a / b) / (1 - a) * x
        torch.testing.assert_close(x_prev, mu, rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------------------------------
# classifier-free guidance, seeds, batches, the sample() generator


class CountingModel:
    """eps depends on the label and the noise level, so guidance has something to mix; counts calls and batch
    sizes, and the levels it is told."""

    def __init__(self):
        self.calls = []
        self.levels = []

    def __call__(self, x, alpha_bar, labels):
        self.calls.append(x.shape[0])
        self.levels.append(alpha_bar)
        lab = torch.zeros(x.shape[0]) if labels is None else labels.float()
        level = torch.as_tensor(alpha_bar, dtype=x.dtype).reshape(-1, 1, 1, 1)
        return 0.1 * x + 0.01 * lab.reshape(-1, 1, 1, 1) + 1e-2 * level


@pytest.mark.parametrize("w", [0.0, 1.0, 2.5, 7.0])
def test_guidance_one_call_per_step_and_formula(w):
    model = CountingModel()
    chain = make_chain(LINEAR, 6)
    labels = torch.tensor([1, 2, 3])
    recs = list(sample(model, chain, SHAPE, labels=labels, guidance=w, null_label=10, seed=0))
    assert len(model.calls) == len(chain)  # exactly one network call per step
    assert all(c == (6 if w not in (0.0, 1.0) else 3) for c in model.calls)
    assert model.levels == chain.alpha_bar.tolist()  # each told its step's noise level, the chain's own
    for r in recs:
        ab = float(chain.alpha_bar[r.index])
        eps_c, eps_u = model(r.x_t, ab, labels), model(r.x_t, ab, torch.full((3,), 10))
        torch.testing.assert_close(r.eps, eps_u + w * (eps_c - eps_u))


def test_guidance_limits():
    model = CountingModel()
    x, t, lab = rand(0), float(LINEAR.alpha_bars[499]), torch.tensor([4, 5, 6])
    torch.testing.assert_close(guided_eps(model, x, t, lab, 1.0, 10), model(x, t, lab))
    torch.testing.assert_close(guided_eps(model, x, t, lab, 0.0, 10), model(x, t, torch.full((3,), 10)))
    # unconditional models (no labels or no null class) ignore the scale
    torch.testing.assert_close(guided_eps(model, x, t, None, 3.0, 10), model(x, t, None))


def test_guidance_doubles_a_noise_level_per_row():
    """Rows at different noise levels (the noise tab's batch): the doubled call gets each row's level twice."""
    model = CountingModel()
    x, lab = rand(0), torch.tensor([4, 5, 6])
    levels = torch.tensor([0.9, 0.5, 0.1], dtype=torch.float64)
    got = guided_eps(model, x, levels, lab, 2.0, 10)
    assert model.calls == [6] and torch.equal(model.levels[0], torch.cat([levels, levels]))
    for i in range(3):
        torch.testing.assert_close(got[i:i + 1], guided_eps(model, x[i:i + 1], float(levels[i]), lab[i:i + 1], 2.0, 10))


def test_seeded_reproducibility_and_generator_equivalence():
    model = CountingModel()
    chain = make_chain(LINEAR, 10)
    a = run(model, chain, SHAPE, seed=123)
    b = run(model, chain, SHAPE, seed=123)
    c = run(model, chain, SHAPE, generator=torch.Generator().manual_seed(123))
    d = run(model, chain, SHAPE, seed=124)
    assert torch.equal(a, b) and torch.equal(a, c) and not torch.allclose(a, d)
    # the noise order is diffusers': x_T first, then one z per noisy step
    g = torch.Generator().manual_seed(123)
    recs = list(sample(model, chain, SHAPE, seed=123))
    assert torch.equal(recs[0].x_t, torch.randn(SHAPE, generator=g))
    z0 = torch.randn(SHAPE, generator=g)
    x_prev, _, coefs = ddpm_step(recs[0].x_t, recs[0].eps, chain.coefficients().row(0), z=z0)
    torch.testing.assert_close(recs[0].x_prev, x_prev)


def test_batched_labels_equal_single_runs():
    """A batch with different labels gives each item what a batch of one with that label gives."""
    model = CountingModel()
    chain = make_chain(LINEAR, 8)
    x_T = rand(5)
    batch = run(model, chain, SHAPE, method="ddim", labels=[0, 3, 7], guidance=2.0, null_label=10, x_T=x_T)
    for i, lab in enumerate([0, 3, 7]):
        one = run(model, chain, (1, *SHAPE[1:]), method="ddim", labels=[lab], guidance=2.0, null_label=10,
                  x_T=x_T[i:i + 1])
        torch.testing.assert_close(batch[i:i + 1], one, rtol=1e-6, atol=1e-6)
    same = run(model, chain, SHAPE, method="ddim", labels=4, guidance=2.0, null_label=10, x_T=x_T)
    listed = run(model, chain, SHAPE, method="ddim", labels=[4, 4, 4], guidance=2.0, null_label=10, x_T=x_T)
    assert torch.equal(same, listed)


def test_step_records_are_consistent():
    model = CountingModel()
    chain = make_chain(LINEAR, 5, "trailing")
    recs = list(sample(model, chain, SHAPE, seed=0, variance="beta_tilde"))
    assert [r.index for r in recs] == list(range(5))
    assert [r.t for r in recs] == chain.timesteps.tolist() and recs[-1].t_prev == 0
    for a, b in zip(recs, recs[1:]):
        assert a.t_prev == b.t and a.x_prev is b.x_t
    assert recs[-1].coefs.sigma == 0.0 and recs[0].coefs.sigma > 0


@pytest.mark.parametrize("kwargs, match", [(dict(method="plms"), "sampler"), (dict(variance="learned"), "variance"),
                                           (dict(eta=1.5), "eta"), (dict(guidance=-1.0), "guidance"),
                                           (dict(labels=[1, 2]), "labels")])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        next(sample(CountingModel(), make_chain(LINEAR, 3), SHAPE, **kwargs))


# ----------------------------------------------------------------------------------------------------
# whole pipeline vs diffusers' DDPMPipeline / DDIMPipeline on a tiny random UNet2DModel


def tiny_unet(cls=UNet2DModel):
    torch.manual_seed(0)
    return cls(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(4, 8), layers_per_block=1,
               norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"),
               up_block_types=("UpBlock2D", "UpBlock2D")).eval()


class ToyUNet(UNet2DModel):
    """A random UNet2DModel pulled toward the exact eps of data at 0, so unclipped samples stay in range
    (a purely random eps makes x explode without clipping and the [0, 1] images saturate)."""

    def forward(self, sample, timestep, *args, **kwargs):
        out = super().forward(sample, timestep, *args, **kwargs).sample
        t = torch.as_tensor(timestep).reshape(-1).long().cpu()
        s = torch.from_numpy(np.sqrt(1 - LINEAR.alpha_bars)).float()[t].reshape(-1, 1, 1, 1)
        return UNet2DOutput(sample=0.7 * sample / s + 0.3 * out)


def ours_vs_pipeline(unet, pipe_cls, scheduler, n, method, **kw):
    pipe = pipe_cls(unet, scheduler)
    pipe.set_progress_bar_config(disable=True)
    pkw = dict(eta=kw["eta"], use_clipped_model_output=True) if pipe_cls is DDIMPipeline else {}
    ref = pipe(batch_size=2, generator=torch.Generator().manual_seed(7), num_inference_steps=n, output_type="pt",
               **pkw).images  # [B, C, H, W], (x / 2 + 0.5).clamp(0, 1)
    model = DiffusionModel(net=unet, schedule=LINEAR, image_size=8, channels=1, kind="diffusers")
    spacing = scheduler.config.timestep_spacing
    x = run(model.eps, make_chain(model.schedule, n, spacing), (2, 1, 8, 8), method=method,
            generator=torch.Generator().manual_seed(7), **kw)
    ours = (x / 2 + 0.5).clamp(0, 1)
    assert ours.shape == ref.shape
    inside = ((ref > 0) & (ref < 1)).float().mean().item()
    assert inside > 0.3, "comparison would be meaningless: the images saturate"
    return (ours - ref).abs().max().item()


@pytest.mark.slow
def test_ddpm_pipeline_default_1000_steps():
    """DDPMPipeline's defaults: fixed_small (beta_tilde), x0 clipped, all 1000 steps."""
    err = ours_vs_pipeline(tiny_unet(), DDPMPipeline, DDPMScheduler(), 1000, "ddpm", variance="beta_tilde",
                           clip_x0=True)
    assert err < 1e-4


@pytest.mark.parametrize("n, spacing, vtype, clip", [(50, "leading", "fixed_large", False), (37, "linspace", "fixed_small", True),
                                                     (20, "trailing", "fixed_small", False), (100, "linspace", "fixed_large", True)])
def test_ddpm_pipeline_respaced(n, spacing, vtype, clip):
    unet = tiny_unet(ToyUNet if not clip else UNet2DModel)
    sched = DDPMScheduler(variance_type=vtype, clip_sample=clip, timestep_spacing=spacing)
    err = ours_vs_pipeline(unet, DDPMPipeline, sched, n, "ddpm",
                           variance="beta" if vtype == "fixed_large" else "beta_tilde", clip_x0=clip)
    assert err < 1e-4


@pytest.mark.parametrize("eta, clip", [(0.0, True), (0.0, False), (1.0, False), (0.5, True)])
def test_ddim_pipeline(eta, clip):
    unet = tiny_unet(ToyUNet)
    err = ours_vs_pipeline(unet, DDIMPipeline, DDIMScheduler(clip_sample=clip), 50, "ddim", eta=eta, clip_x0=clip)
    assert err < 1e-4
