"""Evaluation: the Frechet distance against analytic cases, the digit classifier, and the report."""
from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import make_tiny_checkpoint
from explainer.quality import evaluate as ev
from explainer.model.checkpoint import load_model
from explainer.quality.classifier import (DEFAULT_CLASSIFIER, ClassifierError, ClassifierTrainConfig, ImageClassifier,
                                  accuracy, augment, load_classifier, train_classifier)
from explainer.model.data import load_mnist
from explainer.quality.evaluate import feature_stats, frechet_distance, frechet_distance_features
from explainer.diffusion.respacing import make_chain
from explainer.diffusion.schedules import make_schedule


def random_rotation(rng, d):
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def random_spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.1 * np.eye(d)


# ---------------------------------------------------------------- Frechet distance
def test_fd_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(0).normal(size=(300, 16)) * np.linspace(0.1, 3, 16)
    assert frechet_distance_features(x, x) == pytest.approx(0.0, abs=1e-8)


def test_fd_one_dimensional_gaussians():
    # W2^2 between N(m1, s1^2) and N(m2, s2^2) is (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance([1.0], [[4.0]], [-2.0], [[0.25]]) == pytest.approx(9.0 + 1.5 ** 2, rel=1e-12)


def test_fd_commuting_covariances_analytic():
    # S1 = Q D1 Q^T, S2 = Q D2 Q^T: Tr (S1 S2)^(1/2) = sum sqrt(d1 d2), so FD = |dmu|^2 + sum (sqrt d1 - sqrt d2)^2
    rng = np.random.default_rng(1)
    d = 12
    q = random_rotation(rng, d)
    d1, d2 = rng.uniform(0.01, 5, d), rng.uniform(0.01, 5, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(d1) - np.sqrt(d2)) ** 2)
    got = frechet_distance(mu1, q @ np.diag(d1) @ q.T, mu2, q @ np.diag(d2) @ q.T)
    assert got == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fd_non_commuting_2x2_analytic(seed):
    # for 2x2 M with positive eigenvalues: (Tr M^(1/2))^2 = Tr M + 2 sqrt(det M); here M = S1 S2
    rng = np.random.default_rng(seed)
    s1, s2 = random_spd(rng, 2), random_spd(rng, 2)
    assert not np.allclose(s1 @ s2, s2 @ s1)
    tr_sqrt = np.sqrt(np.trace(s1 @ s2) + 2 * np.sqrt(np.linalg.det(s1) * np.linalg.det(s2)))
    mu1, mu2 = rng.normal(size=2), rng.normal(size=2)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_fd_matches_scipy_sqrtm():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(3)
    d = 20
    s1, s2 = random_spd(rng, d), random_spd(rng, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    covmean = linalg.sqrtm(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-7)


def test_fd_from_samples_approaches_the_gaussians_distance():
    rng = np.random.default_rng(4)
    s1, s2 = np.diag([1.0, 4.0, 0.25]), np.diag([2.0, 1.0, 1.0])
    x = rng.multivariate_normal([0, 0, 0], s1, size=40000)
    y = rng.multivariate_normal([1, 0, -1], s2, size=40000)
    expected = 2.0 + (1 - 2 ** 0.5) ** 2 + 1.0 + 0.25
    assert frechet_distance_features(x, y) == pytest.approx(expected, abs=0.05)


def test_fd_singular_covariances_are_finite():
    x = np.random.default_rng(5).normal(size=(6, 40))  # fewer samples than features: rank-5 covariance
    y = np.random.default_rng(6).normal(size=(6, 40))
    fd = frechet_distance_features(x, y)
    assert np.isfinite(fd) and fd > 0
    assert frechet_distance_features(x, x) == pytest.approx(0.0, abs=1e-8)


def test_fd_bad_shapes():
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="N >= 2"):
        feature_stats(np.zeros((1, 4)))


# ---------------------------------------------------------------- the classifier
def test_shipped_classifier_loads_and_is_accurate():
    model, cfg = load_classifier(DEFAULT_CLASSIFIER)
    x, y = load_mnist("test").tensors()
    acc = accuracy(model, x, y)
    assert acc >= 0.98
    assert cfg["test_accuracy"] == pytest.approx(acc, abs=1e-9)  # the recorded number is reproduced
    assert "train" in cfg["data"]["train"]


