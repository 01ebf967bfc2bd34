"""Evaluation of any class-conditional model: the judge on colour images, the memorisation check, the report."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_tiny_checkpoint
from explainer.model.checkpoint import load_model
from explainer.model.data import load_npz
from explainer.paths import CHECKPOINTS, DEFAULT_CLASSIFIER, ROOT
from explainer.quality import classifier as cl
from explainer.quality import evaluate as ev

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 16
NAMES = ["red", "green", "blue"]
TRAIN_COUNTS = (24, 10, 8)  # imbalanced, as the emoji categories are
TEST_COUNTS = (6, 3, 2)


def colour_images(rng, label: int, n: int) -> np.ndarray:
    """n white 16x16 RGB pictures, each with one square of the class's colour at a random place and size."""
    out = np.full((n, SIZE, SIZE, 3), 255, np.uint8)
    for i in range(n):
        s = rng.integers(5, 10)
        y, x = rng.integers(0, SIZE - s, size=2)
        colour = np.full(3, 40)
        colour[label] = 220
        out[i, y:y + s, x:x + s] = colour + rng.integers(-30, 30, size=3)
    return out


def write_tiny_npz(path, seed: int = 0):
    """A tiny colour data set with the keys of data/emoji32.npz: 3 classes, imbalanced, with a held-out split."""
    rng = np.random.default_rng(seed)
    images, labels, held = [], [], []
    for c, (n_train, n_test) in enumerate(zip(TRAIN_COUNTS, TEST_COUNTS)):
        images.append(colour_images(rng, c, n_train + n_test))
        labels += [c] * (n_train + n_test)
        held += [False] * n_train + [True] * n_test
    n = len(labels)
    np.savez(path, images=np.concatenate(images), labels=np.array(labels, np.int64), class_names=np.array(NAMES),
             held_out=np.array(held), names=np.array([f"pic{i}" for i in range(n)]),
             vendors=np.array(["a", "b"] * (n // 2) + ["a"] * (n % 2)), attribution=np.array("made in the test"))
    return path


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory):
    return write_tiny_npz(tmp_path_factory.mktemp("npz") / "tiny.npz")


@pytest.fixture(scope="module")
def tiny_judge(tiny_npz, tmp_path_factory):
    cfg = cl.ClassifierTrainConfig(epochs=40, batch_size=16, lr=3e-3, balance=True, max_rotate=5.0, max_scale=0.05)
    model, info = cl.train_classifier(cfg, cl.ClassifierConfig(c1=8, c2=16, features=32), data=tiny_npz, max_steps=60)
    folder = cl.save_classifier(model, info, tmp_path_factory.mktemp("judge") / "tiny-classifier")
    return model, info, folder


@pytest.fixture(scope="module")
def colour_ckpt(tiny_npz, tiny_judge, tmp_path_factory):
    """A tiny random colour U-Net (T = 20) whose config names the tiny npz as its data and the tiny judge."""
    folder = make_tiny_checkpoint(tmp_path_factory.mktemp("ev") / "tiny-ddpm", num_steps=20, image_size=SIZE,
                                  in_channels=3, num_classes=3)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["class_names"] = NAMES
    cfg["data"]["source"] = str(tiny_npz)
    cfg["judge"] = str(tiny_judge[2])
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


@pytest.fixture(scope="module")
def colour_model(colour_ckpt):
    return load_model(colour_ckpt, device="cpu")


# ---------------------------------------------------------------- the judge
def test_judge_takes_its_shape_and_classes_from_the_data(tiny_judge):
    model, info, _ = tiny_judge
    c = model.config
    assert (c.image_size, c.channels, c.num_classes) == (SIZE, 3, 3)
    assert info["class_names"] == NAMES
    assert model(torch.zeros(2, 3, SIZE, SIZE)).shape == (2, 3)
    with pytest.raises(ValueError, match=rf"\[B,3,{SIZE},{SIZE}\]"):
        model.features(torch.zeros(2, 1, 28, 28))
    assert info["data"]["test"].startswith("load_npz(") and info["data"]["train"].endswith(f"{sum(TRAIN_COUNTS)} images")
    assert info["data"]["source"] == "made in the test"
    assert set(info["per_class_test_accuracy"]) == set(NAMES)


def test_judge_learns_the_colours(tiny_judge):
    _, info, _ = tiny_judge
    assert info["test_accuracy"] >= 0.9 and info["balanced_test_accuracy"] >= 0.9


def test_judge_saves_and_loads(tiny_judge, tiny_npz):
    model, info, folder = tiny_judge
    loaded, cfg = cl.load_classifier(folder)
    assert cfg["class_names"] == NAMES and cfg["arch"]["image_size"] == SIZE and cfg["arch"]["channels"] == 3
    x, y = load_npz(tiny_npz, "test").tensors()
    p1, f1 = cl.predict(model, x)
    p2, f2 = cl.predict(loaded, x)
    assert torch.equal(p1, p2) and torch.allclose(f1, f2)
    assert cfg["test_accuracy"] == pytest.approx(float((p2 == y).double().mean()))


def test_digit_judge_config_keeps_loading():
    model, cfg = cl.load_classifier(DEFAULT_CLASSIFIER)
    assert (model.config.image_size, model.config.channels) == (28, 1)
    assert cfg["class_names"] == [str(i) for i in range(10)]


def test_balanced_sampling_draws_every_class_equally(tiny_npz):
    y = torch.from_numpy(load_npz(tiny_npz, "train").labels)
    gen = torch.Generator().manual_seed(0)
    drawn = torch.cat([cl.epoch_order(y, True, gen) for _ in range(300)])
    share = torch.bincount(y[drawn], minlength=3).double() / len(drawn)
    assert torch.allclose(share, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.02)
    plain = cl.epoch_order(y, False, gen)
    assert torch.equal(plain.sort().values, torch.arange(len(y)))  # a permutation: every image once


def test_augment_keeps_a_white_background(tiny_npz):
    x, _ = load_npz(tiny_npz, "train").tensors()
    bg = cl.border_background(x)
    assert torch.equal(bg, torch.ones(3))
    pics = torch.ones(8, 3, SIZE, SIZE)
    pics[:, :, 6:10, 6:10] = -1.0  # a dark square in the middle of white
    y = cl.augment(pics, cl.ClassifierTrainConfig(max_shift=3), torch.Generator().manual_seed(0), bg)
    assert not torch.allclose(y, pics)
    assert torch.allclose(y[:, :, 0, 0], torch.ones(8, 3), atol=1e-5)  # corners stay white, not black


def test_load_data_rejects_folders(tmp_path):
    with pytest.raises(ValueError, match="held-out split"):
        cl.load_data(tmp_path, "train")
    with pytest.raises(FileNotFoundError):
        cl.load_data(tmp_path / "missing.npz", "train")


def test_classifier_cli(tiny_npz, tmp_path, capsys):
    out = tmp_path / "j"
    assert cl.main(["--data", str(tiny_npz), "--out", str(out), "--epochs", "1", "--balance"]) == 0
    assert json.loads((out / "config.json").read_text())["train"]["balance"] is True
    with pytest.raises(SystemExit):
        cl.main(["--data", str(tiny_npz)])  # no --out for data other than mnist
    assert "--out is required" in capsys.readouterr().err


def test_shipped_emoji_judge_reproduces_its_accuracy():
    folder = CHECKPOINTS / "emoji-classifier"
    if not (folder / "config.json").is_file():
        pytest.skip("no emoji judge in checkpoints/")
    model, cfg = cl.load_classifier(folder)
    x, y = cl.load_data(cfg["data"]["path"], "test").tensors()
    pred, _ = cl.predict(model, x)
    assert cfg["test_accuracy"] == pytest.approx(float((pred == y).double().mean()), abs=1e-9)
    assert cfg["class_names"][1] == "People & Body" and cfg["train"]["balance"] is True
    assert str(ROOT) not in (folder / "config.json").read_text()


def test_shipped_emoji_report_holds_no_absolute_paths():
    path = CHECKPOINTS / "emoji-ddpm" / "eval.json"
    if not path.is_file():
        pytest.skip("no emoji evaluation in checkpoints/")
    text = path.read_text()
    rep = json.loads(text)
    assert rep["model"]["path"] == "checkpoints/emoji-ddpm"
    assert rep["classifier"]["source"] == "checkpoints/emoji-classifier"
    assert rep["data"]["source"] == "data/emoji32.npz"
    assert str(ROOT) not in text and all(not g.startswith("/") for g in rep["grids"])


# ---------------------------------------------------------------- memorisation
def test_nearest_neighbours_match_brute_force():
    rng = np.random.default_rng(0)
    refs = rng.uniform(-1, 1, size=(70, 3, 4, 4))
    queries = np.concatenate([rng.uniform(-1, 1, size=(25, 3, 4, 4)), refs[[3, 40]] + 0.01])
    d, i = ev.nearest_neighbours(torch.from_numpy(queries).float(), torch.from_numpy(refs).float(), chunk=8)
    q32, r32 = queries.astype(np.float32).reshape(len(queries), -1), refs.astype(np.float32).reshape(len(refs), -1)
    all_d = np.sqrt(((q32[:, None].astype(np.float64) - r32[None].astype(np.float64)) ** 2).sum(-1))
    assert np.array_equal(i, all_d.argmin(1))
    np.testing.assert_allclose(d, all_d.min(1), rtol=1e-12)
    assert list(i[-2:]) == [3, 40]


def test_planted_copy_is_a_near_copy_and_noise_is_not(tiny_npz):
    train, test = load_npz(tiny_npz, "train"), load_npz(tiny_npz, "test")
    x_train, _ = train.tensors()
    x_test, _ = test.tensors()
    held, _ = ev.nearest_neighbours(x_test, x_train)
    threshold = ev.near_copy_threshold(held, 1.0)
    assert threshold > 0
    noise = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    samples = torch.cat([x_train[[5]], noise])
    d, i = ev.nearest_neighbours(samples, x_train)
    assert d[0] == 0.0 and i[0] == 5
    mem = ev.memorisation(d, [0, 1], threshold, 3)
    assert mem["near_copies"] == 1 and mem["per_class_near_copy_share"] == [1.0, 0.0, None]


def test_weighted_reference_counts_every_class_the_same():
    y = np.array([0] * 6 + [1] * 2 + [2] * 1)
    w = ev.class_weights(y)
    assert np.allclose([w[y == c].sum() for c in range(3)], 1 / 3)
    assert ev.class_weights(np.array([0, 0, 1, 1])) is None
    f = np.random.default_rng(1).normal(size=(9, 4))
    mu, _ = ev.feature_stats(f, w)
    assert np.allclose(mu, np.mean([f[y == c].mean(0) for c in range(3)], axis=0))
    _, s = ev.feature_stats(f, np.ones(9))
    assert np.allclose(s, np.cov(f, rowvar=False))  # equal weights: the plain unbiased covariance


# ---------------------------------------------------------------- the report
@pytest.fixture(scope="module")
def colour_report(colour_model, tmp_path_factory):
    grids = tmp_path_factory.mktemp("grids")
    rep = ev.evaluate(colour_model, num_per_class=3, guidance_scales=[1.0, 2.0], steps=3, chunk_size=9,
                      grid_dir=grids, grid_per_class=2)
    return rep, grids


def test_colour_report(colour_report, tiny_npz, tiny_judge):
    rep, grids = colour_report
    json.dumps(rep)
    s = rep["summary"]
    assert s["num_samples"] == 9 and s["fd_floor"] > 0
    assert s["classifier_test_acc"] == pytest.approx(tiny_judge[1]["test_accuracy"], abs=1e-4)
    for w in ("g1", "g2"):
        assert 0 <= s[f"acc_3steps_{w}"] <= 1 and s[f"fd_3steps_{w}"] > 0
        assert 0 <= s[f"near_copy_share_3steps_{w}"] <= 1
    assert rep["data"]["class_names"] == NAMES and rep["data"]["source"] == str(tiny_npz)
    assert rep["classifier"]["source"] == str(tiny_judge[2])
    assert len(rep["classifier"]["per_class_test_accuracy"]) == 3
    assert rep["reference"]["weights"].startswith("1 / (K n_c)")  # the held-out classes are imbalanced
    assert "load_npz(" in rep["floor"]["how"] and rep["floor"]["n"] == 9
    m = rep["memorisation"]
    assert m["threshold"] > 0 and m["train_images"] == sum(TRAIN_COUNTS)
    for r in rep["results"]:
        assert len(r["per_class_accuracy"]) == 3 and len(r["memorisation"]["per_class_near_copy_share"]) == 3
        assert r["memorisation"]["closest"][0]["train_name"].startswith("pic")
    # random weights draw noise: far from the pictures, no near-copies
    assert all(r["memorisation"]["near_copy_share"] == 0 for r in rep["results"])
    assert min(r["fd"] for r in rep["results"]) > s["fd_floor"]
    names = sorted(p.name for p in grids.iterdir())
    assert names == ["grid_3steps_g1.png", "grid_3steps_g2.png"]
    with Image.open(grids / names[0]) as im:  # 3 rows of 2 pictures (32 px each), titles on the left
        assert im.height >= 3 * 2 * SIZE and im.width >= 2 * 2 * SIZE


def test_generated_copies_of_training_images_are_caught(colour_model, tiny_npz, monkeypatch):
    train = load_npz(tiny_npz, "train")
    x_train, y_train = train.tensors()

    def copies(model, labels, *args, **kwargs):  # every sample is a training image of its class
        return torch.stack([x_train[torch.nonzero(y_train == c).flatten()[0]] for c in labels.tolist()])

    monkeypatch.setattr(ev, "generate", copies)
    rep = ev.evaluate(colour_model, num_per_class=2, guidance_scales=[1.0], steps=2, timing=False)
    mem = rep["results"][0]["memorisation"]
    assert mem["near_copy_share"] == 1.0 and mem["nearest_train_distance"]["median"] == 0.0
    assert rep["results"][0]["fd"] >= 0


def test_judge_lookup_convention(colour_model, tiny_judge):
    import dataclasses
    assert ev.judge_dir(colour_model, "x.npz") == tiny_judge[2]  # the config's "judge" key
    bare = dataclasses.replace(colour_model, config={k: v for k, v in colour_model.config.items() if k != "judge"},
                               path=str(CHECKPOINTS / "emoji-ddpm"))
    assert ev.judge_dir(bare, "data/emoji32.npz") == CHECKPOINTS / "emoji-classifier"
    assert ev.judge_dir(dataclasses.replace(bare, path="/somewhere/else"), "mnist") == DEFAULT_CLASSIFIER
    rel = dataclasses.replace(bare, config={**bare.config, "judge": "checkpoints/x-classifier"})
    assert ev.judge_dir(rel, "mnist") == ROOT / "checkpoints" / "x-classifier"


def test_wrong_judge_or_unknown_data_is_refused(colour_model, colour_ckpt, tiny_npz):
    with pytest.raises(ValueError, match="the judge takes 1x28x28"):
        ev.evaluate(colour_model, num_per_class=1, guidance_scales=[1.0], steps=2, timing=False,
                    classifier_dir=DEFAULT_CLASSIFIER)
    import dataclasses
    unknown = dataclasses.replace(colour_model, config={**colour_model.config, "data": {"source": "random"}})
    with pytest.raises(ValueError, match="--data"):
        ev.evaluate(unknown, num_per_class=1, guidance_scales=[1.0], steps=2, timing=False)
    with pytest.raises(ValueError, match=r"num_per_class must be an integer in 1\.\.8"):
        ev.evaluate(colour_model, num_per_class=9, guidance_scales=[1.0], steps=2, timing=False)


def test_cli_evaluate_colour(colour_ckpt, tiny_npz, tiny_judge, tmp_path):
    from explainer.__main__ import main
    cfg = json.loads((colour_ckpt / "config.json").read_text())
    assert cfg["data"]["source"] == str(tiny_npz)
    out = tmp_path / "e.json"
    assert main(["evaluate", "--checkpoint", str(colour_ckpt), "--device", "cpu", "--num-per-class", "1",
                 "--guidance", "1", "--steps", "2", "--data", str(tiny_npz), "--classifier", str(tiny_judge[2]),
                 "--grid-dir", str(tmp_path / "g"), "--out", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["summary"]["acc_2steps_g1"] == rep["results"][0]["accuracy"]
    assert (tmp_path / "g" / "grid_2steps_g1.png").is_file()
    assert main(["evaluate", "--checkpoint", str(colour_ckpt), "--device", "cpu", "--num-per-class", "1",
                 "--guidance", "1", "--steps", "2", "--data", str(tmp_path / "none.npz"), "--out", str(out)]) == 2


def test_shipped_emoji_card_states_the_reports_numbers():
    """The model card's table row of every guidance scale carries eval.json's accuracy and FD (no stale numbers)."""
    folder = CHECKPOINTS / "emoji-ddpm"
    if not (folder / "eval.json").is_file():
        pytest.skip("no emoji evaluation in checkpoints/")
    card = (folder / "MODEL_CARD.md").read_text()
    summary = json.loads((folder / "eval.json").read_text())["summary"]
    config = json.loads((folder / "config.json").read_text())
    assert config["metrics"] == summary
    assert json.loads((folder / "eval.json").read_text())["sampling"]["clip_x0"] == config["recommended_clip_x0"]
    scales = [k.removeprefix("acc_100steps_g") for k in summary if k.startswith("acc_100steps_g")]
    assert len(scales) >= 3 and str(int(config["recommended_guidance"])) in scales
    for w in scales:
        acc, fd = summary[f"acc_100steps_g{w}"], summary[f"fd_100steps_g{w}"]
        row = f"| {acc * 100:.1f} % | {acc / summary['classifier_balanced_test_acc']:.2f} | {fd:.1f} |"
        assert row in card.replace("**", ""), row
    assert f"{config['training']['steps']:,}" in card
