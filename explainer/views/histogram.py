"""Where the forward process ends: the pixel values of x_t against pure noise N(0, 1).

For one image, every pixel value of x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (Ho et al.
2020, eq. 4) is a draw from N(sqrt(alpha_bar_t) x_0[i], 1 - alpha_bar_t). Pooled over the pixels, their
histogram (one draw of eps, the bars) has the expected height

    E[bin k] = sum_v p(v) [Phi((e_{k+1} - sqrt(alpha_bar_t) v) / s) - Phi((e_k - sqrt(alpha_bar_t) v) / s)] / width,

with p(v) the share of x_0's pixels at level v (an 8-bit image has 256 levels), s = sqrt(1 - alpha_bar_t) and
Phi the standard normal CDF (the line). The pooled mean is sqrt(alpha_bar_t) mean(x_0) and the variance
alpha_bar_t var(x_0) + 1 - alpha_bar_t: both reach N(0, 1)'s 0 and 1 as alpha_bar_t -> 0, which is what
"the image became pure noise" means. Drawn like the curves (``CursorPlot``): the axes are rendered once,
the bars and the line in numpy per call. In the app the page draws the same picture itself on every t move
(``client.histogram_spec`` and ``static/forward.js``); this is the server's version and the page's reference.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ..diffusion.forward import q_sample
from .cache import LRU
from .forward import (ARTICLE_SCHEDULES, COLORS, CursorPlot, noise_like, prepare_image, schedule_rgb,
                           validate_inputs)

X_RANGE = 4.0  # pixel values shown: -4..4 (x_0 lies in [-1, 1]; pure noise has 99.99 % of its mass here)
LEVELS = np.arange(256) / 127.5 - 1.0  # the values an 8-bit x_0 takes in [-1, 1]
# bins 13 levels wide (about 0.1), their edges halfway between levels: at t = 0 no pixel sits on an edge
BIN_WIDTH = 26 / 255
EDGES = np.arange(-39, 40) * BIN_WIDTH  # -3.98 .. 3.98
BINS = len(EDGES) - 1
Y_MAX = 1.0  # density axis; N(0, 1) peaks at 0.399, taller bars (a sharp x_0 at small t) are cut at the top
LINE_RGB = (30, 30, 30)
BAR_ALPHA = 0.6  # the bars: the schedule's colour at this opacity on white (the legend's patch too)


_levels = LRU(32)  # x_0 array (by identity: prepare_image caches and reuses it) -> p(v)


def x0_levels(x0: np.ndarray) -> np.ndarray:
    """p(v): the share of x_0's values (all channels) at each of the 256 levels of an 8-bit image."""
    def make():
        counts = np.bincount(np.rint((x0.reshape(-1) + 1.0) * 127.5).astype(np.int64), minlength=256)
        return x0, counts / counts.sum()

    source, p = _levels.get((id(x0), x0.shape), make)
    return p if source is x0 else make()[1]  # (an id reused by a new array: computed afresh)


def bin_counts(values: np.ndarray) -> np.ndarray:
    """How many of ``values`` fall in each bin of EDGES (uniform bins: one pass, no sort)."""
    k = (values.reshape(-1) - float(EDGES[0])) * (1.0 / BIN_WIDTH)  # (Python floats keep float32 data float32)
    k = np.clip(np.floor(k, out=k), -1, BINS, out=k).astype(np.int64)  # -1 and BINS: outside the edges
    return np.bincount(k + 1, minlength=BINS + 2)[1:-1]


def expected_density(p_levels: np.ndarray, alpha_bar: float) -> np.ndarray:
    """E[histogram density] of x_t's pixel values in each bin of EDGES (the formula in the module docstring)."""
    m = math.sqrt(alpha_bar) * LEVELS  # the mean of each level's pixels at t
    s = math.sqrt(max(1.0 - alpha_bar, 0.0))
    if s == 0.0:  # t = 0: x_t = x_0, each level falls in one bin
        mass = np.zeros(BINS)
        k = np.clip(np.searchsorted(EDGES, m, side="right") - 1, 0, BINS - 1)
        np.add.at(mass, k, p_levels)
    else:
        z = (torch.from_numpy(EDGES)[None, :] - torch.from_numpy(m)[:, None]) / s  # [256 levels, edges]
        cdf = torch.special.ndtr(z).numpy()
        mass = p_levels @ np.diff(cdf, axis=1)
    return mass / np.diff(EDGES)


def pixel_histogram(image, t: int = 500, schedule: str = "linear", seed: int = 0) -> dict:
    """The numbers behind the picture: edges, observed and expected density, observed and expected moments."""
    t, schedule, seed = validate_inputs(t, schedule, seed)
    x0 = prepare_image(image)
    sch = ARTICLE_SCHEDULES[schedule]
    ab = float(sch.alpha_bar_at(t))
    eps = torch.tensor(noise_like(x0, seed))[None]
    x_t = q_sample(torch.tensor(x0)[None], t, eps, sch)[0].numpy()  # float32, not clipped for display
    counts = bin_counts(x_t)
    p = x0_levels(x0)
    mean0 = float(p @ LEVELS)
    var0 = float(p @ (LEVELS - mean0) ** 2)
    return {"t": t, "alpha_bar": ab, "edges": EDGES, "observed": counts / (x_t.size * np.diff(EDGES)),
            "expected": expected_density(p, ab), "outside": float(1.0 - counts.sum() / x_t.size),
            "mean": float(x_t.mean()), "std": float(x_t.std()),
            "expected_mean": math.sqrt(ab) * mean0, "expected_std": math.sqrt(ab * var0 + 1.0 - ab)}


