"""The app's backend views, called directly (no gradio): math against independent formulas, wiring, errors."""
from __future__ import annotations

import importlib.util
import math
import os
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from conftest import ROOT
from explainer.views import arch as va
from explainer.views import decided as vdc
from explainer.views import forward as vf
from explainer.views import histogram as vh
from explainer.views import equations as vm
from explainer.views import noise as vn
from explainer.views import reverse as vr
from explainer.views import step as vs
from explainer.views import walk as vw
from explainer.views import model_slot as views
from explainer.diffusion.respacing import make_chain
from explainer.render.display import eps_to_uint8
from explainer.diffusion.samplers import run, sample
from explainer.diffusion.schedules import make_schedule

from explainer.paths import ASSETS  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


PHOTO = str(ASSETS / "astronaut.jpg")
DIGIT = str(ASSETS / "digit_3.png")


# ---- independent references: the DDPM formulas written out in numpy ----

def ref_alpha_bar(name: str, t: int, T: int = 1000) -> float:
    if t == 0:
        return 1.0
    if name == "linear":  # Ho et al. 2020: beta linear in [1e-4, 0.02]
        return float(np.prod(1.0 - np.linspace(1e-4, 0.02, T)[:t]))
    f = lambda u: np.cos((u / T + 0.008) / 1.008 * np.pi / 2) ** 2  # Nichol & Dhariwal eq. 17
    betas = np.minimum(1 - f(np.arange(1, T + 1)) / f(np.arange(0, T)), 0.999)
    return float(np.prod(1.0 - betas[:t]))


def ref_x0(path: str) -> np.ndarray:
    """The photo as [H,W,3] floats in [-1, 1], loaded with plain PIL (it is already 256 px)."""
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 127.5 - 1.0


def ref_eps(shape_hwc, seed: int) -> np.ndarray:
    h, w, c = shape_hwc
    return torch.randn((1, c, h, w), generator=torch.Generator().manual_seed(seed))[0].permute(1, 2, 0).double().numpy()


def to_u8(x: np.ndarray) -> np.ndarray:
    return np.round((np.clip(x, -1, 1) + 1) * 127.5).astype(np.uint8)


# ---- forward tab ----

@pytest.mark.parametrize("schedule,t", [("linear", 0), ("linear", 1), ("linear", 500), ("cosine", 250),
                                        ("cosine", 1000)])
def test_forward_noise_is_the_closed_form(schedule, t):
    img, text = vf.forward_noise(PHOTO, t, schedule, 7)
    x0 = ref_x0(PHOTO)
    ab = ref_alpha_bar(schedule, t)
    expected = to_u8(np.sqrt(ab) * x0 + np.sqrt(1 - ab) * ref_eps(x0.shape, 7))
    assert img.shape == expected.shape == (256, 256, 3)
    assert np.abs(img.astype(int) - expected).max() <= 1
    assert f"t = {t}" in text


def test_forward_noise_numbers_table():
    _, text = vf.forward_noise(PHOTO, 500, "cosine", 0)
    ab_lin, ab_cos = ref_alpha_bar("linear", 500), ref_alpha_bar("cosine", 500)
    beta_500 = 1e-4 + (0.02 - 1e-4) * 499 / 999
    for value in (ab_lin, ab_cos, np.sqrt(ab_cos), 1 - ab_lin, ab_cos / (1 - ab_cos), beta_500):
        assert f"{value:.6g}" in text
    assert "**cosine** (shown)" in text


def test_forward_caches_the_image_and_noise():
    a = vf.prepare_image(PHOTO)
    assert vf.prepare_image(PHOTO) is a
    assert vf.noise_like(a, 3) is vf.noise_like(a, 3)
    assert not np.array_equal(vf.noise_like(a, 3), vf.noise_like(a, 4))
    arr = np.zeros((10, 12, 3), dtype=np.uint8)
    assert vf.prepare_image(arr) is vf.prepare_image(arr.copy())  # arrays are keyed by content


