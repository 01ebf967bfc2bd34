"""Views of the forward process q(x_t | x_0): the noised image at t, the numbers at t, curves and strips.

Everything here is model-free. In the app the page paints x_t, the numbers, the curves' cursor and the
histogram itself from what ``client.py`` sends (a t move costs no server call); these functions are the
same views computed on the server, for API users and as the page's reference in tests. The image and the
noise are prepared once per (image, seed) and cached, so ``forward_noise`` is one closed-form step
x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (Ho et al. 2020, eq. 4) in numpy; the curve
pictures are rendered once per schedule and only the cursor is drawn per call (``CursorPlot``).
The ``*_curves`` functions return the same plots as live matplotlib Figures.
"""
from __future__ import annotations

import functools
import hashlib
import math
import os
import threading

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from ..render import images
from ..diffusion.schedules import make_schedule
from ..render.display import strip, to_uint8
from ..render.figures import forward_chain_frames, forward_strip, plot_schedule_curves
from .cache import LRU
from .inputs import SEED_MAX, check_choice, check_int, seeded_normal

T = 1000  # the article's number of steps
SCHEDULE_NAMES = ("linear", "cosine")
ARTICLE_SCHEDULES = {name: make_schedule(name, T) for name in SCHEDULE_NAMES}  # the two the article compares
STRIP_SIDE = 96  # longer side of the frames in the strips
COLORS = {"linear": "tab:blue", "cosine": "tab:orange"}
NEAR_NOISE = 0.01  # "near pure noise": alpha_bar_t below this (less than 10 % of the signal amplitude)


_images = LRU(32)
_noise = LRU(64)
_strips = LRU(16)  # (x_0, schedule, seed) -> the two strips (the 1000-step chain is the costly part)


def _key(source, max_side: int):
    if isinstance(source, np.ndarray):
        return ("array", source.shape, str(source.dtype), hashlib.blake2b(source.tobytes(), digest_size=16).hexdigest(),
                max_side)
    if isinstance(source, (str, os.PathLike)):
        try:
            st = os.stat(source)
        except OSError:
            return ("path", str(source), None, max_side)
        return ("path", str(source), st.st_mtime_ns, st.st_size, max_side)
    return None


def prepare_image(source, max_side: int = images.MAX_SIDE) -> np.ndarray:
    """Load (any upload) and convert to x_0: float32 [H,W,3] in [-1, 1] (read-only); cached per file/array."""
    key = _key(source, max_side)

    def make():
        x0 = images.to_unit_range(images.load_image(source, max_side=max_side, mode="RGB"))
        x0.setflags(write=False)
        return x0

    return make() if key is None else _images.get(key, make)


def noise_like(x0: np.ndarray, seed: int) -> np.ndarray:
    """The seed's noise eps for an [H,W,C] image (cached; the same for every schedule and t).

    Drawn by torch in [1,C,H,W] layout from a CPU generator, so the backend's tensors see the same eps.
    """
    h, w, c = x0.shape

    def make():
        eps = seeded_normal((1, c, h, w), seed)[0].permute(1, 2, 0).numpy().copy()
        eps.setflags(write=False)
        return eps

    return _noise.get((x0.shape, int(seed)), make)


def closed_form_uint8(x0: np.ndarray, eps: np.ndarray, alpha_bar: float) -> np.ndarray:
    """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (Ho et al. 2020, eq. 4), as uint8 for display.

    Plain numpy on purpose: single-threaded and about a millisecond at 256 px, whatever torch's thread
    settings (torch's intra-op threads stall small ops on a busy machine).
    """
    x = np.sqrt(alpha_bar, dtype=np.float32) * x0
    x += np.sqrt(1.0 - alpha_bar, dtype=np.float32) * eps
    x += 1.0
    x *= 127.5
    np.clip(x, 0.0, 255.0, out=x)
    return np.rint(x, out=x).astype(np.uint8)


def validate_inputs(t, schedule, seed) -> tuple[int, str, int]:
    """The forward tabs' inputs, checked: t in 0..T, a known schedule, a seed in 0..SEED_MAX."""
    return (check_int("t", t, 0, T), check_choice("schedule", schedule, SCHEDULE_NAMES),
            check_int("seed", seed, 0, SEED_MAX))


def noised(image, t: int, schedule: str, seed: int) -> np.ndarray:
    """x_t of ``image`` under ``schedule`` with the seed's noise, as uint8 [H,W,3]."""
    t, schedule, seed = validate_inputs(t, schedule, seed)
    x0 = prepare_image(image)
    return closed_form_uint8(x0, noise_like(x0, seed), float(ARTICLE_SCHEDULES[schedule].alpha_bar_at(t)))


def _fmt(v: float) -> str:
    if math.isinf(v):
        return "∞"
    return f"{v:.6g}" if abs(v) >= 1e-4 or v == 0 else f"{v:.3e}"


