"""The 2D lab's backend: the exact denoiser against brute force and analytic answers, the MLP in the shared samplers,
distances between point sets, the data sets, training, and the views (pictures, numbers, streamed walk)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from explainer.diffusion.exact import (ExactDenoiser, effective_points, marginal_density, posterior_mean,
                                      posterior_weights)
from explainer.diffusion.respacing import make_chain
from explainer.diffusion.samplers import ddpm_step, run, sample
from explainer.diffusion.schedules import make_schedule
from explainer.model import toy
from explainer.model.lab_training import LabTrainConfig, train, train_steps
from explainer.model.mlp import (EpsMLP, LabCheckpointError, LabCheckpointMissing, LabModel, MLPConfig,
                                 load_lab_model, save_lab_model)
from explainer.quality import points as qp
from explainer.views import lab as vl

pytestmark = pytest.mark.usefixtures("one_torch_thread")
LINEAR = make_schedule("linear", 1000)


def brute_posterior_mean(x_t: np.ndarray, alpha_bar: float, data: np.ndarray) -> np.ndarray:
    """sum_i w_i x_i with w_i proportional to N(x_t; sqrt(abar) x_i, (1 - abar) I), written out in numpy."""
    out = np.empty_like(x_t)
    for b, x in enumerate(x_t):
        d2 = ((x[None] - np.sqrt(alpha_bar) * data) ** 2).sum(1)
        logw = -d2 / (2 * (1 - alpha_bar))
        w = np.exp(logw - logw.max())
        out[b] = (w[:, None] * data).sum(0) / w.sum()
    return out


def small_data(n=60, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 2)) * np.array([1.3, 0.7])


# ---------------------------------------------------------------- the exact denoiser


def exact_eps(x_t: np.ndarray, alpha_bar: float, data: np.ndarray) -> np.ndarray:
    """The closed form eps* = (x_t - sqrt(abar) E[x_0 | x_t]) / sqrt(1 - abar), with the brute-force posterior mean."""
    return (x_t - np.sqrt(alpha_bar) * brute_posterior_mean(x_t, alpha_bar, data)) / np.sqrt(1 - alpha_bar)


@pytest.mark.parametrize("t", [1, 5, 40, 300, 999, 1000])
def test_exact_posterior_mean_matches_a_brute_force_sum(t):
    data = small_data()
    ab = float(LINEAR.alpha_bars[t - 1])
    x_t = np.random.default_rng(1).normal(size=(37, 2)) * 1.5
    got = posterior_mean(torch.as_tensor(x_t), ab, torch.as_tensor(data)).numpy()
    want = brute_posterior_mean(x_t, ab, data)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    den = ExactDenoiser(data, LINEAR)
    eps = den(torch.as_tensor(x_t, dtype=torch.float64), ab).numpy()
    np.testing.assert_allclose(eps, (x_t - np.sqrt(ab) * want) / np.sqrt(1 - ab), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("t", [1, 40, 1000])
def test_posterior_weights_average_to_the_posterior_mean(t):
    data = small_data()
    ab = float(LINEAR.alpha_bars[t - 1])
    x_t = torch.as_tensor(np.random.default_rng(2).normal(size=(5, 2)))
    w = posterior_weights(x_t, ab, data)
    assert w.shape == (5, 60) and torch.allclose(w.sum(1), torch.ones(5, dtype=torch.float64))
    np.testing.assert_allclose((w @ torch.as_tensor(data)).numpy(), brute_posterior_mean(x_t.numpy(), ab, data),
                               rtol=1e-9, atol=1e-12)
    n = effective_points(w)
    assert torch.all((n >= 1 - 1e-9) & (n <= 60 + 1e-9))
    assert effective_points(torch.full((1, 8), 1 / 8, dtype=torch.float64)).item() == pytest.approx(8)


def test_exact_denoiser_of_one_point_is_that_point():
    x1 = np.array([[0.7, -1.2]])
    den = ExactDenoiser(x1, LINEAR)
    x_t = torch.randn(9, 2, dtype=torch.float64) * 3
    for ab in [float(LINEAR.alpha_bars[t - 1]) for t in (1, 17, 500, 1000)] + [0.123]:
        x0 = posterior_mean(x_t, ab, den.data)
        assert torch.equal(x0, torch.as_tensor(x1).expand(9, 2))  # E[x_0 | x_t] = x_1 exactly
        torch.testing.assert_close(den.eps64(x_t, ab), (x_t - ab ** 0.5 * x0) / (1 - ab) ** 0.5)


def test_exact_denoiser_is_stable_far_away_and_at_tiny_noise():
    data = small_data(200)
    den = ExactDenoiser(data, LINEAR)
    x_t = torch.tensor([[80.0, -60.0], [0.1, 0.2], [-1e3, 1e3]])
    for t in (1, 2, 1000):
        assert torch.isfinite(den(x_t, float(LINEAR.alpha_bars[t - 1]))).all()
    # at t = 1 a point right on a training point denoises to that point
    x = torch.as_tensor(data[:5] * LINEAR.alpha_bars[0] ** 0.5)
    np.testing.assert_allclose(posterior_mean(x, LINEAR.alpha_bars[0], den.data).numpy(), data[:5], atol=1e-9)


def test_exact_denoiser_batches_mixed_noise_levels_and_labels():
    data = small_data(40)
    labels = np.arange(40) % 3
    den = ExactDenoiser(data, LINEAR, labels, 3)
    x = torch.randn(12, 2, dtype=torch.float64)
    levels = torch.tensor([float(LINEAR.alpha_bars[4]), 0.37] * 6, dtype=torch.float64)  # a step's and no step's
    lab = torch.tensor([0, 1, 2, 3] * 3)  # 3 = the null label: every point
    got = den.eps64(x, levels, lab)
    for i in range(12):
        pts = data if lab[i] == 3 else data[labels == int(lab[i])]
        want = exact_eps(x[i:i + 1].numpy(), float(levels[i]), pts)[0]
        np.testing.assert_allclose(got[i].numpy(), want, rtol=1e-6, atol=1e-8)
    assert den.null_label == 3


class Recorder:
    """A denoiser that passes every call on and keeps (x_t, alpha_bar, eps) for the test to check."""

    def __init__(self, den):
        self.den, self.calls = den, []

    def __call__(self, x_t, alpha_bar, labels=None):
        eps = self.den(x_t, alpha_bar, labels)
        self.calls.append((x_t.clone(), float(alpha_bar), eps))
        return eps


def test_exact_denoiser_along_a_chain_of_another_schedule_uses_its_noise_levels():
    """The samplers tell the denoiser the chain's own levels (here the cosine schedule's, which no linear training
    step has): every call's eps is the closed form at that level; the same denoiser serves walk after walk."""
    data = small_data(30)
    den = Recorder(ExactDenoiser(data, LINEAR))
    chain = make_chain(LINEAR, 10, inference=make_schedule("cosine", 1000))
    first = run(den, chain, (5, 2), seed=1, dtype=torch.float64)
    assert [ab for _, ab, _ in den.calls] == chain.alpha_bar.tolist()
    for x_t, ab, eps in den.calls:
        np.testing.assert_allclose(eps.numpy(), exact_eps(x_t.numpy(), ab, data), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(run(den, chain, (5, 2), seed=1, dtype=torch.float64), first, rtol=0, atol=0)


def heun_walk(eps_fn, chain, x: torch.Tensor) -> torch.Tensor:
    """Heun's method on the probability-flow ODE in sigma = sqrt((1 - abar) / abar) (Karras et al. 2022,
    Algorithm 1; y = x / sqrt(abar) has dy/dsigma = eps): two denoiser calls per step, at the step's level and at
    the next one (one call on the last step, to sigma = 0)."""
    for ab, ab_prev in zip(chain.alpha_bar.tolist(), chain.alpha_bar_prev.tolist()):
        sigma, sigma_next = ((1 - ab) / ab) ** 0.5, ((1 - ab_prev) / ab_prev) ** 0.5
        y = x / ab ** 0.5
        d = eps_fn(x, ab)
        y_next = y + (sigma_next - sigma) * d
        if sigma_next > 0:
            d = (d + eps_fn(y_next * ab_prev ** 0.5, ab_prev)) / 2
            y_next = y + (sigma_next - sigma) * d
        x = y_next * ab_prev ** 0.5
    return x


def test_a_sampler_that_evaluates_twice_per_step_gets_the_exact_eps_at_each_level():
    """A second-order sampler asks for eps twice per step, at two different noise levels: the exact denoiser answers
    each call at the level it is given (checked against the closed form), with nothing counting calls."""
    data = small_data(30)
    den = Recorder(ExactDenoiser(data, LINEAR))
    chain = make_chain(LINEAR, 12)
    x0 = heun_walk(den, chain, torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3)))
    levels = [ab for _, ab, _ in den.calls]
    assert len(levels) == 2 * len(chain) - 1
    assert levels[0::2] == chain.alpha_bar.tolist() and levels[1::2] == chain.alpha_bar_prev[:-1].tolist()
    assert all(a != b for a, b in zip(levels[0::2], levels[1::2]))  # two different levels within each step
    for x_t, ab, eps in den.calls:
        np.testing.assert_allclose(eps.numpy(), exact_eps(x_t.numpy(), ab, data), rtol=1e-4, atol=1e-5)
    assert qp.nearest_distances(x0.numpy(), data)[0].max() < 0.05  # and the ODE lands on the training points


