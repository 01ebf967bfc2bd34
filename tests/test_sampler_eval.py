"""Quality against network calls: the plan of NFE budgets, the standard errors, the report, its chart and its CLI."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import make_tiny_checkpoint
from explainer.diffusion.samplers import DEFAULT_SPACING, SAMPLERS, network_calls
from explainer.diffusion.schedules import make_schedule
from explainer.model.checkpoint import load_model
from explainer.quality import evaluate as ev
from explainer.quality import sampler_eval as se
from explainer.render import nfe_chart


# ---------------------------------------------------------------- the plan
def test_steps_for_calls():
    assert [se.steps_for_calls("heun", c) for c in (1, 2, 3, 4, 5, 20, 100)] == [None, None, 2, 2, 3, 10, 50]
    assert [se.steps_for_calls("dpmpp-2m", c) for c in (1, 2, 5)] == [None, 2, 5]
    assert [se.steps_for_calls(m, 1) for m in ("ddpm", "ddim", "euler", "euler-a")] == [1, 1, 1, 1]


def test_the_default_plan_spends_each_budget_once_per_sampler():
    rows = se.plan()
    assert all(r["nfe"] == network_calls(r["sampler"], r["steps"]) for r in rows)
    assert all(r["spacing"] == DEFAULT_SPACING[r["sampler"]] for r in rows)
    by = {m: [r["nfe"] for r in rows if r["sampler"] == m] for m in SAMPLERS}
    for m in ("ddpm", "ddim", "euler", "euler-a"):
        assert by[m] == list(se.CALLS)
    assert by["dpmpp-2m"] == [c for c in se.CALLS if c >= 2]
    assert by["heun"] == [3, 5, 7, 9, 15, 19, 49, 99]  # 2 steps - 1 calls; 3 and 4 calls both give 2 steps: once
    assert [r["nfe"] for r in rows] == sorted(r["nfe"] for r in rows)
    assert all(r["nfe"] <= max(se.CALLS) for r in rows)


def test_plan_of_chosen_samplers_and_calls():
    rows = se.plan(["heun", "ddim"], [4, 1, 10], T=20)
    assert [(r["sampler"], r["steps"], r["nfe"]) for r in rows] == [("ddim", 1, 1), ("heun", 2, 3), ("ddim", 4, 4),
                                                                    ("heun", 5, 9), ("ddim", 10, 10)]


@pytest.mark.parametrize("samplers, calls, match", [
    (["ddpm", "sde"], [1], "unknown sampler 'sde'"), ([], [1], "each sampler once"),
    (["ddpm", "ddpm"], [1], "each sampler once"), (["ddpm"], [], "each number of network calls once"),
    (["ddpm"], [2, 2], "each number of network calls once"), (["ddpm"], [0], "integers >= 1"),
    (["ddpm"], [2.5], "integers >= 1"), (["ddpm"], [True], "integers >= 1"), (["ddpm"], [21], "more than"),
])
def test_plan_rejects_bad_arguments(samplers, calls, match):
    with pytest.raises(ValueError, match=match):
        se.plan(samplers, calls, T=20)


# ---------------------------------------------------------------- standard errors
def test_accuracy_se_is_the_class_balanced_binomial():
    labels = np.repeat([0, 1], 100)
    correct = np.concatenate([np.ones(80), np.zeros(20), np.ones(100)])  # p = 0.8 and 1
    assert se.accuracy_se(correct, labels, 2) == pytest.approx(np.sqrt(0.8 * 0.2 / 100) / 2)
    assert se.accuracy_se(np.ones(20), np.arange(20) % 10, 10) == 0.0
    # equal p in every class: the plain binomial sqrt(p (1 - p) / n)
    correct = np.tile([1, 1, 1, 0], 50)
    assert se.accuracy_se(correct, np.repeat([0, 1], 100), 2) == pytest.approx(np.sqrt(0.75 * 0.25 / 200))


def test_fd_bootstrap_se_matches_the_spread_over_fresh_samples():
    rng = np.random.default_rng(0)
    d, n = 4, 300
    ref = (np.full(d, 0.3), np.eye(d))
    labels = np.arange(n) % 3
    fresh = [ev.frechet_distance(*ev.feature_stats(rng.normal(size=(n, d))), *ref) for _ in range(200)]
    boot = [se.fd_bootstrap_se(rng.normal(size=(n, d)), labels, ref, 100, seed=i) for i in range(5)]
    assert 0.6 < np.median(boot) / np.std(fresh) < 1.6
    f = rng.normal(size=(n, d))
    assert se.fd_bootstrap_se(f, labels, ref, 20, seed=1) == se.fd_bootstrap_se(f, labels, ref, 20, seed=1)
    assert se.fd_bootstrap_se(f, labels, ref, 0) == 0.0 and se.fd_bootstrap_se(f, labels, ref, 1) == 0.0


def test_generate_takes_any_sampler_and_keeps_ddpm_as_its_default():
    calls = []

    def eps(x, alpha_bar, labels):
        calls.append(alpha_bar)
        return 0.1 * x

    spy = SimpleNamespace(eps=eps, schedule=make_schedule("linear", 20), channels=1, image_size=4, null_label=10,
                          device=torch.device("cpu"))
    labels = ev.balanced_labels(1)
    default = ev.generate(spy, labels, 4, guidance=1.0, seed=0)
    assert torch.equal(default, ev.generate(spy, labels, 4, guidance=1.0, seed=0, method="ddpm", spacing="linspace"))
    calls.clear()
    heun = ev.generate(spy, labels, 3, guidance=1.0, seed=0, method="heun", spacing="karras")
    assert len(calls) == network_calls("heun", 3) and not torch.equal(heun, default)


# ---------------------------------------------------------------- the chart, without a model
def fake_report() -> dict:
    """A report with the keys the chart reads, numbers made up."""
    rows = []
    for i, m in enumerate(("ddim", "heun", "euler-a")):
        for steps in (2, 5, 10):
            nfe = network_calls(m, steps)
            rows.append({"sampler": m, "spacing": DEFAULT_SPACING[m], "steps": steps, "nfe": nfe,
                         "fd_over_floor": 1 + 10 / nfe + i, "fd_over_floor_se": 0.1, "accuracy": 1 - 1 / (nfe + i),
                         "accuracy_se": 0.02, "fd": 3 * (1 + 10 / nfe + i), "fd_se": 0.3})
    ref = {"sampler": "ddpm", "spacing": "linspace", "steps": 20, "nfe": 20, "fd_over_floor": 1.1,
           "fd_over_floor_se": 0.1, "accuracy": 0.97, "accuracy_se": 0.01}
    return {"results": rows, "reference": ref, "floor": {"fd": 3.0}, "judge": {"test_accuracy": 0.99},
            "model": {"path": "tiny"}, "sampling": {"guidance": 2.0, "clip_x0": True, "num_samples": 20}}


def test_chart_series_is_the_reports_rows():
    rep = fake_report()
    data = nfe_chart.chart_series(rep)
    assert list(data["lines"]) == ["ddim", "euler-a", "heun"]  # in SAMPLERS order
    assert data["lines"]["heun"]["nfe"] == [3, 9, 19]
    for m, line in data["lines"].items():
        rows = [r for r in rep["results"] if r["sampler"] == m]
        for key, values in line.items():
            assert values == [r[key] for r in rows]
    assert data["reference"] == rep["reference"] and data["floor"] == 3.0 and data["judge_accuracy"] == 0.99


def test_chart_is_an_rgb_picture_and_marks_the_walk(tmp_path):
    from PIL import Image
    rep = fake_report()
    img = np.asarray(Image.open(nfe_chart.save_quality_chart(rep, tmp_path / "s" / "q.png")))
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and img.shape[1] > img.shape[0] > 300
    marked = nfe_chart.quality_chart(rep, mark=("heun", 9))
    assert marked.dtype == np.uint8 and marked.shape == img.shape and not np.array_equal(marked, img)
    assert nfe_chart._mark_value(nfe_chart.chart_series(rep)["lines"]["heun"], "accuracy", 9) == pytest.approx(
        1 - 1 / 10)
    nfe_chart.quality_chart_figure(rep, mark=("ddpm", 7))  # a sampler the report lacks: the band alone


@pytest.mark.parametrize("mark", [("sde", 3), ("heun",), ("heun", 0), ("heun", "9"), "heun"])
def test_chart_rejects_a_bad_mark(mark):
    with pytest.raises(ValueError, match="mark|network calls"):
        nfe_chart.quality_chart(fake_report(), mark=mark)


# ---------------------------------------------------------------- the report on a tiny model (slow)
@pytest.fixture(scope="module")
def tiny20(tmp_path_factory):
    return load_model(make_tiny_checkpoint(tmp_path_factory.mktemp("se") / "tiny20", num_steps=20), device="cpu")


@pytest.fixture(scope="module")
def report(tiny20):
    return se.evaluate_samplers(tiny20, num_per_class=1, samplers=["ddim", "heun", "euler-a"], calls=[1, 3],
                                reference_steps=4, bootstrap=5, command="python -m explainer test")


def test_report_structure(report):
    rep = json.loads(json.dumps(report))  # JSON-ready
    assert rep["complete"] and rep["command"] == "python -m explainer test"
    assert [(r["sampler"], r["steps"], r["nfe"]) for r in rep["results"]] == [
        ("ddim", 1, 1), ("euler-a", 1, 1), ("ddim", 3, 3), ("euler-a", 3, 3), ("heun", 2, 3)]
    ref = rep["reference"]
    assert (ref["sampler"], ref["spacing"], ref["steps"], ref["nfe"]) == ("ddpm", "linspace", 4, 4)
    s = rep["sampling"]
    assert s["num_samples"] == 10 and s["guidance"] == 1.0 and s["clip_x0"] is False and s["bootstrap"] == 5
    assert s["spacing"] == {"ddim": "linspace", "heun": "karras", "euler-a": "karras"}
    for r in rep["results"] + [ref]:
        assert 0 <= r["accuracy"] <= 1 and r["fd"] > 0 and r["fd_se"] >= 0 and r["accuracy_se"] >= 0
        assert r["fd_over_floor"] == pytest.approx(r["fd"] / rep["floor"]["fd"], abs=2e-3)
        assert r["fd_over_floor_se"] == pytest.approx(r["fd_se"] / rep["floor"]["fd"], abs=2e-3)
        assert len(r["per_class_accuracy"]) == 10 and r["ms_per_image_call"] > 0
    assert rep["floor"]["fd"] > 0 and rep["floor"]["fd_se"] > 0 and rep["floor"]["n"] == 10
    best = rep["summary"]["best_by_calls"]
    assert [b["max_calls"] for b in best] == [1, 3]
    assert best[1]["fd"] == min(r["fd"] for r in rep["results"])
    assert best[0]["fd_over_reference"] == pytest.approx(best[0]["fd"] / ref["fd"], abs=2e-3)
    assert "bootstrap" in rep["standard_errors"]["fd"] and "binomial" in rep["standard_errors"]["accuracy"]


def test_the_charts_data_equals_the_json(report, tmp_path):
    rep = json.loads(json.dumps(report))
    data = nfe_chart.chart_series(rep)
    drawn = {(m, n, fd, acc) for m, line in data["lines"].items()
             for n, fd, acc in zip(line["nfe"], line["fd_over_floor"], line["accuracy"])}
    assert drawn == {(r["sampler"], r["nfe"], r["fd_over_floor"], r["accuracy"]) for r in rep["results"]}
    assert data["reference"] == rep["reference"] and data["floor"] == rep["floor"]["fd"]


def test_report_is_deterministic_and_resumes(tiny20, report):
    seen = []
    again = se.evaluate_samplers(tiny20, num_per_class=1, samplers=["ddim", "heun", "euler-a"], calls=[1, 3],
                                 reference_steps=4, bootstrap=5, previous=report, on_row=seen.append)
    assert [r["fd"] for r in again["results"]] == [r["fd"] for r in report["results"]]
    assert len(seen) == 6 and not seen[0]["complete"] and seen[-1]["complete"]
    assert seen[0]["reference"] is not None and seen[0]["results"] == []  # the reference first
    fresh = se.evaluate_samplers(tiny20, num_per_class=1, samplers=["ddim"], calls=[3], reference_steps=3,
                                 bootstrap=5)
    assert fresh["results"][0]["fd"] == next(r["fd"] for r in report["results"] if r["steps"] == 3
                                             and r["sampler"] == "ddim")
    assert fresh["reference"]["fd"] != fresh["results"][0]["fd"]


def test_evaluate_samplers_rejects_bad_arguments(tiny20):
    with pytest.raises(ValueError, match="reference steps"):
        se.evaluate_samplers(tiny20, num_per_class=1, calls=[1], reference_steps=21)
    with pytest.raises(ValueError, match="bootstrap"):
        se.evaluate_samplers(tiny20, num_per_class=1, calls=[1], bootstrap=-1)
    with pytest.raises(ValueError, match="num_per_class"):
        se.evaluate_samplers(tiny20, num_per_class=0, calls=[1])
    with pytest.raises(ValueError, match="more than"):
        se.evaluate_samplers(tiny20, num_per_class=1, calls=[30])


def test_cli_evaluate_samplers(tiny20, tmp_path, capsys):
    from explainer.__main__ import main
    out, chart = tmp_path / "e.json", tmp_path / "c.png"
    argv = ["evaluate-samplers", "--checkpoint", tiny20.path, "--device", "cpu", "--num-per-class", "1",
            "--samplers", "dpmpp-2m", "--calls", "1", "2", "--reference-steps", "3", "--bootstrap", "3",
            "--out", str(out), "--chart", str(chart)]
    assert main(argv) == 0
    rep = json.loads(out.read_text())
    assert rep["command"].startswith("python -m explainer evaluate-samplers --checkpoint")
    assert [(r["sampler"], r["nfe"]) for r in rep["results"]] == [("dpmpp-2m", 2)]  # 1 call: too few for DPM++
    assert chart.is_file()
    assert main(argv[:-4] + ["--calls", "0", "--out", str(out)]) == 2
    assert "integers >= 1" in capsys.readouterr().err