def numbers_at(t: int, schedule: str) -> str:
    """Markdown table of beta_t, alpha_bar_t, the mean coefficient, the variance and the SNR at t."""
    rows = [("β_t", "beta_t"), ("ᾱ_t", "alpha_bar_t"), ("mean coefficient √ᾱ_t", "sqrt_alpha_bar_t"),
            ("variance 1 − ᾱ_t", "one_minus_alpha_bar_t"), ("SNR ᾱ_t / (1 − ᾱ_t)", "snr")]
    s = {name: ARTICLE_SCHEDULES[name].summary_at(t) for name in SCHEDULE_NAMES}
    head = " | ".join(f"**{n}** (shown)" if n == schedule else n for n in SCHEDULE_NAMES)
    lines = [f"| at t = {t} | {head} |", "|---|" + "---:|" * len(SCHEDULE_NAMES)]
    lines += [f"| {label} | " + " | ".join(_fmt(s[n][key]) for n in SCHEDULE_NAMES) + " |" for label, key in rows]
    return "\n".join(lines)


def forward_noise(image, t: int = 500, schedule: str = "linear", seed: int = 0) -> tuple[np.ndarray, str]:
    """The slider handler: (x_t as uint8 [H,W,3], the numbers at t as Markdown)."""
    img = noised(image, t, schedule, seed)
    return img, numbers_at(int(t), schedule)


def _schedule_figure(t: int | None, schedule: str) -> Figure:
    fig = Figure(figsize=(6.4, 3.2), dpi=90, layout="constrained")
    ax = fig.add_subplot()
    plot_schedule_curves(ARTICLE_SCHEDULES, t, ax, highlight=schedule, colors=COLORS)
    ax.set_title("q(x_t | x_0): mean and variance" + (f", cursor at t = {t}" if t is not None else ""), fontsize=10)
    return fig


def schedule_curves(t: int = 500, schedule: str = "linear") -> Figure:
    """Mean coefficient sqrt(alpha_bar_t) and variance 1 - alpha_bar_t of both schedules, cursor at t."""
    t, schedule, _ = validate_inputs(t, schedule, 0)
    return _schedule_figure(t, schedule)


class CursorPlot:
    """A figure rendered once to pixels; ``draw(t)`` adds a cursor line (and markers) without redrawing it.

    Lets the curves follow the slider live instead of re-rendering matplotlib on every move.
    """

    def __init__(self, fig: Figure):
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        self.base = np.asarray(canvas.buffer_rgba())[..., :3].copy()
        self.base.setflags(write=False)
        h = self.base.shape[0]
        self.axes = []
        for ax in fig.axes:
            (x0, y0), (x1, y1) = ax.get_window_extent().get_points()
            p0, p1 = ax.transData.transform([[0.0, 0.0], [1.0, 1.0]])
            self.axes.append({"rows": (int(math.ceil(h - y1)), int(h - y0)), "cols": (int(math.ceil(x0)), int(x1)),
                              "x": (p0[0], p1[0] - p0[0]), "y": (h - p0[1], -(p1[1] - p0[1]))})

    def column(self, ax: int, t: float) -> int:
        off, scale = self.axes[ax]["x"]
        return int(round(off + scale * t))

    def row(self, ax: int, value: float) -> int:
        off, scale = self.axes[ax]["y"]
        return int(round(off + scale * value))

    def draw(self, t: float, markers=()) -> np.ndarray:
        """The base picture with a 2-pixel black cursor at t in every axes; markers: (axes index, y value, rgb)."""
        img = self.base.copy()
        for i, a in enumerate(self.axes):
            x = min(max(self.column(i, t), a["cols"][0]), a["cols"][1] - 2)
            img[a["rows"][0]:a["rows"][1], x:x + 2] = 0
        for i, value, rgb in markers:
            if not math.isfinite(value):
                continue
            a, x, y = self.axes[i], self.column(i, t), self.row(i, value)
            if a["rows"][0] <= y < a["rows"][1]:
                img[max(y - 3, 0):y + 4, max(x - 3, 0):x + 5] = rgb
        return img


@functools.lru_cache(maxsize=None)
def _schedule_plot(schedule: str) -> CursorPlot:
    return CursorPlot(_schedule_figure(None, schedule))


@functools.lru_cache(maxsize=None)
def _compare_plot() -> CursorPlot:
    return CursorPlot(_compare_figure(None))


def schedule_rgb(name: str) -> tuple[int, int, int]:
    """A schedule's plot colour as 8-bit RGB (for pixels drawn over the cached plots)."""
    return tuple(int(round(255 * c)) for c in to_rgb(COLORS[name]))


def schedule_curves_image(t: int = 500, schedule: str = "linear") -> np.ndarray:
    """``schedule_curves`` as a uint8 picture, fast enough to follow the slider (cached base + cursor)."""
    t, schedule, _ = validate_inputs(t, schedule, 0)
    ab = float(ARTICLE_SCHEDULES[schedule].alpha_bar_at(t))
    rgb = schedule_rgb(schedule)
    return _schedule_plot(schedule).draw(t, [(0, math.sqrt(ab), rgb), (0, 1 - ab, rgb)])


