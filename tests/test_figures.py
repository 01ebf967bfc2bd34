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
from explainer.paths import ASSETS
from explainer.diffusion.respacing import make_chain
from explainer.diffusion.schedules import make_schedule

DIGIT = ASSETS / "digit_3.png"  # a small image where the forward figures are not the subject
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


def test_load_figure_image_default_is_the_bundled_photo():
    x, src = F.load_figure_image()
    assert F.DEFAULT_PHOTO.is_file() and F.DEFAULT_PHOTO.name == "astronaut.jpg"
    assert x.shape == (1, 3, F.PHOTO_SIZE, F.PHOTO_SIZE) and x.min() >= -1 and x.max() <= 1
    assert (x[0, 0] - x[0, 2]).abs().mean() > 0.05  # a colour photo: its channels differ
    assert src.startswith("astronaut.jpg") and "NASA" in src and "MNIST" not in src


def test_load_figure_image_falls_back_to_a_digit_only_without_the_photo(tmp_path, monkeypatch):
    monkeypatch.setattr(F, "DEFAULT_PHOTO", tmp_path / "astronaut.jpg")  # the photo file is missing
    x, src = F.load_figure_image()
    assert x.shape == (1, 1, 28, 28) and "MNIST" in src and "astronaut.jpg" in src and "missing" in src