def test_exact_reverse_walk_lands_on_training_points():
    """Memorisation: every particle ends on one of the training points (they are far apart here)."""
    data = np.array([[-1.5, 0.0], [0.0, 1.5], [1.5, 0.0], [0.0, -1.5], [0.5, 0.5]])
    den = ExactDenoiser(data, LINEAR)
    for method in ("ddpm", "ddim"):
        x0 = run(den, make_chain(LINEAR, 50), (300, 2), method=method, seed=3, dtype=torch.float64).numpy()
        dist, idx = qp.nearest_distances(x0, data)
        assert dist.max() < 1e-6, method
        assert len(np.unique(idx)) == len(data)  # and it visits all of them


def test_exact_guidance_pulls_particles_into_the_class():
    data = toy.make_preset("8 Gaussians", 400, 0)
    den = ExactDenoiser(data.points, LINEAR, data.labels, 8)
    x0 = run(den, make_chain(LINEAR, 40), (300, 2), labels=torch.full((300,), 2), guidance=3.0, null_label=8,
             seed=0).numpy()
    _, idx = qp.nearest_distances(x0, data.points)
    assert (data.labels[idx] == 2).mean() > 0.98


def test_marginal_density_matches_a_direct_sum():
    pts = small_data(30)
    xs, ys = np.linspace(-3, 3, 7), np.linspace(-2, 2, 5)
    ab = 0.6
    got = marginal_density(xs, ys, pts, ab)
    var = 1 - ab
    for j, y in enumerate(ys):
        for k, x in enumerate(xs):
            d2 = (x - np.sqrt(ab) * pts[:, 0]) ** 2 + (y - np.sqrt(ab) * pts[:, 1]) ** 2
            want = np.mean(np.exp(-d2 / (2 * var)) / (2 * np.pi * var))
            assert got[j, k] == pytest.approx(want, rel=1e-10)
    # a density: it integrates to about 1 on a fine grid
    fine = np.linspace(-6, 6, 241)
    assert marginal_density(fine, fine, pts, ab).sum() * (fine[1] - fine[0]) ** 2 == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ValueError, match="min_var"):
        marginal_density(xs, ys, pts, 1.0)