def count_fresh_work(monkeypatch) -> list[str]:
    """Record every image decode, noise draw and matplotlib render from now on: the slow parts of a slider move."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from explainer.render import images

    done = []
    for owner, name in ((images, "load_image"), (vf, "seeded_normal"), (FigureCanvasAgg, "draw")):
        def counted(*args, _real=getattr(owner, name), _name=name, **kwargs):
            done.append(_name)
            return _real(*args, **kwargs)
        monkeypatch.setattr(owner, name, counted)
    return done


def test_moving_t_reuses_the_image_and_the_noise(monkeypatch):
    """What keeps the slider live at 256 px, checked by the work done, not by the time taken (benchmarks/app_latency.py
    times it): after the first picture, a move of t is one closed-form step."""
    vf.forward_noise(PHOTO, 10, "linear", 0)
    work = count_fresh_work(monkeypatch)
    for t in range(100, 1000, 45):
        vf.forward_noise(PHOTO, t, "linear", 0)
    assert work == []
    vf.forward_noise(PHOTO, 10, "linear", 1_234_567)  # a new seed: new noise, once
    assert work == ["seeded_normal"]


@pytest.mark.parametrize("kwargs,words", [
    (dict(t=1001), "t must be in 0..1000"), (dict(t=-1), "t must be"), (dict(t=2.5), "whole number"),
    (dict(schedule="quadratic"), "schedule must be one of"), (dict(seed=-3), "seed"), (dict(t="x"), "number"),
])
def test_forward_noise_rejects_bad_values(kwargs, words):
    args = dict(image=PHOTO, t=10, schedule="linear", seed=0) | kwargs
    with pytest.raises(ValueError, match=words):
        vf.forward_noise(**args)


def test_forward_noise_bad_upload(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    with pytest.raises(ValueError, match="not an image"):
        vf.forward_noise(str(bad), 10, "linear", 0)


def test_schedule_curves_figure_has_both_schedules_and_a_cursor():
    fig = vf.schedule_curves(321, "cosine")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    labels = [ln.get_label() for ln in ax.get_lines()]
    assert sum("linear" in lab for lab in labels) == 2 and sum("cosine" in lab for lab in labels) == 2
    cursor = [ln for ln in ax.get_lines() if list(ln.get_xdata()) == [321, 321]]
    assert cursor, "no cursor line at t"
    mean = next(ln for ln in ax.get_lines() if ln.get_label() == "cosine: mean coef. √ᾱ_t")
    assert mean.get_ydata()[321] == pytest.approx(np.sqrt(ref_alpha_bar("cosine", 321)))


@pytest.mark.parametrize("make", [lambda t: vf.schedule_curves_image(t, "cosine"), vf.compare_curves_image])
def test_fast_curve_pictures_move_only_the_cursor(make):
    a, b = make(200), make(800)
    assert a.dtype == np.uint8 and a.shape == b.shape and a.shape[1] >= 500
    changed = np.flatnonzero((a != b).any(axis=(0, 2)))
    plot = vf._schedule_plot("cosine") if a.shape == vf._schedule_plot("cosine").base.shape else vf._compare_plot()
    cursors = [plot.column(i, t) for i in range(len(plot.axes)) for t in (200, 800)]
    assert all(min(abs(c - x) for x in cursors) <= 4 for c in changed)  # only around the two cursors
    for i in range(len(plot.axes)):
        top, bottom = plot.axes[i]["rows"]
        col = a[top + 2:bottom - 2, plot.column(i, 200)]
        assert (col == 0).all(axis=1).mean() > 0.9  # a black cursor line at t = 200 (markers sit on it)


def test_fast_curve_markers_sit_on_the_curves():
    plot = vf._schedule_plot("linear")
    img = vf.schedule_curves_image(600, "linear")
    ab = ref_alpha_bar("linear", 600)
    x = plot.column(0, 600)
    for value in (np.sqrt(ab), 1 - ab):
        y = plot.row(0, value)
        assert tuple(img[y, x + 3]) == vf.schedule_rgb("linear")  # the marker, beside the cursor
    assert plot.column(0, 0) < plot.column(0, 1000)


def test_forward_strips():
    closed, chain = vf.forward_strips(PHOTO, "linear", 0)
    assert closed.ndim == chain.ndim == 3
    # the first frame of both strips is x_0 itself (96 px thumbnail), the chain's last is noise
    thumb = np.asarray(Image.open(PHOTO).convert("RGB").resize((96, 96), Image.Resampling.LANCZOS), dtype=int)
    assert np.abs(closed[:96, :96].astype(int) - thumb).mean() < 3
    assert np.abs(chain[:96, :96].astype(int) - thumb).mean() < 3
    last = chain[:96, -96:].astype(float)
    corr = np.corrcoef(last.ravel(), thumb.ravel())[0, 1]
    assert abs(corr) < 0.1  # 1000 steps of the chain leave (almost) no trace of the image
    width_of_10 = 10 * 96 + 9 * 4
    assert closed.shape[1] == width_of_10 and chain.shape[1] == 11 * 96 + 10 * 4


# ---- forward tab: the pixel histogram of x_t ----

def ref_normal_cdf(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))


@pytest.mark.parametrize("schedule,t,seed", [("linear", 0, 0), ("linear", 40, 3), ("cosine", 600, 1),
                                             ("linear", 1000, 2)])
def test_pixel_histogram_bars_count_the_pixels_of_x_t(schedule, t, seed):
    h = vh.pixel_histogram(PHOTO, t, schedule, seed)
    x0 = ref_x0(PHOTO)
    ab = ref_alpha_bar(schedule, t)
    x_t = np.sqrt(ab) * x0 + np.sqrt(1 - ab) * ref_eps(x0.shape, seed)  # unclipped: the real values
    edges = h["edges"]
    assert edges[0] < -3.9 and edges[-1] > 3.9 and np.allclose(np.diff(edges), 26 / 255)  # 13 levels per bin
    counts, _ = np.histogram(x_t, bins=edges)
    assert np.abs(h["observed"] * x_t.size * np.diff(edges) - counts).max() <= 2  # float32 vs 64 at an edge
    assert h["mean"] == pytest.approx(x_t.mean(), abs=1e-4) and h["std"] == pytest.approx(x_t.std(), abs=1e-4)
    assert h["alpha_bar"] == pytest.approx(ab, rel=1e-9)


def test_pixel_histogram_expectation_against_a_per_pixel_sum(tmp_path):
    """The line: sum over pixels of N(sqrt(ab) x0_i, 1 - ab)'s mass per bin, written out pixel by pixel."""
    small = tmp_path / "small.png"
    Image.open(PHOTO).convert("RGB").resize((12, 10)).save(small)
    x0 = ref_x0(str(small)).ravel()
    for schedule, t in (("linear", 1), ("linear", 120), ("cosine", 700)):
        ab = ref_alpha_bar(schedule, t)
        h = vh.pixel_histogram(str(small), t, schedule, 0)
        edges = h["edges"]
        mass = np.zeros(len(edges) - 1)
        for v in x0:
            mass += np.diff(ref_normal_cdf((edges - np.sqrt(ab) * v) / np.sqrt(1 - ab)))
        expected = mass / x0.size / np.diff(edges)
        assert np.abs(h["expected"] - expected).max() < 1e-9
        # the moments of the mixture: sqrt(ab) mean(x0) and ab var(x0) + 1 - ab
        assert h["expected_mean"] == pytest.approx(np.sqrt(ab) * x0.mean(), abs=1e-12)
        assert h["expected_std"] == pytest.approx(np.sqrt(ab * x0.var() + 1 - ab), abs=1e-12)


def test_pixel_histogram_expectation_is_what_many_draws_average_to(tmp_path):
    small = tmp_path / "digit.png"
    Image.open(DIGIT).save(small)
    draws = [vh.pixel_histogram(str(small), 150, "cosine", seed)["observed"] for seed in range(300)]
    expected = vh.pixel_histogram(str(small), 150, "cosine", 0)["expected"]
    # 300 draws of 28 x 28 x 3 pixels: the standard error of a bin's density is below 0.01
    assert np.abs(np.mean(draws, axis=0) - expected).max() < 0.03


def test_pixel_histogram_ends_at_pure_noise_and_starts_at_x0():
    end = vh.pixel_histogram(PHOTO, 1000, "linear", 0)
    edges = end["edges"]
    normal = np.diff(ref_normal_cdf(edges)) / np.diff(edges)
    assert np.abs(end["expected"] - normal).max() < 2e-3  # abar_T = 4e-5: N(0, 1) up to the image's trace
    assert abs(end["mean"]) < 0.01 and abs(end["std"] - 1) < 0.01
    start = vh.pixel_histogram(PHOTO, 0, "linear", 0)
    np.testing.assert_allclose(start["observed"], start["expected"], atol=1e-12)  # t = 0: the line is x_0's histogram
    assert start["outside"] == 0 and start["expected"] @ np.diff(start["edges"]) == pytest.approx(1.0)


