"""Figures: the pure building blocks against the closed-form math, and every file make_figures writes."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_tiny_checkpoint
from explainer.render import display
from explainer.render import figures as F
from explainer.accel.fast import best_eps_fn
from explainer.model.checkpoint import DiffusionModel, load_model
from explainer.model.data import load_mnist
from explainer.diffusion.schedules import make_schedule

LINEAR_ABAR = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))  # Ho et al. 2020, written out independently


def digit():
    return torch.from_numpy(load_mnist("test").images[:1]).float()[:, None] / 127.5 - 1.0


def assert_nontrivial_png(path, min_w, min_h):
    with Image.open(path) as im:
        assert im.width >= min_w and im.height >= min_h
        arr = np.asarray(im.convert("L"), dtype=np.float64)
    assert arr.std() > 5  # not a constant image


# ---------------------------------------------------------------- building blocks
def test_to_uint8_grid_save_grid_still_work(tmp_path):
    x = torch.linspace(-1, 1, 2 * 3 * 4).reshape(2, 1, 3, 4)
    u = F.to_uint8(x, keep_gray_channel=True)  # the figures' layout: [B,H,W,C]
    assert u.shape == (2, 3, 4, 1) and u.dtype == np.uint8 and u.min() == 0 and u.max() == 255
    assert F.grid(u, nrow=2, pad=1).shape == (3, 9, 1)
    p = display.save_grid(x, tmp_path / "g.png", nrow=2, scale=2)
    assert Image.open(p).size == (20, 6)  # 2 x (4 + 2 + 4) wide, 2 x 3 tall


def test_forward_strip_matches_closed_form():
    x0 = digit()
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    ts = [0, 1, 250, 500, 1000]
    frames = F.forward_strip(x0, make_schedule("linear"), ts, eps)
    assert frames.shape == (5, 1, 28, 28)
    assert torch.equal(frames[0], x0[0])
    for i, t in enumerate(ts[1:], 1):
        ab = LINEAR_ABAR[t - 1]
        expected = np.sqrt(ab) * x0[0].double() + np.sqrt(1 - ab) * eps[0].double()
        assert torch.allclose(frames[i].double(), expected, atol=1e-6)


def test_forward_chain_frames_has_the_right_marginals():
    x0 = torch.full((1, 1, 64, 64), 0.5)
    ts, frames = F.forward_chain_frames(x0, make_schedule("linear"), 10, torch.Generator().manual_seed(0))
    assert ts == list(range(0, 1001, 100)) and frames.shape == (11, 1, 64, 64)
    assert torch.equal(frames[0], x0[0])
    for t, f in zip(ts[1:], frames[1:]):  # q(x_t | x_0) = N(sqrt(abar) x0, (1 - abar) I), 4096 pixels
        ab = LINEAR_ABAR[t - 1]
        assert f.mean().item() == pytest.approx(0.5 * np.sqrt(ab), abs=0.06)
        assert f.var().item() == pytest.approx(1 - ab, rel=0.1, abs=0.01)
    with pytest.raises(ValueError):
        F.forward_chain_frames(x0, make_schedule("linear"), 0)


def test_plot_schedule_curves_draws_the_schedules():
    from matplotlib.figure import Figure
    fig = F.plot_schedule_curves({"linear": make_schedule("linear"), "cosine": make_schedule("cosine")}, t=300)
    assert isinstance(fig, Figure)
    lines = fig.axes[0].get_lines()
    mean_lin, var_lin, mean_cos, var_cos = (np.asarray(l.get_ydata()) for l in lines[:4])
    assert mean_lin[0] == 1.0 and var_lin[0] == 0.0
    assert mean_lin[1000] == pytest.approx(np.sqrt(4.0358e-5), rel=1e-3)  # linear alpha_bar_T = 4.0358e-5
    assert var_cos[1000] == pytest.approx(1.0, abs=1e-8)  # cosine alpha_bar_T = 2.43e-9
    assert mean_cos[500] > mean_lin[500]  # cosine keeps more signal mid-way
    fig2 = Figure()
    ax = fig2.add_subplot()
    assert F.plot_schedule_curves({"linear": make_schedule("linear")}, ax=ax) is fig2
    with pytest.raises(ValueError):
        F.plot_schedule_curves({})


def test_triplet_image_and_table():
    x0_hat = torch.full((1, 1, 8, 8), 3.0)  # outside the data range: clipped for display
    x_t = torch.zeros(1, 1, 8, 8)
    eps = -torch.ones(1, 1, 8, 8)
    img = F.triplet_image(x0_hat, x_t, eps, pad=2)
    assert img.shape == (8, 28, 1)
    assert (img[:, :8] == 255).all() and (img[:, 10:18] == 128).all() and (img[:, 20:] == 0).all()
    t = F.image_table([[img, img]], col_titles=["a", "b"], row_titles=["t=1"])
    assert t.ndim == 3 and t.shape[2] == 3 and t.shape[0] > 8 and t.shape[1] > 2 * 28
    assert t.std() > 5


def test_load_figure_image(tmp_path, monkeypatch):
    monkeypatch.setattr(F, "PHOTO_DIR", tmp_path / "no-photos")
    x, src = F.load_figure_image()
    assert x.shape == (1, 1, 28, 28) and "MNIST" in src
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 90, 3), dtype=np.uint8)).save(rgb)
    x, _ = F.load_figure_image(rgb, size=32)
    assert x.shape == (1, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    gray = tmp_path / "gray.png"
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(gray)
    assert F.load_figure_image(gray, size=16)[0].shape == (1, 1, 16, 16)
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.open(rgb).save(photos / "a.png")
    monkeypatch.setattr(F, "PHOTO_DIR", photos)
    assert F.load_figure_image()[0].shape == (1, 3, F.PHOTO_SIZE, F.PHOTO_SIZE)
    with pytest.raises(ValueError, match="not found"):
        F.load_figure_image(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(ValueError, match="cannot read"):
        F.load_figure_image(tmp_path / "bad.png")


# ---------------------------------------------------------------- make_figures
MODEL_FREE = ["forward_10_steps.png", "forward_linear_strip.png", "forward_cosine_strip.png", "schedule_curves.png"]
WITH_MODEL = ["reverse_10_steps.png", "reverse_walk.gif", "full_noise_removal.png"]


def test_make_figures_without_model(tmp_path):
    paths = F.make_figures(None, tmp_path / "figs", seed=0)
    assert [p.name for p in paths] == MODEL_FREE + ["captions.json"]
    for p in paths[:-1]:
        assert_nontrivial_png(p, 200, 40)
    with Image.open(paths[0]) as im:  # 11 frames of a 28x28 digit shown 3x: wider than tall
        assert im.width > 11 * 84 and im.height > 84
    caps = json.loads(paths[-1].read_text())
    assert set(caps) == set(MODEL_FREE)


def test_make_figures_is_seeded(tmp_path):
    a = F.make_figures(None, tmp_path / "a", seed=1)
    b = F.make_figures(None, tmp_path / "b", seed=1)
    c = F.make_figures(None, tmp_path / "c", seed=2)
    read = lambda p: np.asarray(Image.open(p))
    assert np.array_equal(read(a[0]), read(b[0]))
    assert not np.array_equal(read(a[0]), read(c[0]))


def test_make_figures_with_model(tmp_path):
    model = load_model(make_tiny_checkpoint(tmp_path / "tiny20", num_steps=20), device="cpu")
    paths = F.make_figures(model, tmp_path / "figs", seed=0)
    assert [p.name for p in paths] == MODEL_FREE + WITH_MODEL + ["captions.json"]
    assert_nontrivial_png(tmp_path / "figs" / "reverse_10_steps.png", 11 * 84, 10 * 84)  # 10 digits x 11 frames
    assert_nontrivial_png(tmp_path / "figs" / "full_noise_removal.png", 3 * 84, 8 * 84)
    with Image.open(tmp_path / "figs" / "reverse_walk.gif") as gif:
        assert gif.n_frames == 21  # x_20, x_19, ..., x_1 and the sample x_0
        frames = []
        for i in (0, gif.n_frames - 1):
            gif.seek(i)
            frames.append(np.asarray(gif.convert("L"), dtype=np.float64))
    assert frames[0].std() > 5 and not np.array_equal(frames[0], frames[1])
    caps = json.loads(paths[-1].read_text())
    assert "guidance" in caps["reverse_10_steps.png"] and "x0_hat" in caps["full_noise_removal.png"]


def test_reverse_walk_records_the_requested_steps(tiny_model):
    # the session's tiny model has T = 1000; the same network on a 12-step schedule keeps the walk short
    short = DiffusionModel(net=tiny_model.net, schedule=make_schedule("linear", 12), image_size=28, channels=1,
                           class_names=tiny_model.class_names, config={}, path="")
    walk = F.figure_walk(short, torch.tensor([3, 7]), 2, seed=0, guidance=2.0, strip_ts=[12, 6, 0],
                         triplet_ts=[12, 1], gif_every=4, eps_fn=best_eps_fn(short))
    assert walk["strip"].shape == (3, 2, 1, 28, 28)
    assert torch.equal(walk["strip"][-1], walk["x0"])
    assert walk["gif_ts"] == [12, 8, 4, 0]
    x0_hat, x_t, eps = walk["triplets"][12]
    ab = make_schedule("linear", 12).alpha_bars[-1]
    assert torch.allclose(x0_hat, (x_t - np.sqrt(1 - ab) * eps) / np.sqrt(ab), atol=1e-5)  # eq. 15
    eager = F.figure_walk(short, torch.tensor([3, 7]), 2, seed=0, guidance=2.0, strip_ts=[12, 6, 0],
                          triplet_ts=[12, 1], gif_every=4)
    # the fastest agreeing network path (what the CLI passes) draws the same pictures as eager model.eps
    assert (walk["x0"] - eager["x0"]).abs().max() / (1 + eager["x0"].abs().max()) < 1e-4