# ---------------------------------------------------------------- the MLP and the shared samplers


def test_mlp_shapes_classes_and_null_label():
    net = EpsMLP(MLPConfig(hidden=32, blocks=2, num_classes=8))
    x = torch.randn(5, 2)
    t = torch.tensor([1, 10, 100, 500, 1000])
    assert net(x, t).shape == (5, 2)
    y = torch.tensor([0, 1, 2, 3, 8])
    assert net(x, t, y).shape == (5, 2)
    # None means the null class; a shared t is embedded once and gives the same answer
    torch.testing.assert_close(net(x, t), net(x, t, torch.full((5,), 8)))
    same = torch.full((5,), 300)
    rows = torch.stack([net(x[i:i + 1], same[:1])[0] for i in range(5)])
    torch.testing.assert_close(net(x, same), rows)


def test_the_mlp_and_the_unet_run_through_the_same_sampler(tiny_model):
    """One sampler code path: samplers.sample drives the MLP on [N, 2] exactly as it drives the U-Net on images."""
    torch.manual_seed(0)
    net = EpsMLP(MLPConfig(hidden=16, blocks=1))
    model = LabModel(net, LINEAR)
    chain = make_chain(LINEAR, 20)
    recs = list(sample(model, chain, (50, 2), seed=4))
    assert len(recs) == 20 and recs[-1].x_prev.shape == (50, 2)
    # the same walk by hand from the chain's coefficient table and the shared step function
    gen = torch.Generator().manual_seed(4)
    x = torch.randn((50, 2), generator=gen)
    table = chain.coefficients("ddpm", "beta_tilde")
    with torch.inference_mode():
        for i in range(len(chain)):
            eps = net(x, torch.full((50,), int(chain.model_t[i])))
            z = torch.randn((50, 2), generator=gen) if i < len(chain) - 1 else None
            x, _, _ = ddpm_step(x, eps, table.row(i), z=z)
    torch.testing.assert_close(recs[-1].x_prev, x)
    img = run(tiny_model, make_chain(tiny_model.schedule, 3), (1, 1, 28, 28), seed=0, labels=[3], guidance=2.0,
              null_label=tiny_model.null_label)
    assert img.shape == (1, 1, 28, 28)


def test_guided_mlp_doubles_the_batch_once():
    net = EpsMLP(MLPConfig(hidden=16, blocks=1, num_classes=8))
    calls = []

    model = LabModel(net, LINEAR)

    def eps_fn(x, alpha_bar, labels):
        calls.append((x.shape[0], None if labels is None else labels.tolist()))
        return model(x, alpha_bar, labels)
    run(eps_fn, make_chain(LINEAR, 5), (7, 2), labels=torch.full((7,), 3), guidance=2.5, null_label=8, seed=0)
    assert len(calls) == 5 and all(n == 14 for n, _ in calls)
    assert calls[0][1] == [3] * 7 + [8] * 7


def test_lab_checkpoint_round_trip_and_clear_errors(tmp_path):
    net = EpsMLP(MLPConfig(hidden=16, blocks=1, num_classes=2))
    model = LabModel(net, LINEAR, ["a", "b"], "key:1", {"training": {"steps_done": 3}})
    save_lab_model(tmp_path / "m", model)
    back = load_lab_model(tmp_path / "m")
    assert back.class_names == ["a", "b"] and back.data_key == "key:1" and back.info["training"]["steps_done"] == 3
    x, t = torch.randn(4, 2), torch.tensor([1, 2, 3, 4])
    torch.testing.assert_close(back.net(x, t), net(x, t))
    with pytest.raises(LabCheckpointError, match="missing"):
        load_lab_model(tmp_path / "nothing")
    (tmp_path / "m" / "config.json").write_text('{"format": "ddpm-explainer/1"}')
    with pytest.raises(LabCheckpointError, match="not a 2D-lab config"):
        load_lab_model(tmp_path / "m")


