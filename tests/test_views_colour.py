"""The model views with a colour model (32x32x3, emoji class names) and with several models at once.

A tiny random colour U-Net stands in for checkpoints/emoji-ddpm: every view must keep its three channels,
agree with the samplers and formulas written out here, and name its classes as the model does.
"""
from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY, make_tiny_checkpoint
from explainer.diffusion.respacing import make_chain
from explainer.diffusion.samplers import run
from explainer.model.checkpoint import save_checkpoint
from explainer.model.emoji import CLASS_NAMES
from explainer.model.unet import UNet, UNetConfig
from explainer.paths import ASSETS
from explainer.views import arch as va
from explainer.views import inputs as vi
from explainer.views import model_slot as views
from explainer.views import noise as vn
from explainer.views import reverse as vr
from explainer.views import step as vs

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FROG = str(ASSETS / "emoji" / "2-frog-noto.png")


def make_colour_checkpoint(folder, seed: int = 1):
    """A tiny random colour U-Net (32x32x3) with the emoji data set's nine class names."""
    torch.manual_seed(seed)
    net = UNet(UNetConfig(**{**TINY, "image_size": 32, "in_channels": 3, "num_classes": len(CLASS_NAMES)}))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return save_checkpoint(folder, net, {"name": "linear", "num_steps": 1000}, list(CLASS_NAMES),
                           {"data": {"source": "random"}})


@pytest.fixture(scope="module")
def colour_ckpt(tmp_path_factory):
    return make_colour_checkpoint(tmp_path_factory.mktemp("colour") / "tiny-emoji")


@pytest.fixture(scope="module")
def colour(colour_ckpt):
    return views.load_slot(str(colour_ckpt), device="cpu", fast=False).require()


def is_colour(img: np.ndarray) -> bool:
    """An RGB picture whose channels really differ (not gray stored as RGB)."""
    img = img.astype(int)
    return img.ndim == 3 and img.shape[2] == 3 and (np.abs(img[..., 0] - img[..., 1]) > 20).mean() > 0.05


def to_u8(x: np.ndarray) -> np.ndarray:
    return np.round((np.clip(x, -1, 1) + 1) * 127.5).astype(np.uint8)


# ---- inputs: class names and uploads for a colour model ----

def test_class_words_and_choices(colour, tiny_model):
    assert vi.class_choices(colour) == ["unconditional", *CLASS_NAMES]
    assert vi.class_word(colour) == "class" and vi.image_word(colour) == "image"
    assert vi.class_word(tiny_model) == "digit class" and vi.image_word(tiny_model) == "digit"
    assert vi.default_class(colour) == "Smileys & Emotion" and vi.default_class(tiny_model) == "3"
    assert vi.example_images(colour) == vi.EMOJI_EXAMPLES and vi.example_images(tiny_model) == vi.DIGIT_EXAMPLES
    assert vi.default_example(colour) == FROG and vi.default_example(tiny_model).endswith("digit_3.png")
    assert vi.class_labels(colour, "Flags", 2).tolist() == [8, 8]
    with pytest.raises(ValueError, match="class must be one of unconditional, Smileys & Emotion") as e:
        vi.class_labels(colour, "3", 1)
    assert "digit" not in str(e.value)


def test_bundled_emoji_are_held_out_pictures_of_the_data_set():
    from explainer.model.data import load_npz
    from explainer.paths import DATA
    test = load_npz(DATA / "emoji32.npz", "test")
    assert len(vi.EMOJI_EXAMPLES) == 18
    for path in vi.EMOJI_EXAMPLES:
        img = np.asarray(Image.open(path))
        assert img.shape == (32, 32, 3)
        category = int(path.rsplit("/", 1)[-1].split("-")[0])
        same = (test.images == img).all(axis=(1, 2, 3))
        assert same.any(), path  # a held-out image, unchanged
        assert test.labels[same][0] == category