def test_load_figure_image_reads_any_image(tmp_path):
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 90, 3), dtype=np.uint8)).save(rgb)
    x, src = F.load_figure_image(rgb, size=32)
    assert x.shape == (1, 3, 32, 32) and x.min() >= -1 and x.max() <= 1 and src == "rgb.png, 32x32"
    gray = tmp_path / "gray.png"
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(gray)
    assert F.load_figure_image(gray, size=16)[0].shape == (1, 1, 16, 16)
    with pytest.raises(ValueError, match="not found"):
        F.load_figure_image(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(ValueError, match="cannot read"):
        F.load_figure_image(tmp_path / "bad.png")


# ---------------------------------------------------------------- captions
def test_describe_sampler_names_the_variance_or_eta():
    tilde, beta = F.describe_sampler("ddpm", "beta_tilde"), F.describe_sampler("ddpm", "beta")
    assert "sigma_t^2 = beta_tilde_t" in tilde and "sigma_t^2 = beta_t" in beta and "beta_tilde" not in beta
    assert "clipped" in F.describe_sampler("ddpm", "beta", clip_x0=True) and "clipped" not in beta
    assert "eta = 0 (deterministic)" in F.describe_sampler("ddim", "beta", eta=0.0)
    ddim = F.describe_sampler("ddim", "beta", eta=0.3)
    assert "DDIM" in ddim and "eta = 0.3" in ddim and "sigma_t" not in ddim  # DDIM has no variance setting
    assert "Heun (Karras et al. 2022, Algorithm 1" in F.describe_sampler("heun")
    with pytest.raises(ValueError, match="unknown sampler"):
        F.describe_sampler("plms")


def test_describe_walk_names_every_setting():
    chain = make_chain(make_schedule("cosine", 1000), 50)
    words = F.describe_walk("ddpm", "beta", chain=chain, labels=torch.tensor([3, 3, 3]), guidance=2.5, seed=7)
    assert words.startswith(F.describe_sampler("ddpm", "beta"))
    for part in (chain.description, "label 3,", "w=2.5", "seed 7"):
        assert part in words, part
    assert "labels 0, 1" in F.describe_walk(labels=["0", "1", "1"])
    unconditional = F.describe_walk(labels=None, guidance=3.0)
    assert "unconditional" in unconditional and "guidance" not in unconditional  # guidance needs labels


# ---------------------------------------------------------------- make_figures
MODEL_FREE = ["forward_10_steps.png", "forward_linear_strip.png", "forward_cosine_strip.png", "schedule_curves.png"]
WITH_MODEL = ["reverse_10_steps.png", "reverse_walk.gif", "full_noise_removal.png"]


def test_make_figures_without_model(tmp_path):
    paths = F.make_figures(None, tmp_path / "figs", seed=0)  # the default image: the bundled photo
    assert [p.name for p in paths] == MODEL_FREE + ["captions.json"]
    for p in paths[:-1]:
        assert_nontrivial_png(p, 200, 40)
    with Image.open(paths[0]) as im:  # 11 frames of the 128x128 photo in a row: wider than tall
        assert im.width > 11 * F.PHOTO_SIZE and im.height > F.PHOTO_SIZE
        rgb = np.asarray(im.convert("RGB"), dtype=np.float64)
    assert np.abs(rgb[..., 0] - rgb[..., 2]).mean() > 3  # colour frames, not a gray digit
    caps = json.loads(paths[-1].read_text())
    assert set(caps) == set(MODEL_FREE)
    for name in ("forward_10_steps.png", "forward_linear_strip.png", "forward_cosine_strip.png"):
        assert "Image: astronaut.jpg" in caps[name] and "NASA" in caps[name] and "MNIST" not in caps[name]


def test_make_figures_is_seeded(tmp_path):
    a = F.make_figures(None, tmp_path / "a", image=DIGIT, seed=1)
    b = F.make_figures(None, tmp_path / "b", image=DIGIT, seed=1)
    c = F.make_figures(None, tmp_path / "c", image=DIGIT, seed=2)
    read = lambda p: np.asarray(Image.open(p))
    assert np.array_equal(read(a[0]), read(b[0]))
    assert not np.array_equal(read(a[0]), read(c[0]))


def test_make_figures_with_model(tmp_path):
    model = load_model(make_tiny_checkpoint(tmp_path / "tiny20", num_steps=20), device="cpu")
    paths = F.make_figures(model, tmp_path / "figs", image=DIGIT, seed=0)
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
    for name in WITH_MODEL:  # the default sampler, named as it ran
        assert F.describe_sampler("ddpm", "beta_tilde") in caps[name], caps[name]


def test_captions_follow_the_variance_of_the_walk(tmp_path):
    model = load_model(make_tiny_checkpoint(tmp_path / "tiny20", num_steps=20), device="cpu")
    runs = {v: F.make_figures(model, tmp_path / v, image=DIGIT, seed=0, variance=v) for v in ("beta_tilde", "beta")}
    caps = {v: json.loads(p[-1].read_text()) for v, p in runs.items()}
    for name in WITH_MODEL:
        assert "sigma_t^2 = beta_tilde_t" in caps["beta_tilde"][name]
        assert "sigma_t^2 = beta_t," in caps["beta"][name] and "beta_tilde" not in caps["beta"][name]
    read = lambda v: np.asarray(Image.open(tmp_path / v / "reverse_10_steps.png"))
    assert not np.array_equal(read("beta_tilde"), read("beta"))  # the variance really reached the walk


def test_reverse_walk_records_the_requested_steps(tiny_model):
    # the shared tiny model has T = 1000; the same network on a 12-step schedule keeps the walk short
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
    assert walk["description"] == F.describe_walk("ddpm", "beta_tilde", chain=make_chain(short.schedule),
                                                  labels=[3, 7], guidance=2.0, seed=0)


def test_figure_walk_describes_the_sampler_it_ran(tiny_model):
    short = DiffusionModel(net=tiny_model.net, schedule=make_schedule("linear", 6), image_size=28, channels=1,
                           class_names=tiny_model.class_names, config={}, path="")
    kw = dict(labels=torch.tensor([1]), num_images=1, seed=3, guidance=1.0, strip_ts=[6, 0])
    walks = {v: F.figure_walk(short, variance=v, **kw) for v in ("beta", "beta_tilde")}
    walks["ddim"] = F.figure_walk(short, method="ddim", eta=0.0, **kw)
    assert "sigma_t^2 = beta_t," in walks["beta"]["description"]
    assert "sigma_t^2 = beta_tilde_t" in walks["beta_tilde"]["description"]
    assert "DDIM" in walks["ddim"]["description"] and "eta = 0" in walks["ddim"]["description"]
    assert len({w["description"] for w in walks.values()}) == 3
    assert not torch.equal(walks["beta"]["x0"], walks["beta_tilde"]["x0"])  # and each setting reached the sampler
    assert not torch.equal(walks["ddim"]["x0"], walks["beta_tilde"]["x0"])