def test_classifier_training_is_deterministic():
    cfg = ClassifierTrainConfig(seed=3)
    a, _ = train_classifier(cfg, max_steps=2, report_train_accuracy=False)
    b, _ = train_classifier(cfg, max_steps=2, report_train_accuracy=False)
    c, _ = train_classifier(ClassifierTrainConfig(seed=4), max_steps=2, report_train_accuracy=False)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_augment_identity_and_background():
    x, _ = load_mnist("test").tensors()
    x = x[:8]
    gen = torch.Generator().manual_seed(0)
    none = ClassifierTrainConfig(max_shift=0, max_rotate=0.0, max_scale=0.0)
    assert torch.allclose(augment(x, none, gen), x, atol=1e-5)
    y = augment(x, ClassifierTrainConfig(), gen)
    assert y.shape == x.shape and not torch.allclose(y, x, atol=1e-3)
    assert y.min() >= -1 - 1e-5 and y.max() <= 1 + 1e-5
    assert (y[:, :, 0, 0] == -1).all()  # corners stay background


def test_classifier_errors(tmp_path):
    with pytest.raises(ClassifierError, match="python -m explainer.quality.classifier"):
        load_classifier(tmp_path)
    (tmp_path / "config.json").write_text((DEFAULT_CLASSIFIER / "config.json").read_text())
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ClassifierError, match="cannot load"):
        load_classifier(tmp_path)
    with pytest.raises(ValueError, match=r"\[B,1,28,28\]"):
        ImageClassifier().features(torch.zeros(2, 1, 32, 32))


# ---------------------------------------------------------------- the report
@pytest.fixture(scope="module")
def tiny20(tmp_path_factory):
    """A tiny random conditional model with T = 20, so full-length walks stay fast."""
    folder = make_tiny_checkpoint(tmp_path_factory.mktemp("ev") / "tiny20", num_steps=20)
    return load_model(folder, device="cpu")


@pytest.fixture(scope="module")
def report(tiny20):
    return ev.evaluate(tiny20, num_per_class=2, guidance_scales=[1.0, 2.0], full_steps=True, seed=0, steps=5,
                       chunk_size=10)


def test_report_structure(report):
    json.dumps(report)  # JSON-ready
    s = report["summary"]
    assert s["num_samples"] == 20 and s["num_per_class"] == 2
    for k in (5, 20):
        for w in ("g1", "g2"):
            assert 0.0 <= s[f"acc_{k}steps_{w}"] <= 1.0
            assert s[f"fd_{k}steps_{w}"] > 0
            assert s[f"wall_s_{k}steps_{w}"] >= 0
    assert s["fd_floor"] > 0 and s["classifier_test_acc"] >= 0.98
    assert s["walk_20steps_4img_s"] > 0 and s["parameters"] > 0 and s["device"] == "cpu"
    assert [(r["steps"], r["guidance"]) for r in report["results"]] == [(5, 1.0), (5, 2.0), (20, 1.0), (20, 2.0)]
    assert all(len(r["per_class_accuracy"]) == 10 for r in report["results"])
    assert report["timing"]["steps"] == 20 and report["timing"]["images"] == 4
    assert report["floor"]["n"] == 20 and "load_mnist('train')" in report["floor"]["how"]
    # random weights draw noise, not digits: far from real digits, well above the real-vs-real floor
    assert min(r["fd"] for r in report["results"]) > 2 * s["fd_floor"]


def test_report_names_the_sampler_it_ran(tiny20, report):
    from explainer.render.figures import describe_sampler
    assert report["sampling"]["variance"] == "beta_tilde"
    assert report["sampling"]["method"].startswith(describe_sampler("ddpm", "beta_tilde"))
    other = ev.evaluate(tiny20, num_per_class=1, guidance_scales=[1.0], steps=3, variance="beta", clip_x0=True,
                        timing=False)
    method = other["sampling"]["method"]
    assert "sigma_t^2 = beta_t," in method and "beta_tilde" not in method and "clipped" in method


def test_report_paths_are_repository_relative(tiny20, report):
    from explainer.paths import DEFAULT_CHECKPOINT, ROOT
    assert report["classifier"]["source"] == "checkpoints/digit-classifier"  # the shipped judge
    assert report["model"]["path"] == tiny20.path  # outside the repository: kept as given
    inside = dataclasses.replace(tiny20, path=str(DEFAULT_CHECKPOINT))  # the same network, filed in the repository
    rep = ev.evaluate(inside, num_per_class=1, guidance_scales=[1.0], steps=2, timing=False)
    assert rep["model"]["path"] == "checkpoints/mnist-ddpm"
    assert str(ROOT) not in json.dumps(rep)