def test_a_damaged_lab_checkpoint_says_damaged_not_missing(tmp_path, monkeypatch):
    """Truncated weights or a garbage config: the error, and the lab's message for a preset, say damaged."""
    net = EpsMLP(MLPConfig(hidden=16, blocks=1))
    save_lab_model(tmp_path / "m", LabModel(net, LINEAR))
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # a copy cut short
    with pytest.raises(LabCheckpointError, match="damaged") as err:
        load_lab_model(tmp_path / "m")
    assert not isinstance(err.value, LabCheckpointMissing)
    (tmp_path / "m" / "config.json").write_bytes(b"\x89PNG\r\n\x00 garbage")
    with pytest.raises(LabCheckpointError, match="damaged"):
        load_lab_model(tmp_path / "m")
    with pytest.raises(LabCheckpointMissing, match="missing"):
        load_lab_model(tmp_path / "nothing")
    name = "two moons"
    folder = tmp_path / "lab" / toy.slug(name)
    save_lab_model(folder, LabModel(net, LINEAR))
    (folder / "model.safetensors").write_bytes(b"not safetensors at all")
    monkeypatch.setattr(vl, "LAB_CHECKPOINTS", tmp_path / "lab")
    monkeypatch.setattr(vl, "_shipped", {})
    data = vl.lab_data(name)
    assert vl.network_for(data, None) == (None, "")
    assert "is damaged" in vl.no_network_message(data) and "is missing" not in vl.no_network_message(data)
    monkeypatch.setattr(vl, "LAB_CHECKPOINTS", tmp_path / "empty")
    monkeypatch.setattr(vl, "_shipped", {})
    assert vl.network_for(data, None) == (None, "") and "is missing" in vl.no_network_message(data)


def test_training_lowers_the_loss_and_is_seeded():
    data = toy.make_preset("two moons", 300, 0)
    cfg = LabTrainConfig(train_steps=120, batch_size=128, hidden=32, blocks=1, warmup=10, ema_start=20)
    ups = list(train_steps(data, cfg, report_every=20))
    assert ups[-1].model is not None and ups[-1].step == 120
    assert ups[-1].loss < ups[0].loss
    again = train(data, cfg)
    x, t = torch.randn(6, 2), torch.full((6,), 200)
    torch.testing.assert_close(again.net(x, t), ups[-1].model.net(x, t))
    assert again.data_key == data.key


def test_a_training_step_reports_l_simple_written_out():
    """One step's loss is L_simple (Ho et al. eq. 14) of the untrained network on the first batch: x_t by eq. 4 and
    the mean squared error of eps_hat, written out in numpy from the same seeded draws."""
    data = toy.make_preset("two moons", 300, 0)
    cfg = LabTrainConfig(train_steps=1, batch_size=64, hidden=16, blocks=1, seed=5)
    torch.manual_seed(cfg.seed)
    net = EpsMLP(cfg.mlp_config(0))
    gen = torch.Generator().manual_seed(cfg.seed)
    idx = torch.randint(0, 300, (64,), generator=gen)
    t = torch.randint(1, 1001, (64,), generator=gen)
    eps = torch.randn(64, 2, generator=gen).numpy().astype(np.float64)
    ab = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))[t.numpy() - 1][:, None]
    x_t = np.sqrt(ab) * data.points[idx.numpy()] + np.sqrt(1 - ab) * eps
    with torch.no_grad():
        eps_hat = net(torch.as_tensor(x_t, dtype=torch.float32), t).double().numpy()
    last = list(train_steps(data, cfg))[-1]
    assert last.loss == pytest.approx(((eps_hat - eps) ** 2).mean(), rel=1e-5)


