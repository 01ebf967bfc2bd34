"""The whole-walk path (explainer/accel/walk_graph.py) takes the same steps as explainer.diffusion.samplers.

Its step is the affine form of ``SamplingChain.coefficients(...).affine()``; that table is checked against the eps-form
steps ``ddpm_step`` / ``ddim_step`` and against Algorithm 2's closed form. Whole walks on CPU are checked
against ``samplers.run`` with the same noise. GPU tests (CUDA graph capture, bf16) run only where CUDA is.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from explainer.model.checkpoint import load_model
from explainer.diffusion.respacing import make_chain
from explainer.diffusion.samplers import ddim_step, ddpm_step, run
from explainer.diffusion.schedules import make_schedule
from explainer.accel.walk_graph import GraphedWalk

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

pytestmark = pytest.mark.usefixtures("one_torch_thread")
LINEAR = make_schedule("linear", 1000)
CHAINS = {
    "full linear": make_chain(LINEAR),
    "50 respaced": make_chain(LINEAR, 50),
    "20 trailing": make_chain(LINEAR, 20, "trailing"),
    "cosine on linear": make_chain(LINEAR, 30, inference=make_schedule("cosine", 1000)),
}




def _affine_step(row, x_t, eps, z, clip):
    sqrt_recip, sqrt_recipm1, coef1, coef2, sigma = (float(v) for v in row)
    x0 = sqrt_recip * x_t - sqrt_recipm1 * eps
    if clip:
        x0 = x0.clamp(-1, 1)
    return coef1 * x0 + coef2 * x_t + sigma * z, x0


@pytest.mark.parametrize("name", list(CHAINS))
@pytest.mark.parametrize("method,variance,eta", [("ddpm", "beta_tilde", 0.0), ("ddpm", "beta", 0.0),
                                                 ("ddim", "beta_tilde", 0.0), ("ddim", "beta_tilde", 0.5),
                                                 ("ddim", "beta_tilde", 1.0)])
@pytest.mark.parametrize("clip", [False, True])
def test_affine_table_reproduces_the_eps_form_steps(name, method, variance, eta, clip):
    chain = CHAINS[name]
    table = chain.coefficients(method, variance, eta).affine()
    assert table.shape == (len(chain), 5) and table.dtype == np.float64
    gen = torch.Generator().manual_seed(0)
    n = len(chain)
    for i in sorted({0, 1, n // 3, n // 2, n - 2, n - 1}):
        x_t, eps, z = (torch.randn(3, 1, 8, 8, generator=gen, dtype=torch.float64) for _ in range(3))
        last = i == n - 1
        row = chain.coefficients(method, variance, eta).row(i)
        zz = None if last else z
        step = ddpm_step if method == "ddpm" else ddim_step
        ref, ref_x0, _ = step(x_t, eps, row, clip_x0=clip, z=zz)
        out, x0 = _affine_step(table[i], x_t, eps, z, clip)
        scale = 1 + ref.abs().max().item()
        assert (out - ref).abs().max().item() / scale < 1e-9, (i, name)
        assert (x0 - ref_x0).abs().max().item() / (1 + ref_x0.abs().max().item()) < 1e-9
    assert table[-1, 4] == 0.0  # no noise at the last step


def test_affine_ddpm_matches_algorithm_2():
    """x_prev = (x_t - beta/sqrt(1-abar) eps)/sqrt(alpha): with x0_hat = a x_t - b eps and the mean c1 x0_hat + c2 x_t,
    c1 a + c2 = 1/sqrt(alpha) and c1 b = beta/(sqrt(1-abar) sqrt(alpha))."""
    chain = CHAINS["50 respaced"]
    a, b, c1, c2, _ = chain.coefficients().affine().T
    ab, ab_prev = chain.alpha_bar, chain.alpha_bar_prev
    alpha, beta = ab / ab_prev, 1 - ab / ab_prev  # the respaced chain's (Nichol & Dhariwal 2021, sec. 4)
    np.testing.assert_allclose(c1 * a + c2, 1 / np.sqrt(alpha), rtol=1e-12)
    np.testing.assert_allclose(c1 * b, beta / (np.sqrt(1 - ab) * np.sqrt(alpha)), rtol=1e-10)


def test_affine_sigma_columns():
    chain = CHAINS["50 respaced"]
    ab, ab_prev = chain.alpha_bar, chain.alpha_bar_prev
    beta = 1 - ab / ab_prev
    beta_tilde = beta * (1 - ab_prev) / (1 - ab)  # Ho et al. 2020, eq. 7
    np.testing.assert_allclose(chain.coefficients(variance="beta").affine()[:-1, 4] ** 2, beta[:-1], rtol=1e-12)
    np.testing.assert_allclose(chain.coefficients().affine()[:-1, 4] ** 2, beta_tilde[:-1], rtol=1e-12)
    # DDIM with eta = 1 has sigma^2 = beta_tilde (Song et al. 2021, sec. 4.1); eta = 0 is deterministic
    np.testing.assert_allclose(chain.coefficients(method="ddim", eta=1.0).affine()[:-1, 4] ** 2, beta_tilde[:-1],
                               rtol=1e-10)
    assert not chain.coefficients(method="ddim", eta=0.0).affine()[:, 4].any()


def test_affine_rejects_bad_arguments():
    zsnr = make_chain(make_schedule("linear", 1000, zero_terminal_snr=True), 10)
    with pytest.raises(ValueError, match="alpha_bar > 0"):
        zsnr.coefficients().affine()
    with pytest.raises(ValueError, match="unknown sampler"):
        CHAINS["50 respaced"].coefficients(method="euler").affine()
    with pytest.raises(ValueError, match="unknown variance"):
        CHAINS["50 respaced"].coefficients(variance="learned").affine()


CASES = [  # (steps, batch, walk keyword arguments)
    (25, 3, dict(labels=[1, 2, 3], guidance=3.0)),
    (25, 2, dict(labels=None)),
    (25, 4, dict(labels=[7], guidance=1.0, variance="beta")),
    (20, 2, dict(labels=[0, 9], guidance=0.0, clip_x0=True)),
    (15, 2, dict(labels=[4, 5], guidance=2.0, method="ddim", eta=0.0)),
    (15, 3, dict(labels=None, method="ddim", eta=0.5, clip_x0=True)),
    (12, 2, dict(labels=[3, 8], guidance=2.0, method="euler", spacing="karras")),  # Euler: DDIM's table, eta 0
    (12, 2, dict(labels=[3], guidance=2.0, method="euler-a", spacing="karras", clip_x0=True)),  # eta 1
]


@pytest.mark.parametrize("steps,batch,kw", CASES)
def test_walk_on_cpu_equals_samplers_run(tiny_model, steps, batch, kw):
    kw = dict(kw)
    chain = make_chain(tiny_model.schedule, steps, kw.pop("spacing", "linspace"))
    shape = (batch, 1, 28, 28)
    ref = run(tiny_model.eps, chain, shape, null_label=tiny_model.null_label, seed=11, **kw)
    walk = GraphedWalk(tiny_model, chain, batch, **kw)
    assert not walk.graphs and walk.precision == "fp32"
    out = walk.run(seed=11)
    assert out.shape == shape
    assert (out - ref).abs().max().item() / (1 + ref.abs().max().item()) < 1e-5  # (a random tiny net runs far off scale)
    other = run(tiny_model.eps, chain, shape, null_label=tiny_model.null_label, seed=12, **kw)
    assert (other - ref).abs().mean().item() > 100 * (out - ref).abs().mean().item()  # the test can tell seeds apart
    torch.testing.assert_close(walk.run(seed=11), out)  # a second run starts from scratch


def test_walk_network_batch_is_doubled_only_under_guidance(tiny_model):
    chain = make_chain(tiny_model.schedule, 5)
    calls = []

    def counting(x, alpha_bar, y):
        calls.append((x.shape[0], None if y is None else y.tolist(), alpha_bar.tolist()))
        return tiny_model.eps(x, alpha_bar, y)

    GraphedWalk(tiny_model, chain, 2, labels=[3, 4], guidance=2.5, eps_call=counting).run(seed=0)
    assert len(calls) == 5  # one network call per step
    assert all(b == 4 and y == [3, 4, 10, 10] for b, y, _ in calls)
    assert [ab for _, _, (ab,) in calls] == chain.alpha_bar.tolist()  # told each step's noise level
    calls.clear()
    GraphedWalk(tiny_model, chain, 2, labels=[3, 4], guidance=0.0, eps_call=counting).run(seed=0)
    assert all(b == 2 and y == [10, 10] for b, y, _ in calls)
    calls.clear()
    GraphedWalk(tiny_model, chain, 2, labels=None, eps_call=counting).run(seed=0)
    assert all(b == 2 and y is None for b, y, _ in calls)


def test_walk_frames_every_k_and_last(tiny_model):
    chain = make_chain(tiny_model.schedule, 12)
    walk = GraphedWalk(tiny_model, chain, 2, labels=[1, 2], guidance=2.0)
    frames = list(walk.frames(every=5, seed=4))
    assert [i for i, _, _ in frames] == [0, 5, 10, 11]
    final = walk.run(seed=4)
    torch.testing.assert_close(frames[-1][2], final)
    from explainer.diffusion.samplers import sample
    records = list(sample(tiny_model.eps, chain, (2, 1, 28, 28), labels=[1, 2], guidance=2.0,
                          null_label=tiny_model.null_label, seed=4))
    for i, x0_hat, x_prev in frames:
        for ours, theirs in [(x0_hat, records[i].x0_hat), (x_prev, records[i].x_prev)]:
            assert (ours - theirs).abs().max() / (1 + theirs.abs().max()) < 1e-5
    assert [i for i, _, _ in walk.frames(seed=4)] == [11]
    with pytest.raises(ValueError):
        list(walk.frames(every=-1))


def test_walk_takes_x_T_and_generators(tiny_model):
    chain = make_chain(tiny_model.schedule, 10)
    x_T = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    kw = dict(labels=[5, 6], guidance=1.5, null_label=tiny_model.null_label)
    ref = run(tiny_model.eps, chain, (2, 1, 28, 28), x_T=x_T, generator=torch.Generator().manual_seed(2), **kw)
    walk = GraphedWalk(tiny_model, chain, 2, labels=[5, 6], guidance=1.5)
    out = walk.run(x_T=x_T, generator=torch.Generator().manual_seed(2))
    assert (out - ref).abs().max().item() / (1 + ref.abs().max().item()) < 1e-5


@pytest.mark.parametrize("method,eta", [("ddpm", 0.0), ("ddim", 0.7)])
def test_walk_draws_big_noise_in_chunks_with_the_same_picture(tiny_model, method, eta):
    """A walk whose noise would not fit ``noise_bytes`` refills a few slots at a time, drawing in the same order."""
    chain = make_chain(tiny_model.schedule, 11)
    kw = dict(labels=[1, 2], guidance=2.0, method=method, eta=eta)
    whole = GraphedWalk(tiny_model, chain, 2, **kw)
    chunked = GraphedWalk(tiny_model, chain, 2, noise_bytes=3 * 2 * 28 * 28 * 4, **kw)
    assert whole.noise_slots == 11 and chunked.noise_slots == 3
    torch.testing.assert_close(chunked.run(seed=8), whole.run(seed=8), rtol=0, atol=0)
    ref = run(tiny_model.eps, chain, (2, 1, 28, 28), null_label=tiny_model.null_label, seed=8, **kw)
    assert (chunked.run(seed=8) - ref).abs().max() / (1 + ref.abs().max()) < 1e-5
    assert GraphedWalk(tiny_model, chain, 2, noise_bytes=1, **kw).noise_slots == 1


def test_walk_with_a_diffusers_unet_folder(tmp_path, monkeypatch):
    """A diffusers UNet2DModel (timesteps counted from 0, no labels) walks the same way too."""
    from test_checkpoint import tiny_diffusers_unet
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tiny_diffusers_unet().save_pretrained(tmp_path / "dunet")
    model = load_model(tmp_path / "dunet", device="cpu")
    chain = make_chain(model.schedule, 12)
    for kw in (dict(), dict(method="ddim", eta=0.3, clip_x0=True)):
        ref = run(model.eps, chain, (3, 1, 8, 8), seed=2, **kw)
        out = GraphedWalk(model, chain, 3, **kw).run(seed=2)
        assert (out - ref).abs().max() / (1 + ref.abs().max()) < 1e-5


def test_walk_rejects_bad_arguments(tiny_model):
    chain = make_chain(tiny_model.schedule, 5)
    with pytest.raises(ValueError, match="guidance"):
        GraphedWalk(tiny_model, chain, 2, guidance=-1)
    with pytest.raises(ValueError, match="eta"):
        GraphedWalk(tiny_model, chain, 2, method="ddim", eta=2)
    with pytest.raises(ValueError, match="labels for a batch"):
        GraphedWalk(tiny_model, chain, 2, labels=[1, 2, 3])
    with pytest.raises(ValueError, match="CUDA"):
        GraphedWalk(tiny_model, chain, 2, graphs=True)
    with pytest.raises(ValueError, match="Heun is not one affine step"):
        GraphedWalk(tiny_model, chain, 2, method="heun")
    with pytest.raises(ValueError, match="alpha_bar > 0"):
        GraphedWalk(tiny_model, make_chain(make_schedule("linear", 1000, zero_terminal_snr=True), 5), 2)


# ------------------------------------------------------------------------------------------------ GPU

@pytest.fixture(scope="module")
def cuda_model(tiny_ckpt):
    return load_model(tiny_ckpt, device="cuda")


@needs_cuda
@pytest.mark.parametrize("precision,tol", [("fp32", 1e-4), ("bf16", 2e-2)])
def test_cuda_graphed_walk_matches_samplers(cuda_model, precision, tol, exact_fp32):
    chain = make_chain(cuda_model.schedule, 25)
    for batch, labels, guidance in [(4, [0, 1, 2, 3], 3.0), (3, None, 1.0), (2, [5, 6], 0.0)]:
        kw = dict(labels=labels, guidance=guidance)
        ref = run(cuda_model.eps, chain, (batch, 1, 28, 28), null_label=cuda_model.null_label, seed=5,
                  device="cuda", **kw)
        walk = GraphedWalk(cuda_model, chain, batch, precision=precision, **kw)
        assert walk.graphs
        out = walk.run(seed=5)
        gen = torch.Generator(device="cuda")
        again = walk.run(generator=gen.manual_seed(0))
        torch.testing.assert_close(walk.run(generator=gen.manual_seed(0)), again)  # replays are reproducible
        other = run(cuda_model.eps, chain, (batch, 1, 28, 28), null_label=cuda_model.null_label, seed=6,
                    device="cuda", **kw)
        err = (out - ref).abs().mean().item() / (1 + ref.abs().mean().item())
        assert err < tol and (out - ref).abs().mean() < 0.05 * (other - ref).abs().mean(), (precision, batch, err)
        frames = list(walk.frames(every=10, seed=5))
        assert [i for i, _, _ in frames] == [0, 10, 20, 24]
        assert frames[-1][2].device.type == "cpu"
        torch.testing.assert_close(frames[-1][2], out.cpu())