def test_pixel_histogram_picture_follows_t():
    views_at = {t: vh.pixel_histogram_view(PHOTO, t, "linear", 0) for t in (0, 300, 1000)}
    pics = {t: pic for t, (pic, _) in views_at.items()}
    h = vh.pixel_histogram(PHOTO, 1000, "linear", 0)
    assert "t = 1000" in views_at[1000][1] and f"std {h['std']:.3f}" in views_at[1000][1]
    assert f"= {h['expected_std']:.3f}" in views_at[1000][1] and "outside" in views_at[1000][1]  # N(0,1) tails
    assert "outside" not in views_at[0][1]
    assert all(p.dtype == np.uint8 and p.shape == pics[0].shape and p.shape[1] >= 500 for p in pics.values())
    assert not np.array_equal(pics[0], pics[300]) and not np.array_equal(pics[300], pics[1000])
    plot = vh._plot("linear")
    bar = tuple(int(c) for c in plot.bar_rgb)
    rows = slice(*plot.rows)
    zero_col = plot.plot.column(0, 0.0)  # the middle of the bin around 0
    far_col = plot.plot.column(0, 3.55)  # a bin that pure noise barely reaches
    at_T = pics[1000][rows]
    assert (at_T[:, zero_col] == bar).all(axis=-1).sum() > 0.3 * (plot.rows[1] - plot.rows[0])  # about 0.4 / 1.0
    assert (at_T[:, far_col] == bar).all(axis=-1).sum() < 3
    assert (pics[0][rows][:, zero_col] == bar).all(axis=-1).sum() > 0  # the photo has pixels near 0 too


def test_pixel_histogram_checks_its_inputs():
    with pytest.raises(ValueError, match="t must be in 0..1000"):
        vh.pixel_histogram_view(PHOTO, 1001, "linear", 0)
    with pytest.raises(ValueError, match="schedule"):
        vh.pixel_histogram_view(PHOTO, 10, "sigmoid", 0)


def test_moving_t_redraws_the_histogram_without_matplotlib(monkeypatch):
    """The histogram's axes are rendered once per schedule; a move of t only paints bars on a copy of them."""
    vh.pixel_histogram_view(PHOTO, 1, "linear", 0)
    work = count_fresh_work(monkeypatch)
    for t in range(2, 42):
        vh.pixel_histogram_view(PHOTO, t, "linear", 0)
    assert work == []


def test_compare_uses_the_same_noise_for_both_schedules():
    t = 300
    lin, cos, text = vf.compare_schedules(PHOTO, t, 5)
    x0 = ref_x0(PHOTO)
    eps = {}
    for name, img in (("linear", lin), ("cosine", cos)):
        ab = ref_alpha_bar(name, t)
        x = img.astype(float) / 127.5 - 1
        ok = (img > 0) & (img < 255)  # not clipped
        eps[name] = np.where(ok, (x - np.sqrt(ab) * x0) / np.sqrt(1 - ab), np.nan)
    both = ~np.isnan(eps["linear"]) & ~np.isnan(eps["cosine"])
    assert np.abs(eps["linear"][both] - eps["cosine"][both]).max() < 0.03
    assert np.abs(eps["linear"][both] - ref_eps(x0.shape, 5)[both]).max() < 0.03


def test_compare_counts_steps_near_pure_noise():
    _, _, text = vf.compare_schedules(PHOTO, 10, 0)
    for name in ("linear", "cosine"):
        n = sum(ref_alpha_bar(name, t) < 0.01 for t in range(1, 1001))
        assert f"**{name}**: {n} of 1000 steps" in text
    assert "327 of 1000" in text and "65 of 1000" in text  # the article's observation, in numbers


def test_compare_curves():
    fig = vf.compare_curves(700)
    ax1, ax2 = fig.axes
    lin = next(ln for ln in ax2.get_lines() if ln.get_label() == "linear")
    ab = ref_alpha_bar("linear", 700)
    assert lin.get_ydata()[699] == pytest.approx(np.log(ab / (1 - ab)))
    assert any(list(ln.get_xdata()) == [700, 700] for ln in ax1.get_lines())


# ---- model slot ----

def test_checkpoint_path_honours_the_environment(monkeypatch, tiny_ckpt):
    monkeypatch.setenv(views.CHECKPOINT_ENV, str(tiny_ckpt))
    assert views.checkpoint_path() == str(tiny_ckpt)
    slot = views.load_slot(device="cpu")
    assert slot.ok and slot.require().num_classes == 10
    monkeypatch.delenv(views.CHECKPOINT_ENV)
    assert views.checkpoint_path().endswith("checkpoints/mnist-ddpm")


def test_missing_checkpoint_says_what_and_how(tmp_path):
    slot = views.load_slot(str(tmp_path / "nothing"))
    assert not slot.ok
    with pytest.raises(views.ModelUnavailable) as e:
        slot.require()
    msg = str(e.value)
    assert "not found" in msg and "python -m explainer train" in msg and views.CHECKPOINT_ENV in msg
    assert "unavailable" in slot.notice()


def test_damaged_checkpoint(tmp_path, tiny_ckpt):
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(tiny_ckpt, bad)
    w = bad / "model.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    slot = views.load_slot(str(bad))
    assert not slot.ok and "cannot be read" in slot.error


def test_every_network_call_goes_through_eps_fn_for(monkeypatch, tiny_model):
    calls = []

    def counting(model):
        def eps(x, alpha_bar, labels=None):
            calls.append(x.shape[0])
            return model.eps(x, alpha_bar, labels)
        return eps

    assert views.eps_fn_for(tiny_model) == tiny_model.eps
    for mod in (vr, vn):
        monkeypatch.setattr(mod, "eps_fn_for", counting)
    list(vr.reverse_walk(tiny_model, "3", 2.0, "DDIM", 12))
    assert len(calls) == 12 and set(calls) == {2}  # guidance: cond + uncond in ONE batched call per step
    calls.clear()
    vn.noise_removal(tiny_model, "real digit", DIGIT, "unconditional", 1.0, 50, 0)
    assert calls == [50]  # all 50 timesteps in ONE batched call
    calls.clear()
    vn.noise_removal(tiny_model, "real digit", DIGIT, "7", 3.0, 50, 0)
    assert calls == [100]