def test_the_warm_up_leaves_nothing_to_load_for_the_first_training():
    """server.launch.serve runs lab_training.warm_up at start: after it, the first real training imports no more modules
    (torch's optimizers import torch._dynamo when the first is made, about 1.4 s), checked in a new process."""
    import subprocess
    import sys
    code = ("import sys, torch\n"
            "from explainer.model import toy\n"
            "from explainer.model.lab_training import LabTrainConfig, train, warm_up\n"
            "data = toy.make_preset('two moons', 200, 0)\n"
            "before = set(sys.modules)\n"
            "warm_up()\n"
            "warmed = set(sys.modules)\n"
            "train(data, LabTrainConfig(train_steps=3, batch_size=8))\n"
            "print(len(warmed - before), sorted(set(sys.modules) - warmed))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=str(Path(__file__).resolve().parent.parent))
    assert out.returncode == 0, out.stderr
    loaded_by_warm_up, loaded_later = out.stdout.split(" ", 1)
    assert loaded_later.strip() == "[]"


def test_a_time_budget_stops_training_with_the_learning_rate_decayed():
    from explainer.model.lab_training import schedule_step
    cfg = LabTrainConfig(train_steps=1000, max_seconds=10.0)
    assert schedule_step(100, 0.0, cfg) == 100 and schedule_step(100, 5.0, cfg) == 500
    assert schedule_step(10, 50.0, cfg) == 999 and schedule_step(10, 50.0, LabTrainConfig(train_steps=1000)) == 10
    data = toy.make_preset("rings", 200, 0)
    last = list(train_steps(data, LabTrainConfig(train_steps=100_000, batch_size=64, hidden=16, blocks=1,
                                                 max_seconds=0.5)))[-1]
    assert last.stopped_early and last.step < 100_000 and last.model.info["training"]["stopped_early"]


# ---------------------------------------------------------------- distances and data sets


def test_distances_of_simple_cases():
    a = np.random.default_rng(0).normal(size=(500, 2))
    assert qp.sliced_wasserstein(a, a) == pytest.approx(0.0, abs=1e-12)
    assert qp.energy_distance(a, a) == pytest.approx(0.0, abs=1e-12)
    one = a[:, :1]
    assert qp.sliced_wasserstein(one, one + 0.3) == pytest.approx(0.3)  # 1-D: W1 of a shift is the shift
    v = np.array([0.4, -0.3])  # 2-D: a shift by v gives |v| E|cos| = |v| 2 / pi over random directions
    assert qp.sliced_wasserstein(a, a + v, projections=4000) == pytest.approx(0.5 * 2 / np.pi, rel=0.03)
    assert qp.energy_distance(np.zeros((1, 2)), v[None]) == pytest.approx(2 * 0.5)
    b = a[:300] + 1.0  # different sizes
    assert qp.sliced_wasserstein(a, b) > 0.5
    assert qp.share_on_points(a[:50], a, 1e-6) == 1.0  # each sample is a point
    assert qp.share_on_points(a + 5.0, a, 1.0) == 0.0


def sliced_w1_written_out(a: np.ndarray, b: np.ndarray) -> float:
    """Sliced Wasserstein-1 over the measure's 256 seeded directions: the mean absolute difference of the sorted
    projections (sets of one size), or of their quantiles at (k + 1/2) / m, m the larger size."""
    u = np.random.default_rng(0).standard_normal((2, 256))
    u /= np.linalg.norm(u, axis=0)
    if len(a) == len(b):
        return float(np.abs(np.sort(a @ u, axis=0) - np.sort(b @ u, axis=0)).mean())
    q = (np.arange(max(len(a), len(b))) + 0.5) / max(len(a), len(b))
    return float(np.abs(np.quantile(a @ u, q, axis=0) - np.quantile(b @ u, q, axis=0)).mean())


def energy_written_out(a: np.ndarray, b: np.ndarray) -> float:
    """2 E|X - Y| - E|X - X'| - E|Y - Y'| over all pairs."""
    mean_dist = lambda p, q: np.linalg.norm(p[:, None] - q[None], axis=-1).mean()
    return 2 * mean_dist(a, b) - mean_dist(a, a) - mean_dist(b, b)


def share_within(x: np.ndarray, pts: np.ndarray, tol: float) -> float:
    """The share of x with a point of pts within tol, by brute force."""
    return float((np.linalg.norm(x[:, None] - pts[None], axis=-1).min(1) <= tol).mean())


def test_evaluate_measures_walks_against_fresh_data_written_out():
    """evaluate (the presets' records): seed s's walk against fresh sample 100 + s, fresh sample 200 + s against it
    the floor, means over the seeds; 'on a training point' within sqrt(1 - abar_1) = sqrt(beta_1) = 0.01."""
    d = toy.make_preset("8 Gaussians", 200, 0)
    exact = ExactDenoiser(d.points, LINEAR)
    got = qp.evaluate(exact, d, steps=10, n=200, seeds=2)
    xs = [run(exact, make_chain(LINEAR, 10), (200, 2), seed=10 + s).double().numpy() for s in range(2)]
    refs, others = [d.fresh(200, 100 + s) for s in range(2)], [d.fresh(200, 200 + s) for s in range(2)]
    sw = np.mean([sliced_w1_written_out(x, r) for x, r in zip(xs, refs)])
    sw_floor = np.mean([sliced_w1_written_out(o, r) for o, r in zip(others, refs)])
    ed = np.mean([energy_written_out(x, r) for x, r in zip(xs, refs)])
    ed_floor = np.mean([energy_written_out(o, r) for o, r in zip(others, refs)])
    training = np.mean([sliced_w1_written_out(d.points, r) for r in refs])
    assert got["sliced_wasserstein"] == pytest.approx(sw, abs=1e-5)
    assert got["sliced_wasserstein_floor"] == pytest.approx(sw_floor, abs=1e-5)
    assert got["sliced_wasserstein_ratio"] == pytest.approx(sw / sw_floor, abs=1e-3)
    assert got["energy_distance"] == pytest.approx(ed, abs=1e-6)
    assert got["energy_distance_ratio"] == pytest.approx(ed / ed_floor, abs=1e-3)
    assert got["on_training_point"] == pytest.approx(np.mean([share_within(x, d.points, 0.01) for x in xs]), abs=1e-4)
    assert got["fresh_on_training_point"] == pytest.approx(np.mean([share_within(o, d.points, 0.01) for o in others]),
                                                           abs=1e-4)
    assert got["on_training_point"] > 0.5 > got["fresh_on_training_point"]  # the exact denoiser memorises
    assert got["training_points_ratio"] == pytest.approx(training / sw_floor, abs=1e-3)
    with pytest.raises(ValueError, match="3 point sets for 2 references"):
        qp.measure(xs + xs[:1], qp.fresh(d, 200, [100, 101], [200, 201], 0.01))


@pytest.mark.parametrize("name", toy.PRESETS)
def test_presets_are_seeded_standardised_and_fresh(name):
    d = toy.make_preset(name, 2000, 0)
    assert d.points.shape == (2000, 2)
    np.testing.assert_array_equal(d.points, toy.make_preset(name, 2000, 0).points)
    assert not np.array_equal(d.points, toy.make_preset(name, 2000, 1).points)
    assert np.abs(d.points.mean(0)).max() < 0.1
    assert 0.9 < (d.points ** 2).mean() < 1.1  # unit variance on average
    f = d.fresh(2000, 5)
    assert not np.isin(f, d.points).any()
    assert qp.sliced_wasserstein(f, d.points) < 0.12  # same distribution
    if name == "8 Gaussians":
        assert d.class_names == list(toy.COMPASS) and set(d.labels.tolist()) == set(range(8))
        c = d.fresh(200, 1, label=2)
        _, idx = qp.nearest_distances(c, d.points)
        assert (d.labels[idx] == 2).mean() > 0.99
    else:
        assert d.labels is None and d.class_names == []


def test_strata_and_shares():
    rng = np.random.default_rng(0)
    u = toy.strata(rng, 500)
    np.testing.assert_array_equal(np.sort(np.floor(u * 500)), np.arange(500))  # one number in each slice
    assert not np.all(np.diff(u) > 0)  # in random order
    for n, w in ((2000, [1, 2, 3]), (7, [1] * 8), (1001, [0.2, 0.5, 0.3])):
        c = toy.shares(n, w)
        assert c.sum() == n and np.all(np.abs(c - n * np.asarray(w) / np.sum(w)) < 1)


def test_training_points_are_stratified_fresh_points_independent():
    """Each component gets its share of the training points; angles along the shape cover it evenly; fresh samples
    (the references of every distance) are independent draws, so their component counts vary."""
    g = toy.make_preset("8 Gaussians", 2000, 3)
    assert np.bincount(g.labels).tolist() == [250] * 8
    mean, scale = toy.standardiser(toy.GENERATORS["rings"](np.random.default_rng(12345), toy.REFERENCE_POINTS)[0])
    r = np.linalg.norm(toy.make_preset("rings", 2000, 3).points * scale + mean, axis=1)
    assert np.bincount(np.round(r).astype(int), minlength=4)[1:].tolist() == [333, 667, 1000]
    fresh_r = np.linalg.norm(toy.make_preset("rings").fresh(2000, 3) * scale + mean, axis=1)
    assert np.bincount(np.round(fresh_r).astype(int), minlength=4)[1:].tolist() != [333, 667, 1000]
    mean, scale = toy.standardiser(toy.GENERATORS["checkerboard"](np.random.default_rng(12345),
                                                                  toy.REFERENCE_POINTS)[0])
    cells = np.floor(toy.make_preset("checkerboard", 2000, 3).points * scale + mean + 2).astype(int)
    assert np.unique(cells[:, 0] * 4 + cells[:, 1], return_counts=True)[1].tolist() == [250] * 8
    for name in toy.PRESETS:  # representative: closer to fresh data than another fresh sample is
        d = toy.make_preset(name, 2000, 0)
        ref, other = d.fresh(2000, 100), d.fresh(2000, 200)
        assert qp.sliced_wasserstein(d.points, ref) < qp.sliced_wasserstein(other, ref) * 1.05, name
        assert d.key.endswith(":stratified")


def test_a_drawings_pixels_get_their_shares_of_the_points():
    """30 ink pixels, 4 apart in one row, and 100 points: each pixel gets 3 or 4 (an independent draw: 0 to 9)."""
    mask = np.zeros((5, 120), bool)
    mask[2, ::4] = True
    x = np.sort(toy.make_drawn(mask, 100, 5).points[:, 0])
    cuts = np.sort(np.argsort(np.diff(x))[-29:]) + 1  # the 29 gaps between pixels are the widest
    counts = np.diff(np.concatenate([[0], cuts, [100]]))
    assert len(counts) == 30 and set(counts.tolist()) == {3, 4}


def draw_square(size=200, transparent=True) -> np.ndarray:
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0) if transparent else (255, 255, 255, 255))
    ImageDraw.Draw(img).rectangle([50, 50, 150, 150], outline=(0, 0, 0, 255), width=4)
    return np.asarray(img)


