"""The reverse tab's "quality against network calls": the model's measured chart with the learner's walk marked.

``quality.sampler_eval`` measures, per shipped model, each sampler's judge accuracy and Frechet distance at 1 to 100
network calls into ``<checkpoint>/eval_samplers.json``; ``render.nfe_chart`` draws it. Here the tab asks for the
chart with the walk the learner just started marked on it (its sampler and its network calls), so "why do 10 steps
of one sampler look as good as 100 of another?" is answered beside their own walk. Charts are remembered per
(report, sampler, calls): most learners press Sample at the tab's settings.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..diffusion.samplers import SAMPLER_TITLES, network_calls
from ..model.checkpoint import DiffusionModel
from ..render.nfe_chart import chart_series, quality_chart
from .cache import LRU
from .walk import reverse_sampler

REPORT = "eval_samplers.json"
_reports = LRU(8)
_charts = LRU(32)


def report_for(model: DiffusionModel | None) -> dict | None:
    """The model's measured report (re-read when the file changes), or None where it has none."""
    path = Path(model.path) / REPORT if model is not None and model.path else None
    if path is None or not path.is_file():
        return None
    stamp = path.stat().st_mtime_ns
    return _reports.get((str(path), stamp), lambda: json.loads(path.read_text()))


def _walk_words(data: dict, method: str, calls: int) -> str:
    """Where the learner's walk falls among the measured points of its sampler, in words."""
    line, ref, title = data["lines"].get(method), data["reference"], SAMPLER_TITLES[method]
    if ref is not None and ref["sampler"] == method and ref["nfe"] == calls:
        return (f"That is the reference, the dashed line: FD {ref['fd_over_floor']:.2f}x the floor, judge accuracy "
                f"{100 * ref['accuracy']:.1f} %.")
    if line is None:
        return f"{title} was not measured for this model."
    if calls in line["nfe"]:
        k = line["nfe"].index(calls)
        return (f"{title} at {calls} network calls was measured at FD {line['fd_over_floor'][k]:.2f}x the floor "
                f"and judge accuracy {100 * line['accuracy'][k]:.1f} % (the star).")
    if not line["nfe"][0] < calls < line["nfe"][-1]:
        return (f"{title} was measured from {line['nfe'][0]} to {line['nfe'][-1]} network calls; the band marks "
                f"{calls}, outside that range.")
    return f"{title} at {calls} network calls lies between measured points: the star sits on the line between them."


def sampler_quality(model: DiffusionModel | None, sampler, steps) -> tuple[np.ndarray | None, str]:
    """(the chart with the walk of ``sampler`` in ``steps`` steps marked, what it says); (None, why) without one."""
    report = report_for(model)
    if report is None:
        return None, ("Quality against network calls has not been measured for this model "
                      "(`python -m explainer evaluate-samplers --checkpoint CHECKPOINT` measures it).")
    method = reverse_sampler(sampler)
    calls = network_calls(method, int(steps))
    key = (str(model.path), id(report), method, calls)
    chart = _charts.get(key, lambda: quality_chart(report, (method, calls), width=10.0, height=4.6))
    data = chart_series(report)
    ref = data["reference"]
    words = _walk_words(data, method, calls)
    reference = (f" The dashed line is DDPM with {ref['steps']} steps." if ref and ref["nfe"] != calls else "")
    return chart, (f"**Your walk: {SAMPLER_TITLES[method]}, {calls} network calls.** {words}{reference} "
                   "Where the solid lines (fresh noise at every step) keep falling while the dash-dotted ones "
                   "(the ODE, no noise) level off, as for the emoji, the network's errors pile up along a "
                   "deterministic path and fresh noise corrects them (Karras et al. 2022, sec. 4). "
                   f"Measured with {data['num_samples']} samples a point; the command is in the report "
                   f"(`{Path(str(model.path)).name}/{REPORT}`).")
