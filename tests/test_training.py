"""Training: runs end to end on a tiny model, resumes exactly, honours the time budget, trains from folders and .npz."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from explainer.diffusion.forward import q_sample
from explainer.model.checkpoint import load_model
from explainer.model.data import load_image_folder, load_mnist, load_npz
from explainer.model.training import TrainConfig, Trainer, lr_at, train

TINY = dict(base_channels=8, channel_mults=(1, 2), attention_levels=(1,), batch_size=8, warmup=2,
            sample_every=0, save_every=3, device="cpu")


def test_mnist_split_is_disjoint_and_balanced():
    train_set, test_set = load_mnist("train"), load_mnist("test")
    assert len(train_set) == 4500 and len(test_set) == 500
    assert np.bincount(test_set.labels).tolist() == [50] * 10
    all_set = load_mnist("all")
    # the held-out images are exactly the last 50 of each digit in the bundled file
    for c in range(10):
        assert np.array_equal(all_set.images[all_set.labels == c][-50:], test_set.images[test_set.labels == c])
    x, y = test_set.tensors()
    assert x.shape == (500, 1, 28, 28) and x.min() >= -1 and x.max() <= 1 and y.dtype == torch.long


def test_train_saves_loadable_checkpoint_and_resumes_exactly(tmp_path):
    out = tmp_path / "run"
    train(TrainConfig(out=str(out), train_steps=6, **TINY), progress=False)
    straight = load_file(str(out / "model.safetensors"))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["training"]["steps"] == 6 and cfg["training"]["final"] is True
    assert cfg["class_names"] == [str(i) for i in range(10)]
    model = load_model(out, device="cpu")
    assert model.num_classes == 10 and model.schedule.T == 1000

    # a second straight run is bit-identical (seeded init, data order, noise)
    again = tmp_path / "again"
    train(TrainConfig(out=str(again), train_steps=6, **TINY), progress=False)
    second = load_file(str(again / "model.safetensors"))
    assert all(torch.equal(straight[k], second[k]) for k in straight)

    # stop at 3, resume to 6: identical to the straight run (optimizer, EMA and RNG state are restored).
    # With warmup=2 the learning rates of steps 0-2 do not depend on train_steps, so the runs are comparable.
    out2 = tmp_path / "resumed"
    train(TrainConfig(out=str(out2), train_steps=3, **TINY), progress=False)
    train(TrainConfig(out=str(out2), train_steps=6, **TINY), progress=False)
    resumed = load_file(str(out2 / "model.safetensors"))
    for k in straight:
        assert torch.allclose(straight[k], resumed[k], atol=1e-6), k


def test_resume_continues_from_saved_state(tmp_path):
    out = tmp_path / "run"
    train(TrainConfig(out=str(out), train_steps=6, **TINY), progress=False)
    first = load_file(str(out / "model.safetensors"))
    train(TrainConfig(out=str(out), train_steps=9, **TINY), progress=False)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["training"]["steps"] == 9
    second = load_file(str(out / "model.safetensors"))
    assert any(not torch.equal(first[k], second[k]) for k in first)


def test_max_minutes_stops_and_saves(tmp_path):
    out = tmp_path / "run"
    train(TrainConfig(out=str(out), train_steps=10_000, max_minutes=0.0, **TINY), progress=False)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["training"]["steps"] == 0 and cfg["training"]["final"] is False


def test_lr_schedule_warms_up_and_decays():
    cfg = TrainConfig(lr=1e-3, warmup=10, train_steps=110)
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(110, cfg) == pytest.approx(1e-4)
    assert all(lr_at(s, cfg) >= lr_at(s + 1, cfg) for s in range(10, 110))


def _write_folder(root, classes):
    rng = np.random.default_rng(0)
    for c in classes:
        d = root / c if c else root
        d.mkdir(parents=True, exist_ok=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(d / f"{i}.png")
    (root / "notes.txt").write_text("not an image")


def test_image_folder_with_classes_and_flat(tmp_path):
    _write_folder(tmp_path / "cls", ["cats", "dogs"])
    (tmp_path / "cls" / "dogs" / "broken.png").write_bytes(b"not a png")
    ds = load_image_folder(tmp_path / "cls", size=16, channels=3)
    assert ds.class_names == ["cats", "dogs"] and ds.images.shape == (6, 16, 16, 3)
    assert "1 skipped" in ds.description
    _write_folder(tmp_path / "flat", [""])
    flat = load_image_folder(tmp_path / "flat", size=16, channels=1)
    assert flat.class_names == [] and flat.images.shape == (3, 16, 16)
    with pytest.raises(FileNotFoundError):
        load_image_folder(tmp_path / "missing")


def test_train_on_folder_unconditional_rgb(tmp_path):
    _write_folder(tmp_path / "flat", [""])
    out = tmp_path / "run"
    train(TrainConfig(out=str(out), data=str(tmp_path / "flat"), image_size=16, channels=3, conditional=False,
                      train_steps=2, **TINY), progress=False)
    model = load_model(out, device="cpu")
    assert model.num_classes == 0 and model.channels == 3 and model.image_size == 16


def test_cli_train_help_and_bad_data(tmp_path):
    r = subprocess.run([sys.executable, "-m", "explainer", "train", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--max-minutes" in r.stdout
    r = subprocess.run([sys.executable, "-m", "explainer", "train", "--data", str(tmp_path / "nope"), "--out",
                        str(tmp_path / "o"), "--quiet"], capture_output=True, text=True)
    assert r.returncode != 0 and "image folder not found" in r.stderr


@pytest.mark.parametrize("cfg", [TrainConfig(), TrainConfig(conditional=False, channel_mults=(1, 2), max_minutes=5.0,
                                                            bf16=False, schedule="cosine", lr=1e-3, device="cpu"),
                                 TrainConfig(class_balance=True, min_snr_gamma=5.0, init_from="checkpoints/emoji-ddpm")])
def test_recorded_command_reproduces_the_config(cfg):
    """The command stored in a checkpoint's provenance parses back into the same training config."""
    from dataclasses import asdict

    from explainer.__main__ import build_parser, train_config
    from explainer.model.training import _cli_args

    args = build_parser().parse_args(["train"] + " ".join(_cli_args(cfg)).split())
    assert asdict(train_config(args)) == asdict(cfg)