@pytest.mark.parametrize("transparent", [True, False])
def test_a_drawing_becomes_points_on_its_strokes(transparent):
    img = draw_square(transparent=transparent)
    mask = toy.stroke_mask(img)
    assert 1400 < mask.sum() < 1700  # the square's outline only, not the transparent (black) background
    d = toy.make_drawn(img, 500, 0)
    assert d.points.shape == (500, 2) and d.labels is None
    assert 0.95 < (d.points ** 2).mean() < 1.05
    # every point lies on the outline: far from the centre, near the square's edge
    r = np.abs(d.points).max(1)
    assert r.min() > 0.8 * r.max()
    assert toy.make_drawn(img, 500, 0).key == d.key
    with pytest.raises(ValueError, match="draw a shape"):
        toy.make_drawn(np.full((50, 50, 4), 255, np.uint8))


# ---------------------------------------------------------------- views


def test_forward_view_picture_and_words():
    img, text = vl.forward_view("two moons", 150, "cosine", 0)
    assert img.shape == (vl.PANEL, vl.PANEL, 3) and img.dtype == np.uint8
    assert "t = 150" in text and "What to look at" in text
    img0, _ = vl.forward_view("two moons", 0, "linear", 0)
    img1, _ = vl.forward_view("two moons", 1000, "linear", 0)
    assert not np.array_equal(img0, img1)
    with pytest.raises(ValueError, match="t must be in 0..1000"):
        vl.forward_view("two moons", 1001)
    with pytest.raises(ValueError, match="data set must be one of"):
        vl.forward_view("spiral")
    pic, msg = vl.forward_view(vl.DRAWN, 10, sketch=None)  # nothing drawn yet: a message, not an error
    assert "nothing drawn yet" in msg and pic.shape[2] == 3