def _blocked_build(monkeypatch, result):
    """Replace the fast-path build by one that waits for ``go`` and then returns or raises ``result``."""
    import threading
    go, seen = threading.Event(), {}

    def export(model):
        seen["export_nice"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    def build(model, **kwargs):
        seen["kwargs"] = kwargs
        go.wait(30)
        if isinstance(result, Exception):
            raise result
        return result(model)
    monkeypatch.setattr(views, "export_onnx", export)
    monkeypatch.setattr(views, "best_eps_fn", build)
    return go, seen


def test_eps_fn_for_is_eager_until_the_fast_path_is_ready(monkeypatch, tiny_ckpt):
    from explainer.accel.fast import FastEps
    go, seen = _blocked_build(monkeypatch, lambda m: FastEps(m.eps, "a fast stand-in", "onnx", serialize=False))
    model = views.load_slot(str(tiny_ckpt), device="cpu", fast=True).require()
    state = views.fast_path(model)
    assert not state.ready and views.eps_fn_for(model) == model.eps  # start-up did not wait for the build
    assert "being prepared" in views.network_path(model)
    first = next(vr.reverse_walk(model, "3", 2.0, "DDIM", 12))
    assert "Network: eager PyTorch fp32 on cpu (a faster path is being prepared)." in first.status
    go.set()
    assert state.wait(30)
    assert views.eps_fn_for(model) is state.fn and views.network_path(model) == "a fast stand-in"
    assert seen["kwargs"] == {"threads": torch.get_num_threads()}
    if hasattr(os, "getpriority"):  # the ONNX export ran in a thread of lower priority
        assert seen["export_nice"] > os.getpriority(os.PRIO_PROCESS, 0) or seen["export_nice"] == 19
    assert views.start_fast_path(model) is state  # one build per model
    last = list(vr.reverse_walk(model, "3", 2.0, "DDIM", 12))[-1]
    assert last.status.endswith("Network: a fast stand-in.")


def test_a_failed_fast_path_build_keeps_eager(monkeypatch, tiny_ckpt):
    go, _ = _blocked_build(monkeypatch, RuntimeError("exporter exploded"))
    go.set()
    model = views.load_slot(str(tiny_ckpt), device="cpu", fast=True).require()
    assert not views.fast_path(model).wait(30)
    assert views.eps_fn_for(model) == model.eps
    assert views.network_path(model) == "eager PyTorch fp32 on cpu (no fast path: RuntimeError: exporter exploded)"


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="the export runs only for onnxruntime")
def test_a_failed_low_priority_export_is_reported_and_the_build_kept_on_the_model(monkeypatch, tiny_ckpt, capsys):
    from explainer.accel.fast import FastEps
    go, _ = _blocked_build(monkeypatch, lambda m: FastEps(m.eps, "a fast stand-in", "onnx", serialize=False))

    def export(model):
        raise OSError("no space left on device")
    monkeypatch.setattr(views, "export_onnx", export)
    go.set()
    model = views.load_slot(str(tiny_ckpt), device="cpu", fast=True).require()
    state = views.fast_path(model)
    assert state.wait(30) and model.fast_build is state  # a declared field of DiffusionModel
    assert state.export_error == "OSError: no space left on device"
    assert "no space left on device" in capsys.readouterr().err


def test_fast_path_falling_back_to_eager_keeps_plain_model_eps(monkeypatch, tiny_ckpt):
    from explainer.accel.fast import FastEps

    def eager(m):
        fn = FastEps(m.eps, "eager torch fp32 on cpu (skipped onnx: no onnxruntime)", "eager")
        fn.skipped = ["onnx: no onnxruntime", "torchscript: trace failed"]
        return fn
    go, _ = _blocked_build(monkeypatch, eager)
    go.set()
    model = views.load_slot(str(tiny_ckpt), device="cpu", fast=True).require()
    assert not views.fast_path(model).wait(30) and views.eps_fn_for(model) == model.eps
    assert "no fast path: onnx: no onnxruntime; torchscript: trace failed" in views.network_path(model)


def test_fast_path_env_switch(monkeypatch, tiny_ckpt):
    for value, on in (("0", False), ("off", False), ("false", False), ("1", True), ("", True)):
        monkeypatch.setenv(views.FAST_ENV, value)
        assert views.fast_path_enabled() is on
    monkeypatch.setenv(views.FAST_ENV, "0")
    model = views.load_slot(str(tiny_ckpt), device="cpu").require()
    assert views.fast_path(model) is None and views.network_path(model) == "eager PyTorch fp32 on cpu"


# ---- reverse tab ----

def test_reverse_walk_matches_the_sampler(tiny_model):
    updates = list(vr.reverse_walk(tiny_model, "5", 2.0, "DDPM", 15, "training", 3))
    assert updates[-1].finished and not any(u.finished for u in updates[:-1])
    walk = updates[-1].walks[0]
    assert len(walk.frames) == 16 and walk.ts[0] == 1000 and walk.ts[-1] == 0
    # independent path: the backend sampler from the seed alone (x_T first, then every z from the same stream)
    x0 = run(tiny_model.eps, make_chain(tiny_model.schedule, 15), (1, 1, 28, 28), method="ddpm",
             labels=torch.tensor([5]), guidance=2.0, null_label=10, seed=3)
    x_T = torch.randn((1, 1, 28, 28), generator=torch.Generator().manual_seed(3))
    assert np.abs(walk.frames[-1].astype(int) - to_u8(x0[0, 0].numpy())).max() <= 1
    assert (walk.frames[0] == to_u8(x_T[0, 0].numpy())).all()
    # no step's fresh noise repeats x_T (a generator seeded again for z would make the first z equal x_T)
    assert not any(np.array_equal(p.z, walk.steps[0].z) for p in walk.steps[1:] if p.z is not None)
    first_z = vs.record_step(next(sample(tiny_model.eps, make_chain(tiny_model.schedule, 15), (1, 1, 28, 28),
                                         labels=torch.tensor([5]), guidance=2.0, null_label=10, seed=3)), "ddpm").z
    assert np.array_equal(walk.steps[0].z, first_z) and not np.array_equal(first_z, eps_to_uint8(x_T[0]))


def test_clipped_reverse_walk_takes_the_posterior_mean_of_the_clipped_x0_hat(tiny_model):
    """With clip_x0 every step is x_prev = c0 clip(x0_hat) + ct x_t + sigma z (Ho et al. 2020, eq. 7), written out
    here in float64 from the schedule and the walk's own recorded eps and z; without it the walk differs."""
    clipped = list(vr.reverse_walk(tiny_model, "5", 2.0, "DDPM", 15, "training", 3, clip_x0=True))
    assert "x0_hat clipped to [-1, 1]" in clipped[0].status
    plain = list(vr.reverse_walk(tiny_model, "5", 2.0, "DDPM", 15, "training", 3))[-1].walks[0]
    walk = clipped[-1].walks[0]
    assert (walk.frames[0] == plain.frames[0]).all() and not (walk.frames[-1] == plain.frames[-1]).all()
    chain = make_chain(tiny_model.schedule, 15)
    recs = list(sample(tiny_model.eps, chain, (1, 1, 28, 28), method="ddpm", labels=torch.tensor([5]), guidance=2.0,
                       null_label=10, seed=3, clip_x0=True))
    for k, rec in enumerate(recs):
        ab, ab_prev = ref_alpha_bar("linear", rec.t), ref_alpha_bar("linear", rec.t_prev)
        beta = 1 - ab / ab_prev
        x_t, eps = rec.x_t.double(), rec.eps.double()
        x0_hat = ((x_t - np.sqrt(1 - ab) * eps) / np.sqrt(ab)).clamp(-1, 1)
        mean = (beta * np.sqrt(ab_prev) * x0_hat + (1 - ab_prev) * np.sqrt(1 - beta) * x_t) / (1 - ab)
        sigma = np.sqrt(beta * (1 - ab_prev) / (1 - ab)) if rec.t_prev > 0 else 0.0
        want = mean + (sigma * rec.z.double() if rec.z is not None else 0.0)
        torch.testing.assert_close(rec.x_prev.double(), want, atol=1e-4, rtol=1e-5)
        assert np.abs(walk.frames[k + 1].astype(int) - to_u8(rec.x_prev[0, 0].numpy())).max() <= 1
    _, text = vs.step_anatomy(clipped[-1].walks, 4)
    nums, rec = _numbers(text), recs[4]
    ab, ab_prev = ref_alpha_bar("linear", rec.t), ref_alpha_bar("linear", rec.t_prev)
    assert "clipped to [−1, 1]" in text and "eq. 7" in text
    assert nums["c_0"] == pytest.approx((1 - ab / ab_prev) * np.sqrt(ab_prev) / (1 - ab), abs=2e-6)
    assert nums["c_t"] == pytest.approx((1 - ab_prev) * np.sqrt(ab / ab_prev) / (1 - ab), abs=2e-6)
    ddim = list(vr.reverse_walk(tiny_model, "5", 2.0, "DDIM", 15, "training", 3, clip_x0=True))[-1].walks
    assert "ε' = (x_t − √ᾱ_t · x̂_0)/√(1 − ᾱ_t)" in vs.step_anatomy(ddim, 4)[1]
    with pytest.raises(ValueError, match="clip x0_hat must be true or false"):
        next(vr.reverse_walk(tiny_model, clip_x0="yes"))