def test_training_never_silently_replaces_a_finished_model(tmp_path):
    """A folder with a model but no training state (the shipped checkpoint, say) is refused without --overwrite."""
    out = tmp_path / "run"
    train(TrainConfig(out=str(out), train_steps=3, **TINY), progress=False)
    (out / "train_state.pt").unlink()  # as in the repository, where the state is not committed
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="--overwrite"):
        train(TrainConfig(out=str(out), train_steps=3, **TINY), progress=False)
    assert (out / "model.safetensors").read_bytes() == before
    r = subprocess.run([sys.executable, "-m", "explainer", "train", "--out", str(out), "--quiet"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "already holds a trained model" in r.stderr and "Traceback" not in r.stderr
    assert (out / "model.safetensors").read_bytes() == before
    train(TrainConfig(out=str(out), train_steps=3, seed=1, overwrite=True, **TINY), progress=False)
    assert (out / "model.safetensors").read_bytes() != before


def test_every_step_loss_is_recorded(tmp_path):
    """Losses are read back from the device in batches; none is lost at a save, a stop or a resume."""
    out = tmp_path / "run"
    train(TrainConfig(out=str(out), train_steps=7, **TINY), progress=False)  # saves at steps 3 and 6, then 7
    st = torch.load(out / "train_state.pt", weights_only=True)
    assert len(st["losses"]) == 7 and all(np.isfinite(st["losses"])) and min(st["losses"]) > 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["training"]["loss_last_1000"] == pytest.approx(float(np.mean(st["losses"])))
    train(TrainConfig(out=str(out), train_steps=9, **TINY), progress=False)
    again = torch.load(out / "train_state.pt", weights_only=True)["losses"]
    assert len(again) == 9 and again[:7] == st["losses"]


def test_training_noises_with_q_sample(tmp_path):
    """A training batch is Algorithm 1 of Ho et al. 2020 from the seeded generator, noised by q_sample (eq. 4)."""
    cfg = TrainConfig(out=str(tmp_path / "run"), **TINY)
    trainer = Trainer(cfg, progress=False)
    b = trainer.batch()
    assert torch.equal(b.x_t, q_sample(b.x0, b.t, b.eps, trainer.schedule))
    ab = torch.from_numpy(trainer.schedule.alpha_bar_at(b.t.numpy())).view(-1, 1, 1, 1)
    torch.testing.assert_close(b.x_t.double(), ab.sqrt() * b.x0.double() + (1 - ab).sqrt() * b.eps.double(),
                               rtol=0, atol=1e-6)
    # the draws, in order: data indices, t, eps, label dropout
    gen = torch.Generator().manual_seed(cfg.seed)
    idx = torch.randint(0, len(trainer.x_all), (8,), generator=gen)
    assert torch.equal(b.x0, trainer.x_all[idx]) and b.x0.shape == (8, 1, 28, 28)
    assert torch.equal(b.t, torch.randint(1, cfg.num_steps + 1, (8,), generator=gen))
    assert torch.equal(b.eps, torch.randn(8, 1, 28, 28, generator=gen))
    drop = torch.rand(8, generator=gen) < cfg.label_dropout
    assert torch.equal(b.labels, torch.where(drop, 10, trainer.y_all[idx]))


def test_q_sample_gathers_on_the_tensors_device():
    """No host read of t: on the meta device (which has no data to copy back) q_sample still runs."""
    from explainer.diffusion.schedules import make_schedule
    x0 = torch.empty(4, 3, 8, 8, device="meta")
    t = torch.empty(4, dtype=torch.long, device="meta")
    x_t = q_sample(x0, t, torch.empty_like(x0), make_schedule("linear", 1000))
    assert x_t.device.type == "meta" and x_t.shape == x0.shape


def _write_npz(path, n=12, size=16, channels=3, **extra):
    rng = np.random.default_rng(0)
    shape = (n, size, size) if channels == 1 else (n, size, size, channels)
    arrays = dict(images=rng.integers(0, 256, shape, dtype=np.uint8), labels=np.arange(n) % 3,
                  class_names=np.array(["smile", "heart", "star"]), held_out=np.arange(n) % 4 == 3,
                  names=np.array([f"emoji {i}" for i in range(n)]), vendors=np.array(["a", "b"] * (n // 2)),
                  attribution=np.array("test images, CC0"))
    arrays.update(extra)
    np.savez_compressed(path, **{k: v for k, v in arrays.items() if v is not None})
    return arrays


def test_load_npz_splits_and_checks_keys(tmp_path):
    a = _write_npz(tmp_path / "e.npz")
    train_set, test_set, all_set = (load_npz(tmp_path / "e.npz", s) for s in ("train", "test", "all"))
    assert (len(train_set), len(test_set), len(all_set)) == (9, 3, 12)
    assert np.array_equal(test_set.images, a["images"][a["held_out"]]) and test_set.labels.tolist() == [0, 1, 2]
    assert train_set.names.tolist() == [f"emoji {i}" for i in range(12) if i % 4 != 3]
    assert test_set.vendors.tolist() == ["b", "b", "b"] and all_set.attribution == "test images, CC0"
    assert train_set.class_names == ["smile", "heart", "star"] and train_set.image_shape == (16, 16, 3)
    x, y = train_set.tensors()
    assert x.shape == (9, 3, 16, 16) and x.min() >= -1 and x.max() <= 1 and y.dtype == torch.long

    _write_npz(tmp_path / "gray.npz", channels=1, held_out=None, names=None, vendors=None, attribution=None)
    gray = load_npz(tmp_path / "gray.npz")  # no held_out: every image trains, and there is no test split
    assert len(gray) == 12 and gray.image_shape == (16, 16, 1) and gray.names is None and gray.attribution == ""
    with pytest.raises(ValueError, match="no held_out key"):
        load_npz(tmp_path / "gray.npz", "test")
    np.savez(tmp_path / "nolabels.npz", images=a["images"], class_names=a["class_names"])
    with pytest.raises(ValueError, match="lacks the key.* labels"):
        load_npz(tmp_path / "nolabels.npz")
    _write_npz(tmp_path / "bad.npz", labels=np.arange(12))  # labels beyond the 3 class names
    with pytest.raises(ValueError, match="labels must lie in 0..2"):
        load_npz(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError):
        load_npz(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip archive")
    with pytest.raises(ValueError, match="not an .npz file"):
        load_npz(tmp_path / "junk.npz")
    with pytest.raises(ValueError, match="split"):
        load_npz(tmp_path / "e.npz", "validation")


def test_train_on_npz(tmp_path):
    _write_npz(tmp_path / "e.npz")
    out = tmp_path / "run"
    train(TrainConfig(out=str(out), data=str(tmp_path / "e.npz"), image_size=16, channels=3, train_steps=2, **TINY),
          progress=False)
    model = load_model(out, device="cpu")
    assert model.num_classes == 3 and model.class_names == ["smile", "heart", "star"] and model.channels == 3
    data = json.loads((out / "config.json").read_text())["data"]
    assert data["num_images"] == 9 and data["attribution"] == "test images, CC0"
    with pytest.raises(ValueError, match="holds 16x16 images with 3 channel.*use --image-size 16 --channels 3"):
        train(TrainConfig(out=str(tmp_path / "other"), data=str(tmp_path / "e.npz"), **TINY), progress=False)


def test_class_balance_draws_every_class_equally_often(tmp_path):
    """MNIST's training split is nearly balanced; make it lopsided, then count the drawn classes."""
    tr = Trainer(TrainConfig(out=str(tmp_path / "b"), class_balance=True, **TINY), progress=False)
    keep = torch.cat([torch.nonzero(tr.y_all == c).flatten()[: 5 if c == 3 else 400] for c in range(10)])
    tr.x_all, tr.y_all = tr.x_all[keep], tr.y_all[keep]
    drawn = tr.y_all[tr.draw_images(40_000)]
    share = torch.bincount(drawn, minlength=10).double() / len(drawn)
    assert torch.allclose(share, torch.full((10,), 0.1, dtype=torch.float64), atol=0.006)
    idx = tr.draw_images(20_000)
    assert set(idx[tr.y_all[idx] == 3].tolist()) == set(torch.nonzero(tr.y_all == 3).flatten().tolist())
    plain = Trainer(TrainConfig(out=str(tmp_path / "p"), **TINY), progress=False)
    plain.x_all, plain.y_all = plain.x_all[keep], plain.y_all[keep]
    assert (plain.y_all[plain.draw_images(40_000)] == 3).double().mean() < 0.01  # images uniformly: class 3 is rare


def test_min_snr_weights_follow_hang_et_al():
    from explainer.diffusion.losses import min_snr_weights, simple_loss
    from explainer.diffusion.schedules import make_schedule
    s = make_schedule("linear", 1000)
    t = torch.arange(1, 1001)
    w = min_snr_weights(s, t, 5.0).double()
    ab = torch.from_numpy(s.alpha_bars.copy())
    snr = ab / (1 - ab)
    assert torch.allclose(w, torch.clamp(snr, max=5.0) / snr, rtol=1e-6)
    assert w[-1] == 1.0 and w[0] < 1e-3  # noisy steps keep weight 1, the cleanest shrink
    pred, eps = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    assert torch.allclose(simple_loss(pred, eps), torch.nn.functional.mse_loss(pred, eps))
    ws = torch.tensor([1.0, 0.0, 2.0, 0.5])
    by_hand = sum(float(ws[i]) * float(((pred[i] - eps[i]) ** 2).mean()) for i in range(4)) / 4
    assert abs(float(simple_loss(pred, eps, ws)) - by_hand) < 1e-6
    with pytest.raises(ValueError):
        min_snr_weights(s, t, 0.0)


def test_init_from_copies_weights_and_refuses_another_architecture(tmp_path):
    src = tmp_path / "src"
    train(TrainConfig(out=str(src), train_steps=2, **TINY), progress=False)
    out = tmp_path / "cont"
    train(TrainConfig(out=str(out), train_steps=0, init_from=str(src), **TINY), progress=False)
    a, b = load_file(str(src / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    cfg = json.loads((out / "config.json").read_text())
    assert f"--init-from {src}" in cfg["training"]["command"]
    with pytest.raises(ValueError, match="another architecture"):
        train(TrainConfig(out=str(tmp_path / "wide"), train_steps=1, init_from=str(src),
                          **{**TINY, "base_channels": 16}), progress=False)