def test_uploads_become_the_models_size_and_channels(colour, tiny_model, tmp_path):
    x = vi.digit_tensor(colour, FROG)  # already 32x32 RGB: kept exactly
    ref = torch.from_numpy(np.asarray(Image.open(FROG), dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    assert x.shape == (1, 3, 32, 32) and torch.equal(x, ref)
    wide = np.zeros((60, 120, 4), dtype=np.uint8)  # transparent sides, an opaque red square in the middle
    wide[:, 30:90] = (255, 0, 0, 255)
    Image.fromarray(wide, "RGBA").save(tmp_path / "wide.png")
    x = vi.digit_tensor(colour, str(tmp_path / "wide.png"))  # centre crop: only the red square is left
    assert x.shape == (1, 3, 32, 32)
    assert torch.allclose(x[0, :, 4:28, 4:28], torch.tensor([1.0, -1.0, -1.0])[:, None, None], atol=0.02)
    assert vi.digit_tensor(tiny_model, FROG).shape == (1, 1, 28, 28)  # the MNIST model keeps the digit conversion
    gray = make_tiny_checkpoint(tmp_path / "gray32", image_size=32)
    gray_model = views.load_slot(str(gray), device="cpu", fast=False).require()
    assert vi.digit_tensor(gray_model, FROG).shape == (1, 1, 32, 32)  # 32 px grayscale: crop, resize, one channel
    with pytest.raises(ValueError, match="no image given"):
        vi.digit_tensor(colour, None)


# ---- reverse walk, scrubber, strip, GIF and the step taken apart ----

def test_colour_walk_matches_the_sampler(colour):
    u = list(vr.reverse_walk(colour, "Animals & Nature", 2.0, "DDPM", 15, "training", 3))[-1]
    walk = u.walks[0]
    assert walk.frames[0].shape == (32, 32, 3) and len(walk.frames) == 16
    assert "class Animals & Nature, guidance w = 2" in list(vr.reverse_walk(colour, "Animals & Nature", 2.0, "DDPM",
                                                                             10))[0].status
    x0 = run(colour.eps, make_chain(colour.schedule, 15), (1, 3, 32, 32), method="ddpm", labels=torch.tensor([2]),
             guidance=2.0, null_label=9, seed=3)  # x_T, then every z, from the seed's one stream
    assert np.abs(walk.frames[-1].astype(int) - to_u8(x0[0].permute(1, 2, 0).numpy())).max() <= 1
    assert is_colour(u.panels[0]) and is_colour(walk.frames[0])


def test_colour_scrubber_strip_and_gif(colour):
    walks = list(vr.reverse_walk(colour, "Flags", 1.0, "DDIM", 12, "training", 0, "DDPM vs DDIM", 12))[-1].walks
    frame = vr.walk_frame(walks, 6)
    assert is_colour(frame)
    strip = vr.walk_strip(walks)
    assert is_colour(strip) and strip.shape[1] == 10 * 64 + 9 * 4
    path = vr.GifStore().save(walks)
    with Image.open(path) as gif:
        assert gif.n_frames == 13
        gif.seek(0)
        first = np.asarray(gif.convert("RGB"))
    assert first.shape == frame.shape and is_colour(first)
    # one shared palette, no dithering: the GIF's first frame is the scrubber's first frame, colour for colour
    assert np.abs(first.astype(int) - vr.walk_frame(walks, 0).astype(int)).mean() < 8


def test_colour_step_anatomy(colour):
    from explainer.diffusion.samplers import sample
    from explainer.render.display import eps_to_uint8, to_uint8
    recs = list(sample(colour.eps, make_chain(colour.schedule, 20), (1, 3, 32, 32), method="ddpm", seed=5,
                       labels=[6], guidance=2.0, null_label=colour.null_label))
    for rec in recs[:-1]:
        parts = vs.record_step(rec, "ddpm")
        assert parts.eps.shape == parts.deterministic.shape == parts.z.shape == (32, 32, 3)
        mean = rec.x_prev[0] - rec.coefs.sigma * rec.z[0]  # x_t' = deterministic part + sigma z, per channel
        assert np.array_equal(parts.deterministic, to_uint8(mean)) and np.array_equal(parts.z, eps_to_uint8(rec.z[0]))
        assert np.array_equal(parts.eps, eps_to_uint8(rec.eps[0]))
    walks = list(vr.reverse_walk(colour, "Objects", 2.0, "DDPM", 20, "training", 5))[-1].walks
    img, text = vs.step_anatomy(walks, 9)
    assert is_colour(img) and img.shape[1] == 5 * 32 * vs.TILE_SCALE + 4 * 6 and "step 10 of 20" in text
    assert is_colour(walks[0].steps[9].z) and walks[0].steps[-1].z is None


# ---- subtract all predicted noise: a real emoji, one noise scale ----

def test_noise_removal_of_a_real_emoji(colour):
    res = vn.noise_removal(colour, "real image", FROG, "Animals & Nature", 1.0, 20, 4)
    assert res.source == "real image" and res.x0.shape == (1, 3, 32, 32)
    assert torch.equal(res.x0, vi.digit_tensor(colour, FROG))
    eps = torch.randn((1, 3, 32, 32), generator=torch.Generator().manual_seed(4))
    assert torch.equal(res.eps, eps)
    ab = colour.schedule.alpha_bar_at(np.array(res.ts))
    ab = torch.tensor(ab, dtype=torch.float32)[:, None, None, None]
    assert torch.allclose(res.x_t, ab.sqrt() * res.x0 + (1 - ab).sqrt() * eps, atol=1e-5)
    with torch.no_grad():
        eps_hat = colour.net(res.x_t, torch.tensor(res.ts), torch.full((20,), 2))  # the network at each row's step
    assert torch.allclose(res.eps_hat, eps_hat, atol=1e-5)
    assert vn.noise_removal(colour, "real digit", FROG, "Animals & Nature", 1.0, 20, 4).ts == res.ts  # the API value


def test_predicted_and_true_noise_share_one_scale(colour):
    res = vn.noise_removal(colour, "real image", FROG, "unconditional", 1.0, 10, 0)
    both = torch.cat([res.eps_hat.flatten(), res.eps.flatten()]).abs()
    s = res.eps_scale
    assert s == pytest.approx(np.ceil(float(torch.quantile(both, vn.EPS_QUANTILE)) * 10) / 10)
    assert 0.999 - 0.01 <= float((both <= s).float().mean()) <= 1.0
    img, text = vn.noise_triplet(res, 3)
    tile = 32 * vn.TRIPLET_SCALE
    pad = 6
    eps_hat_tile = img[:tile, 2 * (tile + pad):2 * (tile + pad) + tile]
    true_tile = img[:tile, 4 * (tile + pad):4 * (tile + pad) + tile]
    expect_hat = to_u8((res.eps_hat[3] / s).permute(1, 2, 0).numpy())
    expect_true = to_u8((res.eps[0] / s).permute(1, 2, 0).numpy())
    assert np.abs(eps_hat_tile[::vn.TRIPLET_SCALE, ::vn.TRIPLET_SCALE].astype(int) - expect_hat).max() <= 1
    assert np.abs(true_tile[::vn.TRIPLET_SCALE, ::vn.TRIPLET_SCALE].astype(int) - expect_true).max() <= 1
    assert f"one scale: -{s:.1f} -> black" in text and is_colour(img)
    grid = vn.noise_grid(res)
    assert is_colour(grid) and grid.shape == (2 * (2 * 32 + 14) + 6, 5 * (3 * 2 * 32 + 2) + 4 * 10, 3)
    walk = vn.noise_removal(colour, "reverse walk", None, "Flags", 2.0, 10, 0)
    assert walk.eps_scale == pytest.approx(vn.shared_scale(walk.eps_hat)) and "every eps_hat is" in vn.scale_note(walk)


# ---- architecture: x_t in colour ----

def test_colour_feature_maps(colour):
    x_t, rows = va.feature_rows(colour, FROG, 200, "Animals & Nature", 0)
    assert is_colour(x_t) and x_t.shape[1] == 6 * 32
    assert rows[0][1] == "down stage 0: 8 channels at 32x32"
    assert rows[-1][0].shape[1] >= va.FEATURE_TILE  # the output eps_hat, wide enough for its caption
    assert all(img.shape[1] >= va.FEATURE_TILE for img, _ in rows)
    assert "0..8" in va.conditioning_markdown(colour) and "32x32 -> 16x16" in va.conditioning_markdown(colour)


# ---- several models: discovery, lazy loading, failures ----

def test_discovery_offers_only_diffusion_checkpoints(tmp_path, tiny_ckpt, colour_ckpt, monkeypatch):
    root = tmp_path / "checkpoints"
    shutil.copytree(tiny_ckpt, root / "digits")
    shutil.copytree(colour_ckpt, root / "emoji")
    (root / "judge").mkdir()
    (root / "judge" / "config.json").write_text('{"format": "ddpm-explainer-classifier/1"}')
    (root / "training-not-saved-yet").mkdir()
    (root / "broken-json").mkdir()
    (root / "broken-json" / "config.json").write_text("{not json")
    (root / "diffusers").mkdir()
    (root / "diffusers" / "config.json").write_text('{"_class_name": "UNet2DModel", "sample_size": 32}')
    assert [p.name for p in views.find_checkpoints(root)] == ["diffusers", "digits", "emoji"]
    monkeypatch.setenv(views.CHECKPOINT_ENV, str(root / "emoji"))
    reg = views.ModelRegistry.discover(root, device="cpu", fast=False)
    assert reg.names == ["emoji", "diffusers", "digits"] and reg.default == "emoji"  # the default first
    assert reg.class_names("emoji") == list(CLASS_NAMES) and not reg.loaded("emoji")  # read without loading
    monkeypatch.setenv(views.CHECKPOINT_ENV, str(tmp_path / "elsewhere" / "missing"))
    reg = views.ModelRegistry.discover(root, device="cpu", fast=False)
    assert reg.names[0] == "missing" and not reg.slot().ok and reg.slot("digits").ok  # still offered, with a reason
    with pytest.raises(ValueError, match="model must be one of missing, diffusers, digits, emoji"):
        reg.slot("nope")


def test_each_model_is_loaded_once_and_kept(tiny_ckpt, colour_ckpt, monkeypatch):
    calls = []
    real = views.load_model

    def counting(path, device=None):
        calls.append(path)
        return real(path, device=device)
    monkeypatch.setattr(views, "load_model", counting)
    reg = views.ModelRegistry({"digits": str(tiny_ckpt), "emoji": str(colour_ckpt)}, device="cpu", fast=False)
    got = []
    threads = [threading.Thread(target=lambda: got.append(reg.require("emoji"))) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len({id(m) for m in got}) == 1 and calls == [str(colour_ckpt)]  # one load for four requests at once
    assert reg.require("emoji") is got[0] and reg.require() is reg.require("digits")
    assert calls == [str(colour_ckpt), str(tiny_ckpt)]


def test_a_damaged_second_model_leaves_the_first_working(tmp_path, tiny_ckpt, colour_ckpt):
    bad = tmp_path / "emoji"
    shutil.copytree(colour_ckpt, bad)
    w = bad / "model.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    reg = views.ModelRegistry({"digits": str(tiny_ckpt), "emoji": str(bad)}, device="cpu", fast=False)
    slot = reg.slot("emoji")
    assert not slot.ok and "cannot be read" in slot.error and "Pick another model" in slot.error
    assert "unavailable with `emoji`" in slot.notice()
    with pytest.raises(views.ModelUnavailable, match="cannot be read"):
        reg.require("emoji")
    assert reg.slot("emoji") is slot  # not tried again while the files stay as they are
    assert list(vr.reverse_walk(reg.require("digits"), "3", 1.0, "DDIM", 10))[-1].finished
    shutil.copy(colour_ckpt / "model.safetensors", w)  # the checkpoint is complete again: loaded on next use
    assert reg.slot("emoji").ok and reg.require("emoji").channels == 3


def test_a_registry_of_one_slot(tiny_ckpt, tmp_path):
    slot = views.load_slot(str(tiny_ckpt), device="cpu", fast=False)
    reg = views.ModelRegistry.of(slot)
    assert reg.names == [tiny_ckpt.name] and reg.slot() is slot
    missing = views.ModelRegistry.of(views.load_slot(str(tmp_path / "none")))
    assert not missing.slot().ok and "python -m explainer train" in missing.slot().error