def test_reverse_walk_streams_every_step(tiny_model, monkeypatch):
    monkeypatch.setattr(vw, "SHOWN_FRAMES", 6)  # a picture every 5 steps
    monkeypatch.setattr(vw, "MIN_FRAME_S", 0.0)
    monkeypatch.setattr(vw, "YIELD_EVERY_S", 0.0)  # slow steps: an update (for progress and Stop) after every step
    updates = list(vr.reverse_walk(tiny_model, "unconditional", 1.0, "DDIM", 30))
    assert [u.step for u in updates] == list(range(31)) + [30]  # the start, each step, then the finish
    shown = [u.step for u in updates if u.panels[0] is not None]
    assert shown == [0, 1, 5, 10, 15, 20, 25, 30, 30]  # the start, the first step, every few steps, the end
    assert updates[7].status.startswith("DDIM, 30 steps, linear schedule: step 7/30")
    monkeypatch.setattr(vw, "YIELD_EVERY_S", 1e9)  # fast steps: updates only with pictures
    assert [u.step for u in vr.reverse_walk(tiny_model, "unconditional", 1.0, "DDIM", 30)] == shown


def test_a_slow_consumer_does_not_get_more_updates(tiny_model, monkeypatch):
    """The throttle counts computing time only: time a UI spends on an update never brings the next one sooner.

    On a clock that only the consumer moves (computing takes no time on it), so the count does not depend on how
    fast the machine computes the steps.
    """
    clock = [0.0]
    monkeypatch.setattr(vw, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    updates = []
    for u in vr.reverse_walk(tiny_model, "unconditional", 1.0, "DDIM", 40):
        updates.append(u)
        clock[0] += 0.12  # longer than YIELD_EVERY_S: a consumer that paused the walk would get an update per step
    assert updates[-1].finished and len(updates) < 20


@pytest.mark.parametrize("mode,names,lengths", [
    ("DDPM vs DDIM", ("DDPM, 20", "DDIM, 20"), (21, 21)),
    ("two step counts", ("DDPM, 20", "DDPM, 10"), (21, 11)),
    ("training vs other schedule", ("linear schedule", "cosine schedule"), (21, 21)),
])
def test_side_by_side_walks_share_the_starting_noise(tiny_model, mode, names, lengths):
    u = list(vr.reverse_walk(tiny_model, "1", 1.0, "DDPM", 20, "training", 9, mode, 10))[-1]
    a, b = u.walks
    assert names[0] in a.name and names[1] in b.name
    assert (len(a.frames), len(b.frames)) == lengths
    assert (a.frames[0] == b.frames[0]).all()
    assert not (a.frames[-1] == b.frames[-1]).all()
    assert vr.walk_frame(u.walks, 10).shape[1] > 2 * vr.walk_frame([a], 10).shape[1] - 10


def test_other_schedule_calls_the_network_at_matching_noise_levels(tiny_model):
    chain = vw.walk_chain(tiny_model.schedule, 10, "other")
    assert "cosine" in chain.description
    assert not np.array_equal(chain.model_t, chain.timesteps)


@pytest.mark.parametrize("kwargs,words", [
    (dict(steps=5), "inference steps must be in 10..1000"), (dict(steps=1001), "inference steps"),
    (dict(guidance=-1), "guidance"), (dict(label="11"), "digit class"), (dict(sampler="PLMS"), "sampler"),
    (dict(schedule="cosine"), "inference schedule"), (dict(compare="all"), "side-by-side"),
    (dict(seed=2**40), "seed"),
])
def test_reverse_walk_rejects_bad_values(tiny_model, kwargs, words):
    with pytest.raises(ValueError, match=words):
        next(vr.reverse_walk(tiny_model, **kwargs))


def test_scrubber_strip_and_gif(tiny_model):
    walks = list(vr.reverse_walk(tiny_model, "2", 1.0, "DDIM", 12))[-1].walks
    assert (vr.walk_frame(walks, 0) != vr.walk_frame(walks, 12)).any()
    with pytest.raises(ValueError, match="frame"):
        vr.walk_frame(walks, 13)
    with pytest.raises(ValueError, match="run a reverse walk first"):
        vr.walk_frame([], 0)
    strip = vr.walk_strip(walks)
    assert strip.shape[1] == 10 * 56 + 9 * 4
    store = vr.GifStore(keep=2)
    paths = [store.save(walks) for _ in range(3)]
    with Image.open(paths[-1]) as gif:
        assert gif.n_frames == 13
    assert len(list(store.folder.glob("*.gif"))) == 2  # old GIFs are cleaned up


def _decode(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float64) / 127.5 - 1.0


def _numbers(text: str) -> dict:
    """'name = value' pairs of a step formula line."""
    return {k.strip(): float(v) for k, v in re.findall(r"([^,:;=]+?) = (-?\d+\.\d+)", text)}


def test_step_anatomy_ddpm_parts_add_up(tiny_model):
    walks = list(vr.reverse_walk(tiny_model, "2", 2.0, "DDPM", 20, "training", 3))[-1].walks
    w = walks[0]
    assert len(w.steps) == w.done == 20
    for s in (0, 7, 13):
        parts = w.steps[s]
        img, text = vs.step_anatomy(walks, s)
        assert f"step {s + 1} of 20 (t = {parts.t} → t' = {parts.t_prev})" in text
        # the numbers against the schedule written out independently (linear, T = 1000, respaced step t -> t')
        ab, ab_prev = ref_alpha_bar("linear", parts.t), ref_alpha_bar("linear", parts.t_prev)
        alpha = ab / ab_prev
        nums = _numbers(text)
        assert nums["1/√α_t"] == pytest.approx(alpha ** -0.5, abs=2e-6)
        assert nums["β_t/√(1 − ᾱ_t)"] == pytest.approx((1 - alpha) / np.sqrt(1 - ab), abs=2e-6)
        sigma = np.sqrt((1 - alpha) * (1 - ab_prev) / (1 - ab))
        assert nums["√β̃_t"] == pytest.approx(sigma, abs=2e-6)  # "σ_t = √β̃_t = ..."
        assert img.shape[1] == 5 * 28 * vs.TILE_SCALE + 4 * 6
    last = w.steps[-1]
    _, text = vs.step_anatomy(walks, 20)  # the last frame shows the last step: no noise added
    assert last.z is None and last.t_prev == 0 and "step 20 of 20" in text and "no noise at the last step" in text
    assert np.array_equal(last.deterministic, w.frames[-1])


def test_recorded_step_parts_are_the_ddpm_mean_and_the_noise_used(tiny_model):
    """x_prev = mean + sigma z, with mean = (x_t - beta/sqrt(1 - abar) eps)/sqrt(alpha) written out here (floats)."""
    chain = make_chain(tiny_model.schedule, 20)
    recs = list(sample(tiny_model.eps, chain, (1, 1, 28, 28), method="ddpm", seed=4, labels=[5], guidance=2.0,
                          null_label=tiny_model.null_label))
    for rec in recs:
        ab, ab_prev = ref_alpha_bar("linear", rec.t), ref_alpha_bar("linear", rec.t_prev)
        alpha = ab / ab_prev
        mean = (rec.x_t.double() - (1 - alpha) / np.sqrt(1 - ab) * rec.eps.double()) / np.sqrt(alpha)
        sigma = np.sqrt((1 - alpha) * (1 - ab_prev) / (1 - ab)) if rec.t_prev > 0 else 0.0
        noise = sigma * rec.z.double() if rec.z is not None else 0.0
        assert (rec.z is None) == (rec.t_prev == 0)  # fresh noise at every step but the last
        torch.testing.assert_close(mean + noise, rec.x_prev.double(), atol=1e-4, rtol=1e-5)
        parts = vs.record_step(rec, "ddpm")
        assert np.abs(parts.deterministic.astype(int) - to_u8(mean[0, 0].numpy())).max() <= 1
        assert parts.z is None if rec.z is None else np.array_equal(parts.z, eps_to_uint8(rec.z[0]))


def test_step_anatomy_ddim_and_side_by_side(tiny_model):
    walks = list(vr.reverse_walk(tiny_model, "4", 1.0, "DDPM", 20, "training", 1, "DDPM vs DDIM", 20))[-1].walks
    img, text = vs.step_anatomy(walks, 10)
    lines = text.splitlines()
    assert len(lines) == 2 and "DDPM" in lines[0] and "DDIM" in lines[1]
    ddim = walks[1].steps[10]
    assert ddim.method == "ddim" and ddim.z is None and np.array_equal(ddim.deterministic, walks[1].frames[11])
    nums = _numbers(lines[1])
    ab_prev = ref_alpha_bar("linear", ddim.t_prev)
    assert nums["√ᾱ_t'"] == pytest.approx(np.sqrt(ab_prev), abs=2e-6)
    assert nums["√(1 − ᾱ_t' − σ²)"] == pytest.approx(np.sqrt(1 - ab_prev), abs=2e-6)
    assert nums["σ"] == 0 and "η = 0" in lines[1]
    one, _ = vs.step_anatomy(walks[:1], 10)
    assert img.shape[0] > 2 * one.shape[0]  # a row per walk
    with pytest.raises(ValueError, match="frame"):
        vs.step_anatomy(walks, 21)
    with pytest.raises(ValueError, match="run a reverse walk first"):
        vs.step_anatomy([], 0)


# ---- noise-removal tab ----

def test_noise_removal_real_digit_against_the_formulas(tiny_model):
    res = vn.noise_removal(tiny_model, "real digit", DIGIT, "unconditional", 1.0, 50, 4)
    assert len(res) == 50 and res.ts[0] == 1000 and res.ts[-1] == 1 and res.ts == sorted(res.ts, reverse=True)
    x0 = torch.from_numpy(np.asarray(Image.open(DIGIT), dtype=np.float32) / 127.5 - 1)[None, None]
    eps = torch.randn((1, 1, 28, 28), generator=torch.Generator().manual_seed(4))
    ab = torch.tensor([ref_alpha_bar("linear", t) for t in res.ts], dtype=torch.float32)[:, None, None, None]
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    assert torch.allclose(res.x_t, x_t, atol=1e-5)
    with torch.no_grad():
        eps_hat = tiny_model.net(x_t, torch.tensor(res.ts), None)  # the network at each row's step
    assert torch.allclose(res.eps_hat, eps_hat, atol=1e-5)
    assert torch.allclose(res.x0_hat, (x_t - (1 - ab).sqrt() * eps_hat) / ab.sqrt(), rtol=1e-4, atol=1e-3)
    mse = ((eps_hat - eps) ** 2).mean(dim=(1, 2, 3)).numpy()
    assert np.allclose(res.errors["eps_hat vs true eps"], mse, rtol=1e-5)


def test_noise_removal_with_an_oracle_recovers_x0(monkeypatch, tiny_model):
    """If the network returned the true noise, subtracting all of it would give x_0 back at every t."""
    eps = torch.randn((1, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(vn, "eps_fn_for", lambda model: (lambda x, ab, labels=None: eps.expand(x.shape[0], -1, -1, -1)))
    res = vn.noise_removal(tiny_model, "real digit", DIGIT, "unconditional", 1.0, 20, 0)
    assert res.errors["eps_hat vs true eps"].max() == 0
    assert res.errors["x0_hat vs true x0"].max() < 1e-6


def test_noise_removal_from_a_reverse_walk(tiny_model):
    res = vn.noise_removal(tiny_model, "reverse walk", None, "4", 2.0, 20, 1)
    assert len(res) == 20 and res.ts[0] == 1000 and res.x0 is None
    ab = torch.tensor([ref_alpha_bar("linear", t) for t in res.ts], dtype=torch.float32)[:, None, None, None]
    assert torch.allclose(res.x0_hat, (res.x_t - (1 - ab).sqrt() * res.eps_hat) / ab.sqrt(), rtol=1e-4, atol=1e-3)
    assert "x0_hat vs the final sample" in res.errors
    img, text = vn.noise_triplet(res, 19)
    assert img.shape[1] == 3 * 168 + 2 * 6 and "t = 1" in text


def test_noise_removal_walks_as_the_card_recommends(tiny_model):
    """A model whose card recommends clipping: the walk's x_t are those of the clipped sampler; x0_hat stays the
    one-shot formula (unclipped), and the text says which is which."""
    import dataclasses
    clipping = dataclasses.replace(tiny_model, config=tiny_model.config | {"recommended_clip_x0": True})
    res = vn.noise_removal(clipping, "reverse walk", None, "4", 2.0, 20, 1)
    recs = list(sample(tiny_model.eps, make_chain(tiny_model.schedule, 20), (1, 1, 28, 28), method="ddpm",
                       labels=torch.tensor([4]), guidance=2.0, null_label=10, seed=1, clip_x0=True))
    torch.testing.assert_close(res.x_t, torch.cat([r.x_t for r in recs]), atol=1e-5, rtol=1e-5)
    ab = torch.tensor([ref_alpha_bar("linear", t) for t in res.ts], dtype=torch.float32)[:, None, None, None]
    assert torch.allclose(res.x0_hat, (res.x_t - (1 - ab).sqrt() * res.eps_hat) / ab.sqrt(), rtol=1e-4, atol=1e-3)
    assert "the walk itself clipped x0_hat" in vn.noise_triplet(res, 3)[1]
    assert "the walk itself clipped" not in vn.noise_triplet(vn.noise_removal(tiny_model, "reverse walk", None, "4",
                                                                             2.0, 20, 1), 3)[1]


def test_noise_views(tiny_model):
    res = vn.noise_removal(tiny_model, "real digit", DIGIT, "unconditional", 1.0, 50, 0)
    grid = vn.noise_grid(res)
    cell_h, cell_w = 2 * 28 + 14, 3 * 2 * 28 + 2  # a captioned triplet at 2x
    assert grid.shape == (10 * cell_h + 9 * 6, 5 * cell_w + 4 * 10, 3)  # 10 rows of 5 triplets
    img, text = vn.noise_triplet(res, 3)
    assert img.shape[1] == 5 * 168 + 4 * 6 and f"t = {res.ts[3]}" in text
    fig = vn.noise_error_curve(res, 3)
    assert len(fig.axes[0].get_lines()) == 3  # two error curves and the cursor
    with pytest.raises(ValueError):
        vn.noise_triplet(res, 50)


@pytest.mark.parametrize("kwargs,words", [
    (dict(source="video"), "source"), (dict(num_t=1), "timesteps"), (dict(num_t=500), "timesteps"),
    (dict(image=None), "no digit given"), (dict(label="x"), "digit class"),
])
def test_noise_removal_rejects_bad_values(tiny_model, kwargs, words):
    args = dict(source="real digit", image=DIGIT, label="unconditional", guidance=1.0, num_t=50, seed=0) | kwargs
    with pytest.raises(ValueError, match=words):
        vn.noise_removal(tiny_model, **args)


def test_noise_removal_accepts_any_upload(tiny_model):
    res = vn.noise_removal(tiny_model, "real digit", str(ASSETS / "coffee.jpg"), "unconditional", 1.0, 5, 0)
    assert res.x0.shape == (1, 1, 28, 28)


# ---- architecture tab ----

def test_architecture_table(tiny_model):
    df = va.architecture_table(tiny_model)
    total = sum(p.numel() for p in tiny_model.net.parameters())
    assert df.iloc[-1]["parameters"] == total
    assert df.iloc[:-1]["parameters"].sum() == total  # the stages and the embedding cover every parameter
    assert {"conv_in", "middle", "out", "embedding"} <= set(df["stage"])
    assert "28 x 28" in " ".join(df["output [C,H,W]"]) and "14 x 14" in " ".join(df["output [C,H,W]"])
    text = va.conditioning_markdown(tiny_model)
    assert "sinusoidal" in text and "null" in text


def test_feature_maps(tiny_model):
    x_t, rows = va.feature_rows(tiny_model, DIGIT, 300, "3", 0)
    net = tiny_model.net
    assert len(rows) == len(net.down) + 1 + len(net.up) + 1  # every stage, then the output
    assert rows[0][1] == "down stage 0: 8 channels at 28x28"
    assert any("14x14" in caption for _, caption in rows)
    assert all(img.dtype == np.uint8 and img.ndim == 3 for img, _ in rows)
    _, sheet = va.feature_maps(tiny_model, DIGIT, 300, "3", 0)
    assert sheet.shape[0] == sum(img.shape[0] for img, _ in rows) + 6 * (len(rows) - 1)
    with pytest.raises(ValueError, match="t must be"):
        va.feature_maps(tiny_model, DIGIT, 0)


# ---- math panel ----

def test_math_panel_has_the_equations():
    assert {"left": "$", "right": "$", "display": False} in vm.LATEX_DELIMITERS
    for needle in (r"\sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon", r"\hat x_0 = ", r"\beta_t I",
                   r"\tilde\epsilon", r"\cos^2", r"\mathbb{E}[x_0 \mid x_t] = \sum_{i=1}^N w_i\,x_i",
                   r"N_\text{eff} = 1 / \sum_i w_i^2", r"x' = x + (\sigma' - \sigma)\,d",
                   r"\tfrac{1}{2}(d + d')", r"\tfrac{1}{2r}", r"\sigma_{down}^2 + \sigma_{up}^2 = \sigma'^2"):
        assert needle in vm.ALL
    assert vm.ALL.count("$$") % 2 == 0


# ---- the samplers of today in the reverse tab ----

@pytest.mark.parametrize("sampler, spacing", [("euler", "karras"), ("euler-a", "karras"), ("heun", "karras"),
                                              ("dpmpp-2m", "karras"), ("DDIM", "linspace")])
def test_every_sampler_walks_as_samplers_run_does(tiny_model, sampler, spacing):
    """The tab's walk is ``samplers.run`` at the sampler's own spacing; the old value "DDIM" still works."""
    updates = list(vr.reverse_walk(tiny_model, "5", 2.0, sampler, 12, "training", 3))
    walk = updates[-1].walks[0]
    method = sampler.lower()
    x0 = run(tiny_model.eps, make_chain(tiny_model.schedule, 12, spacing), (1, 1, 28, 28), method=method,
             labels=torch.tensor([5]), guidance=2.0, null_label=10, seed=3)
    assert np.abs(walk.frames[-1].astype(int) - to_u8(x0[0, 0].numpy())).max() <= 1
    calls = 23 if method == "heun" else 12
    assert walk.calls == calls and f"{calls} network calls" in updates[-1].status
    assert ("Karras levels" in walk.name) == (spacing == "karras")


def test_step_anatomy_of_the_sigma_samplers(tiny_model):
    walks = list(vr.reverse_walk(tiny_model, "2", 1.0, "heun", 10, "training", 1))[-1].walks
    parts = walks[0].steps[3]
    assert parts.nfe == 2 and {"slope", "predictor", "slope_2", "slope_avg", "x0_hat_2"} <= set(parts.pictures)
    img, text = vs.step_anatomy(walks, 3)
    assert "2 network calls" in text and "predictor" in text and "lines 8–11" in text
    assert img.shape[1] == 7 * 28 * vs.TILE_SCALE + 6 * 6  # x_t, x0_hat, d, predictor, d', average, x_t'
    sig = parts.numbers
    assert sig["sigma"] > sig["sigma_next"] > 0
    last = walks[0].steps[-1]
    assert last.nfe == 1 and "Euler's step alone" in vs.step_formula(last)
    euler_a = list(vr.reverse_walk(tiny_model, "2", 1.0, "euler-a", 10, "training", 1))[-1].walks[0]
    p = euler_a.steps[2]
    assert p.z is not None and p.numbers["sigma_down"] ** 2 + p.numbers["sigma_up"] ** 2 == \
        pytest.approx(p.numbers["sigma_next"] ** 2)
    assert "DDIM with η = 1" in vs.step_formula(p)
    dpm = list(vr.reverse_walk(tiny_model, "2", 1.0, "dpmpp-2m", 10, "training", 1))[-1].walks[0]
    first, mid = dpm.steps[0], dpm.steps[4]
    assert not first.numbers["second_order"] and mid.numbers["second_order"]
    assert "x0_hat_last" in mid.pictures and mid.numbers["w1"] < 0
    assert "Lu et al. 2022, Algorithm 2" in vs.step_formula(mid) and "first order" in vs.step_formula(first)


def test_a_sampler_that_cannot_take_the_steps_says_so(tiny_model):
    with pytest.raises(ValueError, match="unknown sampler|sampler must be one of|sampler"):
        list(vr.reverse_walk(tiny_model, "2", 1.0, "plms", 10, "training", 1))
    zsnr = make_schedule("linear", 1000, zero_terminal_snr=True)
    with pytest.raises(ValueError, match="zero terminal SNR"):
        list(sample(tiny_model.eps, make_chain(zsnr, 10), (1, 1, 28, 28), method="euler"))


# ---- two conditions from the same noise ----

def test_two_conditions_share_the_noise_and_differ_in_one_setting(tiny_model):
    classes = list(vr.reverse_walk(tiny_model, "3", 2.0, "ddim", 12, "training", 5, "two classes", 20, False, "8"))
    a, b = classes[-1].walks
    assert np.array_equal(a.frames[0], b.frames[0]) and not np.array_equal(a.frames[-1], b.frames[-1])
    assert a.name.startswith("digit 3, w = 2: ") and b.name.startswith("digit 8, w = 2: ")
    scales = list(vr.reverse_walk(tiny_model, "3", 1.0, "ddpm", 12, "training", 5, "two guidance scales", 20, False,
                                  None, 5.0))[-1].walks
    assert [w.name.split(":")[0] for w in scales] == ["digit 3, w = 1", "digit 3, w = 5"]
    # the second walk is the plain walk at the second condition, with the same noise
    alone = list(vr.reverse_walk(tiny_model, "3", 5.0, "ddpm", 12, "training", 5))[-1].walks[0]
    assert np.array_equal(alone.frames[-1], scales[1].frames[-1])
    assert vr.second_label(tiny_model, "3") == "8" and vr.second_label(tiny_model, "9") == "0"


@pytest.mark.parametrize("args, words", [(("unconditional", "two classes", "8", None), "pick a digit class"),
                                         (("3", "two classes", "3", None), "differs"),
                                         (("3", "two guidance scales", None, 2.0), "differs"),
                                         (("3", "two guidance scales", None, 99.0), "second guidance scale")])
def test_two_conditions_that_are_not_two_are_refused(tiny_model, args, words):
    label, mode, label_b, guidance_b = args
    with pytest.raises(ValueError, match=words):
        list(vr.reverse_walk(tiny_model, label, 2.0, "ddim", 12, "training", 5, mode, 20, False, label_b, guidance_b))


def test_decided_step_is_where_the_class_stops_changing():
    assert vdc.decided_step(["8", "8", "3", "8", "3", "3"]) == 5
    assert vdc.decided_step(["3", "3", "3"]) == 1 and vdc.decided_step(["1", "7"]) == 2


def test_when_is_the_picture_decided(tiny_model):
    walks = list(vr.reverse_walk(tiny_model, "3", 2.0, "ddim", 12, "training", 5, "two classes", 20, False,
                                 "8"))[-1].walks
    d = vdc.decided(walks, tiny_model)
    a = np.stack(walks[0].x0_hats[1:]).astype(float) / 127.5 - 1
    b = np.stack(walks[1].x0_hats[1:]).astype(float) / 127.5 - 1
    np.testing.assert_allclose(d.distance, np.sqrt(((a - b) ** 2).reshape(12, -1).mean(1)), rtol=1e-5)
    assert d.ts == walks[0].ts[:-1] and len(d.classes) == 2 and all(len(c) == 12 for c in d.classes)
    assert d.decided == [vdc.decided_step(c) for c in d.classes]  # (the tiny random net's pictures, judged)
    text = vdc.decided_text(d, vdc.short_names(walks))
    assert f"from step {d.decided[0]} of 12" in text and "digit 3, w = 2" in text
    assert len(vdc.decided_figure(d, vdc.short_names(walks)).axes[0].lines) == 3  # the curve and two markers
    with pytest.raises(ValueError, match="two finished walks"):
        vdc.decided(walks[:1], tiny_model)


# ---- quality against network calls, with the learner's walk marked ----

def test_the_measured_chart_marks_the_walk(tiny_ckpt, tmp_path):
    """The tiny model without a report says how to measure one; with the digits' report beside it, the words
    give the report's own numbers for the walk's sampler and calls."""
    import json
    import shutil
    from explainer.model.checkpoint import load_model
    from explainer.views import quality_chart as vq

    chart, text = vq.sampler_quality(load_model(tiny_ckpt), "ddim", 10)
    assert chart is None and "evaluate-samplers" in text
    folder = tmp_path / "tiny"
    shutil.copytree(tiny_ckpt, folder)
    report = json.loads((ROOT / "checkpoints" / "mnist-ddpm" / vq.REPORT).read_text())
    (folder / vq.REPORT).write_text(json.dumps(report))
    model = load_model(folder)
    row = next(r for r in report["results"] if r["sampler"] == "dpmpp-2m" and r["nfe"] == 10)
    chart, text = vq.sampler_quality(model, "dpmpp-2m", 10)
    assert chart.ndim == 3 and chart.shape[2] == 3
    assert f"FD {row['fd_over_floor']:.2f}x the floor" in text and f"{100 * row['accuracy']:.1f} %" in text
    heun = max(r["nfe"] for r in report["results"] if r["sampler"] == "heun")
    assert "19 network calls" in vq.sampler_quality(model, "heun", 10)[1]  # Heun's 10 steps
    assert "outside that range" in vq.sampler_quality(model, "heun", (heun + 1) // 2 + 20)[1]
    ref = report["reference"]
    assert "That is the reference" in vq.sampler_quality(model, "DDPM", ref["steps"])[1]
    with pytest.raises(ValueError, match="sampler"):
        vq.sampler_quality(model, "plms", 10)