def test_the_noisy_cloud_uses_q_sample():
    d = vl.lab_data("rings")
    cloud = vl.noisy_cloud(d, 300, LINEAR, 7)
    eps = vl.seeded_normal(d.points.shape, 7).double().numpy()
    ab = LINEAR.alpha_bars[299]
    np.testing.assert_allclose(cloud, np.sqrt(ab) * d.points + np.sqrt(1 - ab) * eps, rtol=1e-12)


def tiny_trained(dataset="8 Gaussians", steps=60) -> LabModel:
    ups = list(vl.train(dataset, steps, 0))
    assert ups[-1].model is not None and "Trained on" in ups[-1].status
    return ups[-1].model


def test_field_view_with_and_without_a_network():
    img, text = vl.field_view(vl.DRAWN, 50, sketch={"composite": draw_square(), "layers": [], "background": None})
    assert "No network has learned this drawing" in text
    model = tiny_trained()
    img, text = vl.field_view("8 Gaussians", 200, "linear", "N", 2.0, model)
    assert img.shape == (vl.PANEL, 2 * vl.PANEL + 8, 3)
    assert "trained here" in text and "Class N with guidance w = 2" in text and "loss" in text
    _, text0 = vl.field_view("8 Gaussians", 0, trained=model)
    assert "shown at t = 1" in text0
    with pytest.raises(ValueError, match="has no classes"):
        vl.field_view("two moons", 100, cls="N")


def test_the_lab_takes_every_tabs_guidance_range():
    """Guidance w in 0..10 in the field and the walk, as on the reverse and noise tabs; more is refused, saying so."""
    img, text = vl.field_view("8 Gaussians", 100, "linear", "N", 10.0)
    assert img.shape == (vl.PANEL, 2 * vl.PANEL + 8, 3) and "guidance w = 10" in text
    for bad in (lambda: vl.field_view("8 Gaussians", 100, "linear", "N", 10.5),
                lambda: next(vl.walk("8 Gaussians", cls="N", guidance=10.5))):
        with pytest.raises(ValueError, match="guidance scale must be in 0.0..10.0: 10.5 is greater than the maximum"):
            bad()


def test_walk_streams_records_and_measures():
    model = tiny_trained()
    ups = list(vl.walk("8 Gaussians", "DDPM", 20, 0.0, "training", 300, "unconditional", 1.0, 1, model))
    assert ups[0].picture is not None and not ups[0].finished
    last, end = ups[-1], ups[-2]  # the end picture comes first, then the measured walk
    assert end.picture.shape[1] == 2 * vl.PANEL + 8 and "Measuring" in end.status and end.step == 20
    assert last.finished and last.walk is not None and last.picture is end.picture
    rec = last.walk
    assert rec.names == ["network", "exact"] and rec.frames[0] == 0 and rec.frames[-1] == 20
    assert rec.paths["network"].shape == (21, vl.TRACKED, 2)
    # the same start, and the DDIM companions are smooth: no fresh noise, so both denoisers' first step agree in x_T
    np.testing.assert_array_equal(rec.pos["network"][0], rec.pos["exact"][0])
    assert "sliced Wasserstein" in rec.metrics and "plain noise" in rec.metrics and "Where they landed" in rec.metrics
    # the exact denoiser memorises: most of its particles land on a training point, plain noise does not
    d = vl.lab_data("8 Gaussians")
    exact_share = qp.share_on_points(rec.final["exact"], d.points, 0.01)
    assert exact_share > 0.6 and qp.share_on_points(rec.final["noise"], d.points, 0.01) < 0.2
    pic, text, t, schedule = vl.walk_frame(rec, 3)
    assert pic.shape == end.picture.shape and t == rec.ts[3] and schedule == "linear" and "Step" in text
    with pytest.raises(ValueError, match="frame must be in"):
        vl.walk_frame(rec, rec.done + 1)
    with pytest.raises(ValueError, match="press 'Run'"):
        vl.walk_frame(None, 0)


def test_the_side_by_side_walk_equals_each_sampler_run_alone():
    """Two threads sharing the exact denoiser's chunks, and the next exact step computed while a picture is drawn:
    the particles are those of samplers.run for each denoiser alone, from the walk's x_T and noise."""
    model = tiny_trained()
    n, steps, seed = 400, 15, 3
    rec = list(vl.walk("8 Gaussians", "DDPM", steps, 0.0, "training", n, "unconditional", 1.0, seed, model))[-1].walk
    chain = make_chain(model.schedule, steps)
    x_T = vl.seeded_normal((n, 2), seed)
    exact = vl.exact_for(vl.lab_data("8 Gaussians"))
    for name, fn in (("network", model), ("exact", exact)):
        alone = run(fn, chain, (n, 2), x_T=x_T, generator=torch.Generator().manual_seed(seed + 1),
                    null_label=model.null_label)
        np.testing.assert_array_equal(rec.final[name], alone.double().numpy())


