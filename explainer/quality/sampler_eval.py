"""Quality against network calls: every sampler at a few to a hundred network calls, judged like ``evaluate``.

Why: ten steps of one sampler can look as good as a hundred of another. The fair price of a picture is the
number of network calls (NFE), not of steps (Heun makes two a step), so every sampler is measured at the same
NFE budgets (``CALLS``) and set beside DDPM with all T steps, the reference.

Recipe (``evaluate_samplers``), for a class-conditional model at its card's guidance w and clipping:
1. The plan (``plan``): for each sampler of ``samplers.SAMPLERS`` and each budget of calls, the steps that spend
   it (Heun: (calls + 1) // 2 steps, 2 steps - 1 calls; Heun and DPM-Solver++(2M) need 2 steps or more), on
   the sampler's own spacing (``samplers.DEFAULT_SPACING``: Karras sigmas for the ODE samplers); the NFE
   reported is what the walk really calls. Then DDPM over all T steps.
2. Each setting draws ``num_per_class`` samples of every class (``evaluate.generate``, one seeded generator per
   setting: every setting starts from the same x_T), rounded to uint8 levels, and scores them as ``evaluate``
   does: judge accuracy and the Frechet distance on the judge's features against the held-out images, over
   the real-vs-real floor at the same sample size (``evaluate._reference``).
3. Standard errors. Accuracy: per-class binomial, combined over the balanced classes,
   sqrt(sum_c p_c (1 - p_c) / n_c) / K. FD: a class-stratified bootstrap over the samples (resample each class's
   samples with replacement, ``bootstrap`` times, refit their Gaussian, keep the held-out reference fixed): the
   standard deviation of those FDs. The floor gets the same bootstrap over its real images.
"""
from __future__ import annotations

import math
import platform
import time

import numpy as np
import torch

from ..diffusion.samplers import (DEFAULT_SPACING, MIN_SAMPLER_STEPS, SAMPLER_TITLES, SAMPLERS,
                                  check_sampler_args, network_calls)
from ..diffusion.respacing import make_chain
from ..model.checkpoint import DiffusionModel
from ..paths import repo_relative
from .classifier import predict
from .evaluate import (_reference, _setup, balanced_labels, class_subset, feature_stats, frechet_distance,
                       generate, quantize)

CALLS = (1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 50, 100)  # the NFE budgets; 5 is the digits' target (issue 23)
BOOTSTRAP = 100  # resamples for the FD's standard error


# ---------------------------------------------------------------- the plan
def steps_for_calls(method: str, calls: int) -> int | None:
    """The steps with which ``method`` spends at most ``calls`` network calls; None if it cannot (too few)."""
    if method not in SAMPLERS:
        raise ValueError(f"unknown sampler {method!r}; choose from {', '.join(SAMPLERS)}")
    if not isinstance(calls, (int, np.integer)) or isinstance(calls, bool) or calls < 1:
        raise ValueError(f"network calls must be integers >= 1, got {calls!r}")
    steps = (calls + 1) // 2 if method == "heun" else int(calls)
    return steps if steps >= MIN_SAMPLER_STEPS.get(method, 1) else None


def plan(samplers=SAMPLERS, calls=CALLS, T: int = 1000) -> list[dict]:
    """The settings to measure, by NFE then sampler: {sampler, spacing, steps, nfe}; one per (sampler, steps)."""
    samplers, calls = list(samplers), list(calls)
    if not samplers or len(set(samplers)) != len(samplers):
        raise ValueError(f"give each sampler once, at least one; got {samplers}")
    if not calls or len(set(calls)) != len(calls):
        raise ValueError(f"give each number of network calls once, at least one; got {calls}")
    for c in calls:
        steps_for_calls(SAMPLERS[0], c)  # integers >= 1
        if c > T:
            raise ValueError(f"{c} network calls is more than the model's T = {T} steps")
    rows = []
    for method in samplers:
        seen = set()
        for c in sorted(calls):
            steps = steps_for_calls(method, c)
            if steps is None or steps in seen:
                continue
            seen.add(steps)
            rows.append({"sampler": method, "spacing": DEFAULT_SPACING[method], "steps": steps,
                         "nfe": network_calls(method, steps)})
    order = {m: i for i, m in enumerate(SAMPLERS)}
    return sorted(rows, key=lambda r: (r["nfe"], order[r["sampler"]]))