def _histogram_figure(schedule: str, with_normal: bool = True) -> Figure:
    fig = Figure(figsize=(6.4, 3.2), dpi=90, layout="constrained")
    ax = fig.add_subplot()
    ax.set_xlim(-X_RANGE, X_RANGE)
    ax.set_ylim(0, Y_MAX)
    ax.set_xlabel("pixel value of x_t (x_0 in [-1, 1])")
    ax.set_ylabel("density")
    ax.grid(alpha=0.3)
    ax.set_title("pixel values of x_t: one draw of ε (bars), expected (line), pure noise N(0, 1) (dashed)",
                 fontsize=8)
    xs = np.linspace(-X_RANGE, X_RANGE, 400)
    normal = np.exp(-xs ** 2 / 2) / math.sqrt(2 * math.pi)
    ax.plot(xs, normal, color="k", ls="--", lw=1.5, label="N(0, 1): pure noise", visible=with_normal)
    handles = [Patch(color=COLORS[schedule], alpha=BAR_ALPHA, label=f"x_t, {schedule} schedule"),
               Line2D([], [], color=np.array(LINE_RGB) / 255, lw=2, label="expected under q(x_t | x_0)")]
    ax.legend(handles=handles + ax.get_lines(), fontsize=7, loc="upper right")
    return fig


class _HistogramPlot:
    """The axes rendered once; bars and the expected line drawn per call, the N(0, 1) curve kept on top."""

    def __init__(self, schedule: str):
        self.plot = CursorPlot(_histogram_figure(schedule))
        bare = CursorPlot(_histogram_figure(schedule, with_normal=False)).base
        # where the dashed N(0, 1) is drawn (and its legend sample), as flat pixel indices
        self.normal_at = np.flatnonzero(np.any(self.plot.base != bare, axis=-1))
        rgb = np.array(schedule_rgb(schedule), dtype=np.float32)
        self.bar_rgb = np.rint(BAR_ALPHA * rgb + (1 - BAR_ALPHA) * 255).astype(np.uint8)
        a = self.plot.axes[0]
        self.rows, self.cols = a["rows"], a["cols"]
        self.edge_cols = [min(max(self.plot.column(0, e), self.cols[0]), self.cols[1]) for e in EDGES]

    def _row(self, density: float) -> int:
        return min(max(self.plot.row(0, min(density, Y_MAX)), self.rows[0]), self.rows[1] - 1)

    def draw(self, observed: np.ndarray, expected: np.ndarray) -> np.ndarray:
        img = self.plot.base.copy()
        bottom = self.rows[1]
        for k in range(BINS):  # bars, one column gap between them
            c0, c1 = self.edge_cols[k], self.edge_cols[k + 1] - 1
            if observed[k] > 0 and c1 > c0:
                img[self._row(observed[k]):bottom, c0:c1] = self.bar_rgb
        img.reshape(-1, 3)[self.normal_at] = self.plot.base.reshape(-1, 3)[self.normal_at]
        prev, floor = None, bottom - 2  # (a height under one pixel is left undrawn: no line along the axis)
        for k in range(BINS):  # the expected height as a 2-pixel step line
            c0, c1, r = self.edge_cols[k], self.edge_cols[k + 1], self._row(expected[k])
            if r < floor:
                img[r:r + 2, c0:c1] = LINE_RGB
            if prev is not None and min(prev, r) < floor:
                img[min(prev, r):min(max(prev, r), floor) + 2, c0:c0 + 2] = LINE_RGB
            prev = r
        return img


@functools.lru_cache(maxsize=None)
def _plot(schedule: str) -> _HistogramPlot:
    return _HistogramPlot(schedule)


def pixel_histogram_view(image, t: int = 500, schedule: str = "linear", seed: int = 0) -> tuple[np.ndarray, str]:
    """The slider handler: (the histogram picture, its numbers as Markdown)."""
    h = pixel_histogram(image, t, schedule, seed)
    img = _plot(schedule).draw(h["observed"], h["expected"])
    text = (f"**Pixel values of x_t at t = {h['t']}** ({schedule}): mean {h['mean']:+.3f}, std {h['std']:.3f}. "
            f"Expected under q(x_t | x_0): mean √ᾱ_t · mean(x_0) = {h['expected_mean']:+.3f}, "
            f"std √(ᾱ_t var(x_0) + 1 − ᾱ_t) = {h['expected_std']:.3f}. Pure noise N(0, 1): 0 and 1.")
    if h["outside"] > 0:
        text += f" ({h['outside']:.2%} of the values lie outside the plotted range.)"
    return img, text