def test_the_exact_walk_ahead_stops_with_the_viewer_and_reports_errors(monkeypatch):
    """The exact walk runs ahead in its own thread: closing the stream stops it within a step or two, and an error in
    one of its steps reaches the viewer instead of leaving the walk waiting."""
    calls = []
    advance = vl._advance

    def counted(run, other):
        calls.append(1)
        return advance(run, other)
    monkeypatch.setattr(vl, "_advance", counted)
    model = tiny_trained()
    stream = vl.walk("8 Gaussians", "DDPM", 400, 0.0, "training", 300, "unconditional", 1.0, 0, model)
    while next(stream).step < 2:
        pass
    stream.close()  # the viewer left: returns once the exact thread has stopped
    done = len(calls)
    assert done < 200  # the network's and the exact walk's steps so far, far from 2 x 400
    time.sleep(0.2)
    assert len(calls) == done  # nothing runs on after the close

    call = ExactDenoiser.__call__

    def broken(den, x_t, alpha_bar, labels=None, share=None):
        if alpha_bar > LINEAR.alpha_bars[499]:  # past t = 500, half way
            raise RuntimeError("the exact step failed")
        return call(den, x_t, alpha_bar, labels, share)
    monkeypatch.setattr(ExactDenoiser, "__call__", broken)
    with pytest.raises(RuntimeError, match="the exact step failed"):
        list(vl.walk("8 Gaussians", "DDPM", 20, 0.0, "training", 300, "unconditional", 1.0, 0, model))


def test_metrics_show_what_the_training_points_themselves_score():
    """The table's rows, written out: the training points' and plain noise's mean distance to the same fresh samples
    over the floor, the share within sqrt(1 - abar_1) = sqrt(beta_1) = 0.01 of a training point, fresh data's too."""
    model = tiny_trained()
    rec = list(vl.walk("two moons", "DDPM", 10, 0.0, "training", 200, "unconditional", 1.0, 2, model))[-1].walk
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in rec.metrics.splitlines() if line.startswith("| ")}
    d = vl.lab_data("two moons")
    refs = [d.fresh(200, 1_000_003 + j) for j in range(vl.REFERENCES)]
    others = [d.fresh(200, 2_000_003 + j) for j in range(vl.REFERENCES)]
    floor = np.mean([sliced_w1_written_out(o, r) for o, r in zip(others, refs)])
    for name, x, share in (("the training points themselves", d.points, 1.0),
                           ("plain noise x_T", rec.final["noise"], share_within(rec.final["noise"], d.points, 0.01))):
        sw = np.mean([sliced_w1_written_out(x, r) for r in refs])
        cells = rows[name]
        assert float(cells[0]) == pytest.approx(sw, abs=1e-4) and float(cells[1]) == pytest.approx(sw / floor, abs=0.01)
        assert cells[2] == f"{100 * share:.1f} %"
    fresh_share = np.mean([share_within(o, d.points, 0.01) for o in others])
    assert rows["fresh data (the floor)"][0].startswith(f"{floor:.4f}")
    assert rows["fresh data (the floor)"][2] == f"{100 * fresh_share:.1f} %"
    assert "a stratified one" in rec.metrics and "scores what they score" in rec.metrics


def test_guided_walk_reports_the_class_and_its_spread():
    model = tiny_trained()
    last = list(vl.walk("8 Gaussians", "DDIM", 15, 0.0, "other", 200, "E", 4.0, 0, model))[-1]
    assert "cosine" in last.walk.settings and "class E, guidance w = 4" in last.walk.settings
    assert "in class E" in last.walk.metrics and "spread" in last.walk.metrics


def test_walk_without_a_network_runs_the_exact_denoiser_alone():
    sketch = {"composite": draw_square(), "layers": [], "background": None}
    last = list(vl.walk(vl.DRAWN, "DDPM", 10, 0.0, "training", 200, sketch=sketch))[-1]
    assert last.walk.names == ["exact"] and "network" not in last.walk.final
    assert "No network has learned this drawing" in last.status
    with pytest.raises(ValueError, match="nothing drawn yet"):
        next(vl.walk(vl.DRAWN, sketch=None))
    with pytest.raises(ValueError, match="number of particles must be in"):
        next(vl.walk("two moons", particles=10))


def test_training_a_drawing_gives_the_session_its_network():
    sketch = {"composite": draw_square(), "layers": [], "background": None}
    ups = list(vl.train(vl.DRAWN, 50, 0, sketch))
    model = ups[-1].model
    data = vl.lab_data(vl.DRAWN, sketch)
    assert model.data_key == data.key and model.info["data"]["points_sha1"] == toy.points_digest(data.points)
    assert toy.points_digest(data.points * (1 + 4e-16)) == toy.points_digest(data.points)  # last-digit differences
    assert toy.points_digest(data.points[::-1]) != toy.points_digest(data.points)
    net, source = vl.network_for(data, model)
    assert net is model and "trained here" in source
    assert vl.network_for(vl.lab_data("two moons"), model)[0] is not model  # another data set: not this network
    with pytest.raises(ValueError, match="training steps must be in"):
        next(vl.train("two moons", 5))


def test_training_stops_at_the_sliders_maximum():
    """The backend takes what the slider offers, 50..10,000 steps, and says so for more."""
    with pytest.raises(ValueError, match=r"training steps must be in 50\.\.10000: 10001 is greater than the maximum "
                                         r"10000"):
        next(vl.train("two moons", 10_001))
    with pytest.raises(ValueError, match="greater than the maximum 10000"):
        next(vl.train("two moons", 20_000))
    assert next(vl.train("two moons", 10_000)).total == 10_000  # the maximum itself starts


def test_shipped_presets_load_when_present():
    for name in toy.PRESETS:
        model = vl.shipped_model(name)
        if model is None:
            continue
        assert model.data_key == vl.lab_data(name).key
        assert model.class_names == vl.lab_data(name).class_names
        # the points it learned are the points the code makes now (a change to a generator must retrain it)
        assert model.info["data"]["points_sha1"] == toy.points_digest(vl.lab_data(name).points), name