# ---------------------------------------------------------------- standard errors
def accuracy_se(correct, labels, num_classes: int) -> float:
    """Standard error of the class-balanced accuracy: sqrt(sum_c p_c (1 - p_c) / n_c) / K."""
    correct, labels = np.asarray(correct, dtype=np.float64), np.asarray(labels)
    var = 0.0
    for c in range(num_classes):
        x = correct[labels == c]
        if len(x):
            var += x.mean() * (1.0 - x.mean()) / len(x)
    return math.sqrt(var) / num_classes


def fd_bootstrap_se(features, labels, ref_stats, resamples: int = BOOTSTRAP, seed: int = 0) -> float:
    """Standard deviation of the FD over ``resamples`` class-stratified bootstrap resamples of ``features`` [N, F]
    (the reference Gaussian ``ref_stats`` = (mu, sigma) fixed); 0 when ``resamples`` < 2. Where a class has a
    single sample, stratifying would never vary: the resamples are drawn from all N instead."""
    if resamples < 2:
        return 0.0
    f, y = np.asarray(features, np.float64), np.asarray(labels)
    groups = [np.flatnonzero(y == c) for c in np.unique(y)]
    if min(len(g) for g in groups) < 2:
        groups = [np.arange(len(f))]
    rng = np.random.default_rng(seed)
    fds = []
    for _ in range(resamples):
        idx = np.concatenate([rng.choice(g, len(g), replace=True) for g in groups])
        fds.append(frechet_distance(*feature_stats(f[idx]), *ref_stats))
    return float(np.std(fds, ddof=1))


# ---------------------------------------------------------------- one setting
def score(model: DiffusionModel, s, ref, labels: torch.Tensor, setting: dict, guidance: float, clip_x0: bool,
          seed: int, resamples: int) -> dict:
    """Sample one setting of the plan and score it: the setting with accuracy, FD, their standard errors, time."""
    k = model.num_classes
    start = time.perf_counter()
    x = quantize(generate(model, labels, setting["steps"], guidance, seed, s.chunk_size, spacing=setting["spacing"],
                          clip_x0=clip_x0, method=setting["sampler"]))
    secs = time.perf_counter() - start
    pred, feats = predict(s.clf, x)
    correct = (pred == labels).numpy()
    fd = frechet_distance(*feature_stats(feats.numpy()), *ref.ref_stats)
    fd_se = fd_bootstrap_se(feats.numpy(), labels.numpy(), ref.ref_stats, resamples, seed)
    floor = ref.fd_floor
    return {**setting, "title": SAMPLER_TITLES[setting["sampler"]],
            "accuracy": round(float(correct.mean()), 4),
            "accuracy_se": round(accuracy_se(correct, labels.numpy(), k), 4),
            "fd": round(fd, 4), "fd_se": round(fd_se, 4),
            "fd_over_floor": round(fd / floor, 3) if floor > 0 else None,
            "fd_over_floor_se": round(fd_se / floor, 3) if floor > 0 else None,
            "per_class_accuracy": [round(float(correct[labels.numpy() == c].mean()), 4) for c in range(k)],
            "wall_seconds": round(secs, 2),
            "ms_per_image_call": round(1000 * secs / (len(labels) * setting["nfe"]), 3)}