def forward_strips(image, schedule: str = "linear", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The whole forward process as two strips (like the article's figures 2, 3 and 5).

    1. ten frames from the closed form at t evenly spread over 0..T (the same eps in every frame);
    2. the actual 1000-step Markov chain x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) eps_t (fresh noise
       each step, Ho et al. eq. 2), sampled evenly every 100 steps.
    """
    _, schedule, seed = validate_inputs(0, schedule, seed)
    x0_hwc = prepare_image(image, max_side=STRIP_SIDE)

    def make():
        eps = torch.from_numpy(noise_like(x0_hwc, seed).copy()).permute(2, 0, 1)[None]
        x0 = torch.from_numpy(x0_hwc.copy()).permute(2, 0, 1)[None]
        sched = ARTICLE_SCHEDULES[schedule]
        ts = np.round(np.linspace(0, T, 10)).astype(int)
        closed = forward_strip(x0, sched, ts, eps)
        top = strip([to_uint8(x) for x in closed], [f"t={t}" for t in ts])
        chain_ts, chain = forward_chain_frames(x0, sched, 10, generator=torch.Generator().manual_seed(seed))
        bottom = strip([to_uint8(x) for x in chain], [f"t={t}" for t in chain_ts])
        for a in (top, bottom):
            a.setflags(write=False)
        return x0_hwc, (top, bottom)

    # cached: a class starts on the same picture, and a learner flips the schedule back and forth
    source, strips = _strips.get((id(x0_hwc), schedule, seed), make)
    return strips if source is x0_hwc else make()[1]  # (an id reused by a new array: computed afresh)


def compare_schedules(image, t: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """The same image and the same noise under linear and cosine at the same t, and their numbers."""
    t, _, seed = validate_inputs(t, "linear", seed)
    x0 = prepare_image(image)
    eps = noise_like(x0, seed)
    lin, cos = (closed_form_uint8(x0, eps, float(ARTICLE_SCHEDULES[n].alpha_bar_at(t))) for n in SCHEDULE_NAMES)
    near = {n: ARTICLE_SCHEDULES[n].steps_near_pure_noise(NEAR_NOISE) for n in SCHEDULE_NAMES}
    ab = {n: float(ARTICLE_SCHEDULES[n].alpha_bar_at(t)) for n in SCHEDULE_NAMES}
    text = numbers_at(t, "") + "\n\n" + "\n".join(
        f"- **{n}**: {near[n]} of {T} steps ({near[n] / T:.1%}) have ᾱ_t < {NEAR_NOISE} (signal amplitude "
        f"√ᾱ_t < {math.sqrt(NEAR_NOISE):.1f}: nearly pure noise); at t = {t} the image keeps "
        f"√ᾱ_t = {math.sqrt(ab[n]):.3f} of its amplitude." for n in SCHEDULE_NAMES)
    return lin, cos, text


def _compare_figure(t: int | None) -> Figure:
    fig = Figure(figsize=(8, 3.0), dpi=90, layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    steps = np.arange(1, T + 1)
    for name in SCHEDULE_NAMES:
        s = ARTICLE_SCHEDULES[name]
        ax1.plot(steps, s.alpha_bars, color=COLORS[name], label=name)
        ax2.plot(steps, s.log_snr, color=COLORS[name], label=name)
        ax1.fill_between(steps, 0, 1, where=s.alpha_bars < NEAR_NOISE, color=COLORS[name], alpha=0.12, lw=0,
                         label=f"{name}: ᾱ_t < {NEAR_NOISE} ({s.steps_near_pure_noise(NEAR_NOISE)} steps)")
    for ax in (ax1, ax2):
        if t is not None:
            ax.axvline(t, color="k", lw=1)
        ax.set_xlim(0, T)
        ax.set_xlabel("t")
        ax.grid(alpha=0.3)
    ax1.set_title("ᾱ_t (signal kept)", fontsize=10)
    ax2.set_title("log SNR = log(ᾱ_t / (1 − ᾱ_t))", fontsize=10)
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    return fig


def compare_curves(t: int = 300) -> Figure:
    """alpha_bar_t and log SNR of both schedules overlaid, the near-pure-noise zone shaded, cursor at t."""
    t, _, _ = validate_inputs(t, "linear", 0)
    return _compare_figure(t)


def compare_curves_image(t: int = 300) -> np.ndarray:
    """``compare_curves`` as a uint8 picture with markers at t, fast enough to follow the slider."""
    t, _, _ = validate_inputs(t, "linear", 0)
    markers = []
    for name in SCHEDULE_NAMES:
        if t >= 1:
            ab = float(ARTICLE_SCHEDULES[name].alpha_bar_at(t))
            markers += [(0, ab, schedule_rgb(name)), (1, float(ARTICLE_SCHEDULES[name].log_snr[t - 1]), schedule_rgb(name))]
    return _compare_plot().draw(t, markers)
