"""Training: runs end to end on a tiny model, resumes exactly, honours the time budget, trains from folders."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from explainer.model.checkpoint import load_model
from explainer.model.data import load_image_folder, load_mnist
from explainer.model.training import TrainConfig, lr_at, train

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
                                                            bf16=False, schedule="cosine", lr=1e-3, device="cpu")])
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