def _say(row: dict, floor: float) -> None:
    import sys
    print(f"{row['title']:>8} {row['steps']:>4} steps ({row['nfe']:>4} calls, {row['spacing']}): accuracy "
          f"{row['accuracy']:.3f} +- {row['accuracy_se']:.3f}, FD {row['fd']:.2f} +- {row['fd_se']:.2f} "
          f"({row['fd_over_floor']}x floor {floor:.2f}), {row['wall_seconds']:.0f} s", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the report
def _check(model: DiffusionModel, settings: list[dict], reference: dict, bootstrap) -> None:
    """Clear messages before any sampling time is spent: the reference steps, the resamples, every chain."""
    T = model.schedule.T
    steps = reference["steps"]
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or not 1 <= steps <= T:
        raise ValueError(f"reference steps must be an integer in 1..{T} (T), got {steps!r}")
    if not isinstance(bootstrap, (int, np.integer)) or isinstance(bootstrap, bool) or bootstrap < 0:
        raise ValueError(f"bootstrap must be an integer >= 0 (0: no FD standard error), got {bootstrap!r}")
    for row in settings:
        check_sampler_args(row["sampler"], chain=make_chain(model.schedule, row["steps"], row["spacing"]))


def _reusable(previous: dict | None, sampling: dict) -> dict:
    """The rows of an earlier report made with the same sampling settings, by (sampler, spacing, steps)."""
    if not previous or {k: previous.get("sampling", {}).get(k) for k in _SAME} != {k: sampling[k] for k in _SAME}:
        return {}
    rows = previous.get("results", []) + ([previous["reference"]] if previous.get("reference") else [])
    return {(r["sampler"], r["spacing"], r["steps"]): r for r in rows}


_SAME = ("guidance", "clip_x0", "num_per_class", "seed", "chunk_size", "bootstrap", "data")


def best_by_calls(rows: list[dict], calls, reference: dict | None) -> list[dict]:
    """For each budget of calls, the setting with the lowest FD among those that spend at most that many, with
    its FD and accuracy over the reference's and over the longest DDPM walk of the plan (e.g. 100 steps)."""
    ddpm = [r for r in rows if r["sampler"] == "ddpm"]
    longest = max(ddpm, key=lambda r: r["nfe"]) if ddpm else None
    out = []
    for c in sorted(calls):
        within = [r for r in rows if r["nfe"] <= c]
        if not within:
            continue
        b = min(within, key=lambda r: r["fd"])
        row = {"max_calls": c, **{k: b[k] for k in ("sampler", "spacing", "steps", "nfe", "accuracy", "accuracy_se",
                                                  "fd", "fd_se", "fd_over_floor")}}
        if reference:
            row["fd_over_reference"] = round(b["fd"] / reference["fd"], 3) if reference["fd"] > 0 else None
            row["accuracy_over_reference"] = (round(b["accuracy"] / reference["accuracy"], 3)
                                              if reference["accuracy"] > 0 else None)
        if longest:
            row["fd_over_ddpm_longest"] = round(b["fd"] / longest["fd"], 3) if longest["fd"] > 0 else None
        out.append(row)
    return out


def speed(rows: list[dict], least_calls: int = 10) -> dict:
    """Each sampler's median wall time per image per network call over its settings of >= ``least_calls`` calls
    (sampling only; the judge is not timed)."""
    out = {}
    for m in SAMPLERS:
        times = [r["ms_per_image_call"] for r in rows if r["sampler"] == m and r["nfe"] >= least_calls]
        if times:
            out[m] = round(float(np.median(times)), 3)
    return out


def _report(model: DiffusionModel, s, ref, sampling: dict, floor_se: float, rows: list[dict],
            reference: dict | None, command: str | None, t_start: float) -> dict:
    """The JSON report: what was run and how it is judged, each setting's row, the reference and a summary."""
    n = sampling["num_samples"]
    return {
        "command": command,
        "complete": reference is not None and len(rows) == sampling["settings"],
        "model": {"path": repo_relative(model.path) if model.path else model.path, "schedule": model.schedule.name,
                  "T": model.schedule.T, "class_names": s.names},
        "sampling": sampling,
        "judge": {"source": s.clf_info.get("source"), "test_accuracy": round(ref.clf_acc, 4),
                  "balanced_test_accuracy": round(ref.clf_bal, 4),
                  "features": f"penultimate layer ({ref.feature_count} units)"},
        "floor": {"fd": round(ref.fd_floor, 4), "fd_se": round(floor_se, 4), "n": n,
                  "how": f"{sampling['num_per_class']} real training images per class against the "
                         f"{len(ref.x_test)} held-out images (the FD of real vs real at this sample size)"},
        "standard_errors": {
            "accuracy": "per-class binomial, combined over the balanced classes: sqrt(sum_c p_c (1 - p_c) / n_c) / K",
            "fd": f"class-stratified bootstrap over the samples ({sampling['bootstrap']} resamples; the held-out "
                  "reference fixed): the standard deviation of the resampled FDs",
            "fd_over_floor": "fd_se / floor (the floor as a fixed scale; its own standard error is floor.fd_se)",
            "note": "every setting starts from the same seeded noise, so differences between settings are "
                    "measured more precisely than two independent standard errors suggest"},
        "results": list(rows),
        "reference": reference,
        "summary": {"fd_floor": round(ref.fd_floor, 4), "fd_floor_se": round(floor_se, 4),
                    "reference": None if reference is None else {k: reference[k] for k in (
                        "sampler", "steps", "nfe", "accuracy", "accuracy_se", "fd", "fd_se", "fd_over_floor")},
                    "best_by_calls": best_by_calls(rows, sampling["calls"], reference),
                    "ms_per_image_call": speed(rows)},
        "environment": {"device": str(model.device), "torch": torch.__version__, "python": platform.python_version(),
                        "torch_threads": torch.get_num_threads(), "machine": platform.machine()},
        "notes": s.notes,
        "total_wall_s": round(time.perf_counter() - t_start, 1),
    }


def evaluate_samplers(model: DiffusionModel, num_per_class: int = 50, samplers=SAMPLERS, calls=CALLS, seed: int = 0,
                      *, reference_steps: int | None = None, guidance: float | None = None,
                      clip_x0: bool | None = None, chunk_size: int = 250, bootstrap: int = BOOTSTRAP,
                      classifier=None, classifier_dir=None, data=None, command: str | None = None,
                      previous: dict | None = None, on_row=None, progress: bool = False) -> dict:
    """Measure every setting of ``plan(samplers, calls)`` and DDPM with ``reference_steps`` (default all T) steps.

    guidance, clip_x0: default the card's (``model.recommended_guidance``, ``recommended_clip_x0``). previous: an
    earlier report; its rows with the same sampling settings are kept, not sampled again (they would come out the
    same). on_row(report): called with the report so far after every setting. Raises ValueError on bad arguments.
    """
    t_start = time.perf_counter()
    guidance = model.recommended_guidance if guidance is None else float(guidance)
    clip_x0 = model.recommended_clip_x0 if clip_x0 is None else bool(clip_x0)
    settings = plan(samplers, calls, model.schedule.T)
    ref_steps = model.schedule.T if reference_steps is None else reference_steps
    ref_setting = {"sampler": "ddpm", "spacing": DEFAULT_SPACING["ddpm"], "steps": ref_steps, "nfe": ref_steps}
    s = _setup(model, num_per_class, [guidance], 1, chunk_size, classifier, classifier_dir, data, 1.0)
    _check(model, settings, ref_setting, bootstrap)
    k = model.num_classes
    ref = _reference(s, k, num_per_class, seed, 1.0)
    x_floor, y_floor = class_subset(s.train_set, num_per_class, seed)
    floor_se = fd_bootstrap_se(predict(s.clf, x_floor)[1].numpy(), y_floor.numpy(), ref.ref_stats, bootstrap, seed)
    labels = balanced_labels(num_per_class, k)
    sampling = {"samplers": list(samplers), "calls": sorted(calls), "settings": len(settings),
                "spacing": {m: DEFAULT_SPACING[m] for m in samplers}, "guidance": guidance, "clip_x0": clip_x0,
                "num_per_class": num_per_class, "num_samples": len(labels), "seed": seed,
                "chunk_size": s.chunk_size, "bootstrap": bootstrap, "data": s.source,
                "reference": f"DDPM, {ref_steps} steps (linspace), sigma_t^2 = beta_tilde_t",
                "noise": "one CPU generator seeded with `seed` per setting: every setting starts from the same x_T",
                "postprocess": "samples rounded to uint8 levels, like saved images"}
    done = _reusable(previous, sampling)
    rows, reference = [], None
    for setting in [ref_setting] + settings:  # the reference first: a partial report can already be read against it
        key = (setting["sampler"], setting["spacing"], setting["steps"])
        row = done.get(key) or score(model, s, ref, labels, setting, guidance, clip_x0, seed, bootstrap)
        done[key] = row  # a reference the plan already holds (e.g. DDPM 100 steps) is not sampled twice
        if progress:
            _say(row, ref.fd_floor)
        if setting is ref_setting:
            reference = row
        else:
            rows.append(row)
        if on_row is not None:
            on_row(_report(model, s, ref, sampling, floor_se, rows, reference, command, t_start))
    return _report(model, s, ref, sampling, floor_se, rows, reference, command, t_start)
