"""Quality against network calls, as a chart: what ``quality.sampler_eval`` measured, one line per sampler.

Why a chart: the question "why do 10 steps of one sampler look as good as 100 of another?" is answered by where
each line meets the dashed DDPM line, and "what does a sampler pay at 1-4 calls?" by where it falls off. Two
panels on a log axis of network calls (NFE): FD over the real-vs-real floor (lower is better, 1 = the floor) and
judge accuracy (higher is better), each point with +-1 standard error. Input is the report (a dict, as written to
``eval_samplers.json``); ``chart_series`` is exactly what is drawn. Matplotlib through ``Figure`` only (no pyplot).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..diffusion.samplers import SAMPLER_TITLES, SAMPLERS

COLOURS = {"ddpm": "#1f77b4", "ddim": "#ff7f0e", "euler": "#2ca02c", "euler-a": "#d62728", "heun": "#9467bd",
           "dpmpp-2m": "#8c564b"}
STOCHASTIC = ("ddpm", "euler-a")  # fresh noise at every step: drawn solid, the ODE samplers dashed-dotted


def chart_series(report: dict) -> dict:
    """The numbers the chart draws, straight from the report: per sampler (in ``SAMPLERS`` order) its NFE and its
    FD / floor, accuracy and their standard errors, sorted by NFE; the reference row; the floor; the judge."""
    lines = {}
    for m in SAMPLERS:
        rows = sorted((r for r in report["results"] if r["sampler"] == m), key=lambda r: r["nfe"])
        if rows:
            lines[m] = {key: [r[key] for r in rows] for key in
                        ("nfe", "steps", "fd_over_floor", "fd_over_floor_se", "accuracy", "accuracy_se")}
    return {"lines": lines, "reference": report.get("reference"), "floor": report["floor"]["fd"],
            "judge_accuracy": report["judge"]["test_accuracy"], "model": report["model"]["path"],
            "guidance": report["sampling"]["guidance"], "clip_x0": report["sampling"]["clip_x0"],
            "num_samples": report["sampling"]["num_samples"]}


def _mark_value(line: dict | None, key: str, nfe: float) -> float | None:
    """The sampler's value at ``nfe``, interpolated in log NFE between measured points; None outside them."""
    if not line or not line["nfe"][0] <= nfe <= line["nfe"][-1]:
        return None
    return float(np.interp(np.log(nfe), np.log(line["nfe"]), line[key]))


def _panel(ax, data: dict, key: str, mark) -> None:
    """One panel: a line per sampler with error bars, the DDPM reference dashed, the floor (or judge) dotted."""
    for m, line in data["lines"].items():
        ax.errorbar(line["nfe"], line[key], yerr=line[key + "_se"], color=COLOURS[m], marker="o", markersize=3.5,
                    linewidth=1.6, capsize=2, linestyle="-" if m in STOCHASTIC else "-.", label=SAMPLER_TITLES[m])
    ref = data["reference"]
    if ref is not None:
        ax.axhline(ref[key], color="black", linestyle="--", linewidth=1.2,
                   label=f"DDPM {ref['steps']} steps (reference)")
    if key == "fd_over_floor":
        ax.axhline(1.0, color="grey", linestyle=":", linewidth=1.5, label="floor: real vs real images")
        ax.set_yscale("log")
        ax.set_ylabel("FD / floor  (lower is better)")
    else:
        ax.axhline(data["judge_accuracy"], color="grey", linestyle=":", linewidth=1.5)
        ax.text(0.02, data["judge_accuracy"] - 0.015, "dotted: the judge on real held-out images",
                transform=ax.get_yaxis_transform(), va="top", fontsize=8, color="dimgrey")
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("judge accuracy  (higher is better)")
    if mark is not None:
        method, nfe = mark
        ax.axvline(nfe, color=COLOURS.get(method, "black"), alpha=0.35, linewidth=6)
        y = _mark_value(data["lines"].get(method), key, nfe)
        if y is not None:
            ax.plot([nfe], [y], marker="*", markersize=16, color=COLOURS[method], markeredgecolor="black", zorder=5)
    _calls_axis(ax, data)


def _calls_axis(ax, data: dict) -> None:
    """A log axis of network calls labelled with plain numbers (1, 2, 5, 10, ...), not powers of ten."""
    from matplotlib.ticker import NullFormatter
    nfe = [n for line in data["lines"].values() for n in line["nfe"]]
    top = max(nfe + ([data["reference"]["nfe"]] if data["reference"] else []), default=10)
    ax.set_xscale("log")
    ticks = [t for t in (1, 2, 3, 4, 5, 10, 20, 30, 50, 100, 200, 500, 1000) if t <= top * 1.2]
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("network calls (NFE), log scale")
    ax.grid(True, which="both", alpha=0.25)


def _check_mark(mark) -> tuple[str, float] | None:
    if mark is None:
        return None
    if not isinstance(mark, (tuple, list)) or len(mark) != 2 or mark[0] not in SAMPLERS:
        raise ValueError(f"mark must be (sampler, network calls) with a sampler of {', '.join(SAMPLERS)}; got {mark!r}")
    nfe = mark[1]
    if isinstance(nfe, bool) or not isinstance(nfe, (int, float, np.integer, np.floating)) or not nfe >= 1:
        raise ValueError(f"the marked walk's network calls must be a number >= 1, got {nfe!r}")
    return mark[0], float(nfe)


def quality_chart_figure(report: dict, mark=None, width: float = 11.0, height: float = 4.8):
    """The chart as a matplotlib ``Figure``; ``mark`` = (sampler, NFE) of the walk the learner just ran."""
    from matplotlib.figure import Figure
    mark = _check_mark(mark)
    data = chart_series(report)
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    left, right = fig.subplots(1, 2)
    _panel(left, data, "fd_over_floor", mark)
    _panel(right, data, "accuracy", mark)
    left.set_title("Frechet distance over the floor")
    right.set_title("accuracy by the independent judge")
    handles, labels = left.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=8.5, frameon=False)
    clip = ", x0_hat clipped" if data["clip_x0"] else ""
    walk = "" if mark is None else (f" The shaded band and star: your walk, {SAMPLER_TITLES[mark[0]]} "
                                    f"at {mark[1]:g} calls.")
    fig.suptitle(f"Quality against network calls: {data['model']} (w = {data['guidance']:g}{clip}, "
                 f"{data['num_samples']} samples a point, bars +-1 standard error)\n"
                 "Look where each line reaches the dashed DDPM line: that many calls are enough; to its left the "
                 "sampler falls off.\nSolid lines add fresh noise at every step, dash-dotted ones follow the ODE "
                 "without noise." + walk, fontsize=9.5)
    return fig


def quality_chart(report: dict, mark=None, width: float = 11.0, height: float = 4.8) -> np.ndarray:
    """The chart as an RGB uint8 image [H, W, 3] (``quality_chart_figure``, rendered by the Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    canvas = FigureCanvasAgg(quality_chart_figure(report, mark, width, height))
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_quality_chart(report: dict, path, mark=None) -> Path:
    """``quality_chart`` as a PNG (the model card's picture)."""
    from PIL import Image
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(quality_chart(report, mark)).save(path)
    return path