@pytest.mark.parametrize("name", ["eval.json", "eval_full1000.json", "eval_variance_beta.json"])
def test_shipped_reports_hold_no_absolute_paths(name):
    from explainer.paths import DEFAULT_CHECKPOINT
    rep = json.loads((DEFAULT_CHECKPOINT / name).read_text())
    assert rep["model"]["path"] == "checkpoints/mnist-ddpm"
    assert rep["classifier"]["source"] == "checkpoints/digit-classifier"


def test_report_is_deterministic(tiny20, report):
    again = ev.evaluate(tiny20, num_per_class=2, guidance_scales=[1.0, 2.0], full_steps=True, seed=0, steps=5,
                        chunk_size=10, timing=False)
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("wall_seconds", "ms_per_image")} for r in rs]
    assert strip(again["results"]) == strip(report["results"])
    assert again["summary"]["fd_floor"] == report["summary"]["fd_floor"]
    other = ev.evaluate(tiny20, num_per_class=2, guidance_scales=[1.0], seed=1, steps=5, timing=False)
    assert other["results"][0]["fd"] != report["results"][0]["fd"]
    assert other["summary"]["fd_floor"] != report["summary"]["fd_floor"]


def test_floor_is_real_vs_real_at_the_same_size():
    x, y = ev.real_subset("train", 3, seed=0)
    assert len(x) == 30 and torch.equal(torch.bincount(y), torch.full((10,), 3))
    x2, _ = ev.real_subset("train", 3, seed=0)
    assert torch.equal(x, x2)


def test_generate_batches_all_labels_through_guidance():
    calls = []
    sched = make_schedule("linear", 10)

    def eps(x, alpha_bar, labels):
        calls.append(labels.clone())
        return torch.zeros_like(x)

    spy = SimpleNamespace(eps=eps, schedule=sched, channels=1, image_size=4, null_label=10,
                          device=torch.device("cpu"))
    labels = ev.balanced_labels(3)
    x = ev.generate(spy, labels, 4, guidance=2.0, seed=0, chunk_size=20)
    assert x.shape == (30, 1, 4, 4)
    assert len(calls) == 2 * 4  # two chunks (20 + 10) x four steps, one network call each
    for lab in calls:  # conditional half holds every digit; unconditional half is the null label
        cond, null = lab.chunk(2)
        assert set(cond.tolist()) == set(range(10)) and (null == 10).all()
    assert len(make_chain(sched, 4)) == 4


def test_evaluate_rejects_bad_input(tiny20, tmp_path):
    with pytest.raises(ValueError, match="num_per_class"):
        ev.evaluate(tiny20, num_per_class=0)
    with pytest.raises(ValueError, match="num_per_class"):
        ev.evaluate(tiny20, num_per_class=451)
    with pytest.raises(ValueError, match="guidance"):
        ev.evaluate(tiny20, num_per_class=1, guidance_scales=[-1.0])
    with pytest.raises(ValueError, match="guidance"):
        ev.evaluate(tiny20, num_per_class=1, guidance_scales=[])
    with pytest.raises(ValueError, match="steps must be"):
        ev.evaluate(tiny20, num_per_class=1, steps=21)
    with pytest.raises(ValueError, match="chunk_size"):
        ev.evaluate(tiny20, num_per_class=1, steps=5, chunk_size=5)
    uncond = load_model(make_tiny_checkpoint(tmp_path / "u", num_steps=20, num_classes=0), device="cpu")
    with pytest.raises(ValueError, match="class-conditional"):
        ev.evaluate(uncond, num_per_class=1)


def test_missing_classifier_is_trained_with_a_note(tiny20, tmp_path, monkeypatch):
    monkeypatch.setattr(ev, "train_classifier", lambda: train_classifier(max_steps=2, report_train_accuracy=False))
    rep = ev.evaluate(tiny20, num_per_class=1, guidance_scales=[1.0], steps=2, timing=False,
                      classifier_dir=tmp_path / "none")
    assert rep["classifier"]["source"] == "trained on the fly"
    assert any("trained a classifier now" in n for n in rep["notes"])


def test_cli_evaluate(tiny20, tmp_path, capsys):
    from explainer.__main__ import main
    out = tmp_path / "e.json"
    assert main(["evaluate", "--checkpoint", tiny20.path, "--device", "cpu", "--num-per-class", "1",
                 "--guidance", "1", "--steps", "3", "--out", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["summary"]["acc_3steps_g1"] == rep["results"][0]["accuracy"]
    assert main(["evaluate", "--checkpoint", tiny20.path, "--device", "cpu", "--num-per-class", "0",
                 "--out", str(out)]) == 2
    assert "num_per_class" in capsys.readouterr().err
