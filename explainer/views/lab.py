"""The 2D lab: a whole data distribution, every particle and the learned field on one screen.

Data: five presets and a drawing (``model/toy.py``). Denoisers: the small MLP (``model/mlp.py``; the presets
ship trained under ``checkpoints/lab/``, a drawing trains live) and the exact denoiser of the training points
(``diffusion/exact.py``), both plain eps functions driven by the same ``samplers.sample`` on the same chains.

Views (each returns pictures as uint8 arrays, drawn with numpy and PIL, and Markdown that says what to look at):
``forward_view`` (the cloud x_t, the exact density q(x_t), forward paths), ``field_view`` (-eps of the network
and of the exact denoiser as arrows), ``walk`` (a generator: particles from N(0, I) to the data, network and
exact side by side from the same noise, streamed), ``walk_frame`` (the scrubber), ``train`` (a generator:
training the MLP on the chosen data set, with progress).
"""
from __future__ import annotations

import contextlib
import functools
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..accel.share import TaskShare
from ..diffusion.exact import ExactDenoiser, marginal_density
from ..diffusion.forward import q_chain, q_sample
from ..diffusion.respacing import SamplingChain, training_timesteps
from ..diffusion.samplers import sample
from ..diffusion.schedules import DDPM_T, Schedule, make_schedule
from ..model import toy
from ..model.lab_training import LabTrainConfig, train_steps, warm_up  # noqa: F401 (warm_up: for server.launch.serve)
from ..model.mlp import LabCheckpointError, LabCheckpointMissing, LabModel, load_lab_model
from ..paths import CHECKPOINTS
from ..quality import points
from ..render.display import hstack, titled
from .cache import LRU
from .inputs import GUIDANCE_MAX, SEED_MAX, UNCONDITIONAL, check_choice, check_float, check_int, seeded_normal
from .walk import Pacer, WalkRequest, inference_schedule, kept_steps

LAB_CHECKPOINTS = CHECKPOINTS / "lab"
DRAWN = "draw your own"
DATASETS = toy.PRESETS + (DRAWN,)
ALL_CLASSES = [UNCONDITIONAL] + sorted({c for names in toy.CLASS_NAMES.values() for c in names},
                                       key=lambda c: (toy.COMPASS + (c,)).index(c))  # every preset's classes
SCHEDULES = ("linear", "cosine")
T = DDPM_T
TRAINING_SCHEDULE = "linear"  # every lab model's (the presets' and live training's)
NUM_POINTS = toy.NUM_POINTS  # training points of every data set
MIN_PARTICLES, MAX_PARTICLES, DEFAULT_PARTICLES = 200, 5000, 2000
DEFAULT_STEPS = 100
MIN_TRAIN_STEPS, MAX_TRAIN_STEPS = 50, 10_000  # the training-steps slider's range
MAX_DRAWING_SIDE = 2048  # the sketchpad's canvas is 400 x 400
LIVE_SECONDS = 13.0  # live training stops by then (2 s left for start-up, data and reply): the 15 s promise
LIVE_TRAIN = LabTrainConfig(max_seconds=LIVE_SECONDS)  # the presets: the same recipe, longer (checkpoints/lab)
TRACKED = 4  # particles whose trajectories are drawn
RECORDED_FRAMES = 100  # at most this many frames of a walk are kept for the scrubber (plus x_T)
EXTENT = 3.5  # the pictures show [-EXTENT, EXTENT]^2
PANEL = 300  # pixels of one square panel
PANEL_GAP = 8  # white pixels between two panels side by side
HEAT_GRID = 100  # density evaluated on HEAT_GRID^2 points, then enlarged
FIELD_GRID = 15  # arrows per side
LOSS_POINTS = 1000  # training points the field's loss numbers are measured on

PARTICLE = (25, 45, 120)
X0_HAT = (220, 60, 30)
PATH_COLOURS = [(214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (23, 190, 207), (140, 86, 75)]
_HEAT_LUT = np.stack([np.interp(np.linspace(0, 1, 256) ** 0.6, [0, 1], [255, c]) for c in (150, 170, 235)],
                     1).astype(np.uint8)  # white -> light blue


# ---------------------------------------------------------------- data and models


def drawing_array(sketch) -> np.ndarray | None:
    """The picture in a sketchpad value: its composite (or its layers merged), a plain array, PIL image or path."""
    if sketch is None:
        return None
    if isinstance(sketch, dict):
        comp = sketch.get("composite")
        if comp is not None:
            return drawing_array(comp)
        layers = [drawing_array(x) for x in sketch.get("layers") or [] if x is not None]
        if not layers:
            return None
        return np.max(np.stack([np.asarray(Image.fromarray(x).convert("RGBA")) for x in layers]), axis=0)
    if isinstance(sketch, (str, Path)):
        with Image.open(sketch) as im:
            return np.asarray(im.convert("RGBA"))
    if isinstance(sketch, Image.Image):
        return np.asarray(sketch.convert("RGBA"))
    return np.asarray(sketch)


class NothingDrawn(ValueError):
    """'draw your own' is chosen but the sketchpad holds no shape yet."""


_data_cache = LRU(16)


def lab_data(dataset: str, sketch=None) -> toy.ToyData:
    """The training set of a preset (NUM_POINTS points, a stratified draw with seed 0), or of the drawing in
    ``sketch``."""
    dataset = check_choice("data set", dataset, DATASETS)
    if dataset != DRAWN:
        return _data_cache.get(("preset", dataset), lambda: toy.make_preset(dataset, NUM_POINTS, 0))
    img = drawing_array(sketch)
    if img is None:
        raise NothingDrawn("nothing drawn yet: draw a shape on the sketchpad, or pick a preset data set")
    if img.ndim < 2 or max(img.shape[:2]) > MAX_DRAWING_SIDE:
        raise ValueError(f"a drawing must be a picture of at most {MAX_DRAWING_SIDE} x {MAX_DRAWING_SIDE} pixels, "
                         f"got shape {img.shape}")
    mask = toy.stroke_mask(img)
    if mask.sum() < toy.MIN_STROKE_PIXELS:
        raise NothingDrawn(f"the drawing has {int(mask.sum())} ink pixels: draw a shape (at least "
                           f"{toy.MIN_STROKE_PIXELS} pixels of dark strokes) on the sketchpad, or pick a preset")
    key = ("drawn", mask.shape, np.packbits(mask).tobytes())
    return _data_cache.get(key, lambda: toy.make_drawn(mask, NUM_POINTS, 0))


_shipped: dict[str, LabModel | LabCheckpointError] = {}
_shipped_lock = threading.Lock()


def shipped_model(dataset: str) -> LabModel | None:
    """The pre-trained network of a preset (checkpoints/lab/<preset>/), loaded once; None when it is missing or
    damaged (``no_network_message`` says which)."""
    if dataset not in toy.PRESETS:
        return None
    with _shipped_lock:
        if dataset not in _shipped:
            try:
                _shipped[dataset] = load_lab_model(LAB_CHECKPOINTS / toy.slug(dataset))
            except LabCheckpointError as e:
                _shipped[dataset] = e
        got = _shipped[dataset]
    return got if isinstance(got, LabModel) else None


def network_for(data: toy.ToyData, trained: LabModel | None) -> tuple[LabModel | None, str]:
    """The network that learned ``data``: this session's trained one, else the shipped one; and where it is from."""
    if trained is not None and trained.data_key == data.key:
        t = trained.info.get("training", {})
        return trained, f"trained here ({t.get('steps_done', '?')} steps in {t.get('seconds', '?')} s)"
    shipped = shipped_model(data.name)
    if shipped is not None and shipped.data_key == data.key:
        return shipped, "the shipped pre-trained network"
    return None, ""


def no_network_message(data: toy.ToyData) -> str:
    if data.name in toy.PRESETS:
        failure = _shipped.get(data.name)
        if isinstance(failure, LabCheckpointError) and not isinstance(failure, LabCheckpointMissing):
            return (f"The pre-trained network of {data.name} is damaged ({failure}); press 'Train' to train one "
                    f"here, or restore checkpoints/lab/{toy.slug(data.name)}.")
        return (f"The pre-trained network of {data.name} is missing (checkpoints/lab/{toy.slug(data.name)}); "
                "press 'Train' to train one here.")
    return "No network has learned this drawing yet: press 'Train' (a few seconds)."


_exact_cache = LRU(16)


def exact_for(data: toy.ToyData) -> ExactDenoiser:
    return _exact_cache.get(data.key, lambda: ExactDenoiser(data.points, training_schedule(), data.labels,
                                                            data.num_classes or None))


def training_schedule() -> Schedule:
    return _schedule(TRAINING_SCHEDULE)


_schedules = LRU(8)


def _schedule(name: str) -> Schedule:
    return _schedules.get(name, lambda: make_schedule(name, T))


def class_choices(data: toy.ToyData) -> list[str]:
    return [UNCONDITIONAL] + list(data.class_names)


def class_label(data: toy.ToyData, cls) -> int | None:
    """The class id of a class name (None: unconditional), with a clear message for a class the data lacks."""
    cls = UNCONDITIONAL if cls in (None, "") else str(cls)
    if cls != UNCONDITIONAL and not data.class_names:
        raise ValueError(f"{data.name} has no classes: choose '{UNCONDITIONAL}' (classes: the 8 Gaussians)")
    cls = check_choice("class", cls, class_choices(data))
    return None if cls == UNCONDITIONAL else data.class_names.index(cls)


# ---------------------------------------------------------------- drawing


def to_px(xy: np.ndarray, size: int = PANEL) -> np.ndarray:
    """Data coordinates [-EXTENT, EXTENT]^2 -> pixel coordinates (x right, y up), float."""
    xy = np.asarray(xy, dtype=np.float64)
    return np.stack([(xy[..., 0] + EXTENT) / (2 * EXTENT) * size, (EXTENT - xy[..., 1]) / (2 * EXTENT) * size], -1)


def grid_axis(n: int) -> np.ndarray:
    """Cell centres of an n-cell axis over [-EXTENT, EXTENT]."""
    return -EXTENT + (np.arange(n) + 0.5) * (2 * EXTENT / n)


_heat_cache = LRU(512)  # HEAT_GRID^2 pictures (30 kB each), enlarged on every call


def heat_map(data: toy.ToyData, alpha_bar: float, size: int = PANEL) -> np.ndarray:
    """The exact marginal q(x_t) of the data as a white-to-blue picture [size, size, 3] (cached per noise level).

    Scaled to its own maximum with a 0.6 power, so faint tails stay visible; at t = 0 the point masses are drawn
    with the blur of one grid cell.
    """
    def make():
        axis = grid_axis(HEAT_GRID)
        cell = 2 * EXTENT / HEAT_GRID
        dens = marginal_density(axis, axis[::-1], data.points, alpha_bar, min_var=(0.7 * cell) ** 2)
        return _HEAT_LUT[np.clip(dens / dens.max() * 255, 0, 255).astype(np.uint8)]
    small = _heat_cache.get((data.key, round(float(alpha_bar), 9)), make)
    reps = -(-size // HEAT_GRID)
    return np.repeat(np.repeat(small, reps, 0), reps, 1)[:size, :size]


def dots(img: np.ndarray, xy: np.ndarray, colour, size: int = 2) -> np.ndarray:
    """Draw data points ``xy`` [n, 2] as size x size squares into ``img`` (in place; points outside are skipped)."""
    px = np.floor(to_px(xy, img.shape[0])).astype(np.int64) - size // 2
    h, w = img.shape[:2]
    keep = (px[:, 0] >= 0) & (px[:, 1] >= 0) & (px[:, 0] <= w - size) & (px[:, 1] <= h - size)
    px = px[keep]
    for dy in range(size):
        for dx in range(size):
            img[px[:, 1] + dy, px[:, 0] + dx] = colour
    return img


def _polyline(draw: ImageDraw.ImageDraw, path: np.ndarray, colour, width: int = 1, size: int = PANEL):
    pts = [tuple(p) for p in to_px(path, size).tolist()]
    if len(pts) > 1:
        draw.line(pts, fill=colour, width=width)


def _message_panel(text: str, size: int = PANEL) -> np.ndarray:
    pic = Image.new("RGB", (size, size), (245, 245, 245))
    d = ImageDraw.Draw(pic)
    y = size // 2 - 20
    for line in _wrap(text, 44):
        d.text((10, y), line, fill=(90, 90, 90))
        y += 14
    return np.array(pic)


def _wrap(text: str, width: int) -> list[str]:
    lines, cur = [], ""
    for word in text.split():
        if cur and len(cur) + 1 + len(word) > width:
            lines.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}".strip()
    return lines + ([cur] if cur else [])


def _frame_border(img: np.ndarray) -> np.ndarray:
    img[0, :] = img[-1, :] = img[:, 0] = img[:, -1] = (160, 160, 160)
    return img


# ---------------------------------------------------------------- forward view


def validate_t(t) -> int:
    return check_int("t", t, 0, T)


_chain_cache = LRU(32)


def forward_paths(data: toy.ToyData, schedule: Schedule, seed: int, k: int = TRACKED) -> np.ndarray:
    """[T + 1, k, 2]: k training points' paths through the step-by-step chain q(x_t | x_{t-1}) (``q_chain``)."""
    def make():
        pick = np.random.default_rng(seed).choice(len(data.points), k, replace=False)
        x0 = torch.as_tensor(data.points[pick], dtype=torch.float64)
        gen = torch.Generator().manual_seed(int(seed))
        return np.stack([x.numpy() for _, x in q_chain(x0, schedule, generator=gen)])
    return _chain_cache.get((data.key, schedule.name, int(seed), k), make)


def noisy_cloud(data: toy.ToyData, t: int, schedule: Schedule, seed: int) -> np.ndarray:
    """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps for every training point (``q_sample``), one seeded eps."""
    x0 = torch.as_tensor(data.points)
    eps = seeded_normal(x0.shape, seed).to(torch.float64)
    return q_sample(x0, t, eps, schedule).numpy()


def forward_view(dataset: str, t: int = 100, schedule: str = "linear", seed: int = 0, sketch=None):
    """(picture, Markdown): the cloud x_t, the exact density q(x_t) under ``schedule`` and forward paths at t.

    With 'draw your own' and nothing drawn yet, the picture says so (no error).
    """
    try:
        data = lab_data(dataset, sketch)
    except NothingDrawn as e:
        return _message_panel(str(e)), str(e)
    t = validate_t(t)
    schedule = _schedule(check_choice("schedule", schedule, SCHEDULES))
    seed = check_int("seed", seed, 0, SEED_MAX)
    ab = float(schedule.alpha_bar_at(t))
    img = heat_map(data, ab)
    dots(img, noisy_cloud(data, t, schedule, seed), PARTICLE, 2)
    paths = forward_paths(data, schedule, seed)[:t + 1]
    pic = Image.fromarray(img)
    draw = ImageDraw.Draw(pic)
    for j in range(paths.shape[1]):
        _polyline(draw, paths[:, j], PATH_COLOURS[j % len(PATH_COLOURS)], 1)
        for (x, y), r in ((to_px(paths[0, j]), 3), (to_px(paths[-1, j]), 4)):
            draw.ellipse([x - r, y - r, x + r, y + r], outline=PATH_COLOURS[j % len(PATH_COLOURS)], width=2)
    img = _frame_border(titled(np.asarray(pic), f"{data.name}: x_t at t = {t} ({schedule.name})"))
    s = schedule.summary_at(t)
    snr = "inf" if t == 0 else f"{s['snr']:.4g}"
    text = (f"**t = {t}**, {schedule.name} schedule: ᾱ_t = {ab:.4g}, mean factor √ᾱ_t = {np.sqrt(ab):.4f}, "
            f"noise std √(1 − ᾱ_t) = {np.sqrt(1 - ab):.4f}, SNR = {snr}.\n\n"
            f"What to look at: the dark dots are all {len(data.points)} training points noised in one go, "
            f"x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε (eq. 4); the blue shading is the exact density q(x_t), the mixture "
            f"(1/N) Σ_i N(x_t; √ᾱ_t x_i, (1 − ᾱ_t) I) of the data, so the dots always sit where it is dark. As t "
            "grows the shape shrinks towards 0 and blurs into N(0, I). The coloured lines are four points' paths "
            "through the step-by-step chain x_t = √α_t x_(t−1) + √β_t ε (fresh noise every step; small circle: "
            "x_0, large circle: x_t): jagged, yet at every t distributed exactly like the cloud.")
    return img, text


# ---------------------------------------------------------------- the field


def _field_eps(eps_fn, grid: torch.Tensor, alpha_bar: float, label: int | None, guidance: float, null_label):
    from ..diffusion.samplers import guided_eps
    labels = None if label is None else torch.full((grid.shape[0],), label, dtype=torch.long)
    with torch.inference_mode():
        return guided_eps(eps_fn, grid, alpha_bar, labels, guidance, null_label).double().numpy()


def _arrows(img: np.ndarray, grid: np.ndarray, eps: np.ndarray, colour=(30, 30, 30)) -> np.ndarray:
    """-eps at each grid point as an arrow (|eps| = 1 -> half a cell; capped at one cell)."""
    cell = img.shape[0] / FIELD_GRID
    v = -eps * (0.5 * cell)
    n = np.linalg.norm(v, axis=1, keepdims=True)
    v = np.where(n > cell, v * cell / np.maximum(n, 1e-12), v)
    start = to_px(grid, img.shape[0])
    end = start + v * np.array([1.0, -1.0])
    pic = Image.fromarray(img)
    d = ImageDraw.Draw(pic)
    for (x0, y0), (x1, y1) in zip(start.tolist(), end.tolist()):
        d.line([(x0, y0), (x1, y1)], fill=colour, width=1)
        dx, dy = x1 - x0, y1 - y0
        L = (dx * dx + dy * dy) ** 0.5
        if L > 3:
            ux, uy = dx / L, dy / L
            h = min(4.0, 0.4 * L)
            for sx, sy in ((-uy, ux), (uy, -ux)):
                d.line([(x1, y1), (x1 - h * ux + 0.5 * h * sx, y1 - h * uy + 0.5 * h * sy)], fill=colour, width=1)
    return np.array(pic)


def field_view(dataset: str, t: int = 100, schedule: str = "linear", cls: str = UNCONDITIONAL,
               guidance: float = 1.0, trained: LabModel | None = None, sketch=None, seed: int = 0):
    """(picture, Markdown): -eps_hat(x_t, t) as arrows for the network and for the exact denoiser, over q(x_t).

    At t = 0 (no noise, nothing to predict) the field of t = 1 is shown.
    """
    try:
        data = lab_data(dataset, sketch)
    except NothingDrawn as e:
        return hstack([_message_panel(str(e))] * 2, pad=PANEL_GAP), str(e)
    t = validate_t(t)
    sched = _schedule(check_choice("schedule", schedule, SCHEDULES))
    label = class_label(data, cls)
    guidance = check_float("guidance scale", guidance, 0.0, GUIDANCE_MAX)
    seed = check_int("seed", seed, 0, SEED_MAX)
    shown_at = "" if t > 0 else " (t = 0 has no noise to predict: shown at t = 1)"
    t = max(t, 1)
    model_t = round(float(training_timesteps(sched.alpha_bar_at(t), training_schedule())), 1)  # the network's step
    ab = float(sched.alpha_bar_at(t))
    exact = exact_for(data)
    net, source = network_for(data, trained)
    axis = grid_axis(FIELD_GRID)
    gx, gy = np.meshgrid(axis, axis[::-1])
    grid = torch.as_tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=torch.float32)
    base = heat_map(data, ab)
    ex_eps = _field_eps(exact, grid, ab, label, guidance, exact.null_label)
    right = _frame_border(titled(_arrows(base.copy(), grid.numpy(), ex_eps), "exact denoiser of the training points"))
    if net is None:
        left = _message_panel(no_network_message(data))
        numbers = no_network_message(data)
    else:
        net_eps = _field_eps(net, grid, ab, label, guidance, net.null_label)
        left = _frame_border(titled(_arrows(base.copy(), grid.numpy(), net_eps), f"network (MLP, {source})"))
        numbers = f"Network: {source}. " + _loss_numbers(data, net, exact, t, sched, seed)
    cond = "" if label is None else f" Class {data.class_names[label]} with guidance w = {guidance:g}."
    text = (f"**−ε̂(x_t, t) at t = {t}**{shown_at} ({sched.name} schedule; the network is called at its training step "
            f"{model_t:g}).{cond} {numbers}\n\nWhat to look at: each arrow is −ε̂, the way a denoising step moves a "
            "particle there; it is proportional to the score ∇ log q(x_t) = −ε/√(1 − ᾱ_t). The exact denoiser's "
            "arrows point at the training points themselves (at small t, sharply at the nearest one); the "
            "network's field is smoother: it has learned the shape, not the individual points. At large t both "
            "just point at the data's centre.")
    return hstack([left, right], pad=PANEL_GAP), text


def _loss_numbers(data, net: LabModel, exact: ExactDenoiser, t: int, sched: Schedule, seed: int) -> str:
    """L_simple at t on (up to 1000 of) the noised training points: the network's, the exact denoiser's (the minimum
    any function reaches on the training points), and their gap."""
    x0 = torch.as_tensor(data.points[:LOSS_POINTS])
    eps = seeded_normal(x0.shape, seed + 1).double()
    xt = q_sample(x0, t, eps, sched)
    ab = float(sched.alpha_bar_at(t))
    with torch.inference_mode():
        e_net = net(xt.float(), ab).double()
    e_ex = exact(xt, ab)
    l_net = float(((e_net - eps) ** 2).sum(1).mean())
    l_ex = float(((e_ex - eps) ** 2).sum(1).mean())
    gap = float(((e_net - e_ex) ** 2).sum(1).mean())
    return (f"On {len(x0)} training points noised to t: loss ‖ε − ε̂‖² of the network {l_net:.3f}, of the exact "
            f"denoiser {l_ex:.3f} (on average over the noise, the least any function can reach on the training "
            f"set), ‖ε̂_net − ε̂_exact‖² = {gap:.3f}.")


# ---------------------------------------------------------------- the reverse walk


@dataclass
class LabWalk:
    """A recorded walk of the particles, network and exact denoiser from the same x_T and the same noise.

    frames: recorded step indices k (0 = x_T); ts / alpha_bars: the inference schedule's t and abar per frame;
    pos[name] / x0[name]: [frames, n, 2] float16 positions and x0_hat (x0 of frame 0 is unset);
    paths[name]: [steps + 1, k, 2] every step of the tracked particles; other[name]: the same particles under the
    other sampler (``other_name``) from the same start.
    """

    data: toy.ToyData = field(repr=False)
    settings: str
    sampler: str
    other_name: str
    schedule: str
    steps: int
    label: int | None = None  # the class walked to (None: unconditional)
    frames: list = field(default_factory=list)
    ts: list = field(default_factory=list)
    alpha_bars: list = field(default_factory=list)
    pos: dict = field(default_factory=dict)
    x0: dict = field(default_factory=dict)
    paths: dict = field(default_factory=dict)
    other: dict = field(default_factory=dict)
    other_ts: list = field(default_factory=list)
    metrics: str = ""
    final: dict = field(default_factory=dict)  # name -> final positions [n, 2] float64

    @property
    def names(self) -> list[str]:
        return list(self.pos)

    @property
    def done(self) -> int:
        """Recorded frames minus one (the scrubber's maximum)."""
        return len(self.frames) - 1

    def by_method(self, name: str, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(DDPM paths, DDIM paths) of denoiser ``name``'s tracked particles up to ``step``."""
        main, other = self.paths[name][:step + 1], self.other[name][:step + 1]
        return (main, other) if self.sampler == "DDPM" else (other, main)


@dataclass
class LabWalkUpdate:
    picture: np.ndarray | None
    status: str
    step: int
    total: int
    walk: LabWalk | None = None
    finished: bool = False


NAMES = {"network": "network (MLP)", "exact": "exact denoiser"}
WALK_CAPTION = (
    "What to look at: dark dots are the particles x_t, red dots each particle's x0_hat, where it 'thinks it is "
    "going': at large t all of them sit near the data's mean, at small t on the nearest points. Coloured lines: four "
    "particles (squares: x_T) walked by DDPM (thin, faint) and by DDIM (thick) from the same start: DDPM adds fresh "
    "noise every step, so its paths are jagged, while DDIM with eta = 0 is deterministic and smooth. The shading is "
    "q(x_t), where the particles should be at this t if the walk were perfect. The inset zooms in on the densest "
    "training points (grey squares): at t = 0 the exact denoiser's particles sit exactly on them (it memorises), "
    "the network's do not (it has learned the shape).")


def walk_panel(data: toy.ToyData, alpha_bar: float, t: int, pos: np.ndarray, x0: np.ndarray | None,
               ddpm: np.ndarray, ddim: np.ndarray, title: str, label: int | None = None) -> np.ndarray:
    """One denoiser's panel: q(x_t) shading, particles, their x0_hat, the tracked particles' DDPM paths (thin,
    faint) and DDIM paths (thick), and a zoom on the training points near the densest one (of class ``label``)."""
    img = heat_map(data, alpha_bar)
    if x0 is not None:
        dots(img, x0, X0_HAT, 1)
    dots(img, pos, PARTICLE, 2)
    pic = Image.fromarray(img).convert("RGBA")
    layer = Image.new("RGBA", pic.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    for j in range(ddpm.shape[1]):
        colour = PATH_COLOURS[j % len(PATH_COLOURS)]
        _polyline(d, ddim[:, j], colour + (255,), 2)
        _polyline(d, ddpm[:, j], colour + (140,), 1)
        x, y = to_px(ddpm[0, j])
        d.rectangle([x - 3, y - 3, x + 3, y + 3], outline=colour + (255,), width=2)
        for end in (ddpm[-1, j], ddim[-1, j]):
            x, y = to_px(end)
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour + (255,), outline=(0, 0, 0, 255))
    pic = np.array(Image.alpha_composite(pic, layer).convert("RGB"))
    _zoom_inset(pic, data, pos, label)
    return _frame_border(titled(pic, f"{title}, t = {t}"))


ZOOM_HALF = 0.1  # the inset shows [c - ZOOM_HALF, c + ZOOM_HALF]^2 around the densest training point c
ZOOM_PX = 110
TRAINING_POINT = (150, 150, 150)
_zoom_centres = LRU(32)


def zoom_centre(data: toy.ToyData, label: int | None = None) -> np.ndarray:
    """The training point (of class ``label``) with the most others within ZOOM_HALF: memorisation shows best there."""
    def make():
        pts = data.class_points(label)
        sq = (pts * pts).sum(1)
        d2 = sq[:, None] - 2 * pts @ pts.T + sq[None]
        return pts[int(np.argmax((d2 < ZOOM_HALF ** 2).sum(1)))]
    return _zoom_centres.get((data.key, label), make)


def _zoom_inset(img: np.ndarray, data: toy.ToyData, pos: np.ndarray, label: int | None = None) -> np.ndarray:
    """Bottom-left inset, in place: the training points (grey) and the particles (dark) near ``zoom_centre``."""
    c = zoom_centre(data, label)
    scale = ZOOM_PX / (2 * ZOOM_HALF)

    def local(xy):
        xy = np.asarray(xy, dtype=np.float64) - c
        keep = (np.abs(xy) < ZOOM_HALF).all(1)
        return np.floor(np.stack([(xy[keep, 0] + ZOOM_HALF) * scale, (ZOOM_HALF - xy[keep, 1]) * scale], 1)).astype(int)
    box = np.full((ZOOM_PX, ZOOM_PX, 3), 255, np.uint8)
    for (x, y) in local(data.points):
        box[max(0, y - 2):y + 3, max(0, x - 2):x + 3] = TRAINING_POINT
    for (x, y) in local(pos):
        box[max(0, y - 1):y + 2, max(0, x - 1):x + 2] = PARTICLE
    box[0, :] = box[-1, :] = box[:, 0] = box[:, -1] = (90, 90, 90)
    y0 = img.shape[0] - ZOOM_PX - 4
    img[y0:y0 + ZOOM_PX, 4:4 + ZOOM_PX] = box
    # mark the zoomed region on the panel
    px = to_px(np.array([c - ZOOM_HALF, c + ZOOM_HALF]), img.shape[0])
    x0_, x1_ = int(px[0, 0]), int(px[1, 0])
    y1_, y0_ = int(px[0, 1]), int(px[1, 1])
    pic = Image.fromarray(img)
    ImageDraw.Draw(pic).rectangle([x0_, y0_, x1_, y1_], outline=(90, 90, 90))
    img[:] = np.asarray(pic)
    return img


@dataclass(frozen=True)
class LabWalkRequest(WalkRequest):
    """A lab walk: the shared settings, the data set, DDIM's eta, the number of particles and the class."""

    data: toy.ToyData
    eta: float
    particles: int
    label: int | None  # the class id walked to (None: unconditional)

    @classmethod
    def checked(cls, dataset, sampler, steps, eta, schedule, particles, cls_name, guidance, seed,
                sketch) -> LabWalkRequest:
        data = lab_data(dataset, sketch)
        common = cls.check_common(sampler, steps, schedule, guidance, seed, T, "number of steps")
        return cls(**common, data=data, eta=check_float("eta", eta, 0.0, 1.0),
                   particles=check_int("number of particles", particles, MIN_PARTICLES, MAX_PARTICLES),
                   label=class_label(data, cls_name))


@dataclass
class _WalkSetup:
    """A walk's checked request and what follows from it: the network, the schedules and the sampling chain."""

    req: LabWalkRequest
    net: LabModel | None
    source: str
    train_sched: Schedule
    inference: Schedule | None  # the other schedule, when it is chosen
    chain: SamplingChain

    @property
    def schedule_name(self) -> str:
        return (self.inference or self.train_sched).name

    def settings(self) -> str:
        req = self.req
        cls = None if req.label is None else req.data.class_names[req.label]
        cond = "" if cls is None else f", class {cls}, guidance w = {req.guidance:g}"
        return (f"{req.sampler}{f' (eta = {req.eta:g})' if req.method == 'ddim' else ''}, {len(self.chain)} steps "
                f"of the {self.schedule_name} schedule, {req.particles} particles, seed {req.seed}{cond}")

    def note(self) -> str:
        """Where the network comes from (or that none has learned the data), and what another schedule changes."""
        note = f"Network: {self.source}." if self.net is not None else no_network_message(self.req.data)
        if self.inference is not None:
            note += (f" With the {self.schedule_name} schedule the network is called at the {self.train_sched.name} "
                     f"step of the same noise level, between two of its steps where it falls there, the exact denoiser at the {self.schedule_name} "
                     f"level itself: its first steps are noisier (ᾱ_T = {self.inference.alpha_bars[-1]:.2g}) than any "
                     "the network saw, and DDIM, which carries x0_hat forward without fresh noise, magnifies that "
                     "mismatch.")
        return note


def _walk_setup(dataset, sampler, steps, eta, schedule, particles, cls, guidance, seed, trained, sketch) -> _WalkSetup:
    """Check a walk's inputs, find the network that learned the data and build the chain (``walk.walk_chain``: the
    training schedule or the other one)."""
    req = LabWalkRequest.checked(dataset, sampler, steps, eta, schedule, particles, cls, guidance, seed, sketch)
    net, source = network_for(req.data, trained)
    train_sched = net.schedule if net is not None else training_schedule()
    return _WalkSetup(req, net, source, train_sched, inference_schedule(train_sched, req.schedule),
                      req.chain(train_sched))


def _start_walks(setup: _WalkSetup, share: TaskShare, x_T: torch.Tensor) -> tuple[dict, dict]:
    """Each denoiser's walk (``samplers.sample``) of all particles, and of the tracked ones under the other sampler
    (DDIM with eta = 0 beside DDPM, DDPM beside DDIM), from the same x_T and with the same noise."""
    net, exact, chain = setup.net, exact_for(setup.req.data), setup.chain
    # both are told the chain's noise levels: the network evaluates its (fractional) training step of that level, the exact
    # denoiser the level itself (exact for any schedule)
    fns = {"network": (lambda: net, net.null_label)} if net is not None else {}
    fns["exact"] = (lambda: functools.partial(exact, share=share), exact.null_label)
    req = setup.req
    other_method = "ddim" if req.method == "ddpm" else "ddpm"
    labels = None if req.label is None else torch.full((req.particles,), req.label, dtype=torch.long)
    k = min(TRACKED, req.particles)
    runs, others = {}, {}
    for name, (make_fn, null) in fns.items():
        runs[name] = sample(make_fn(), chain, (req.particles, 2), method=req.method, labels=labels,
                            guidance=req.guidance, null_label=null, eta=req.eta,
                            generator=torch.Generator().manual_seed(req.seed + 1), x_T=x_T)
        others[name] = sample(make_fn(), chain, (k, 2), method=other_method, eta=0.0,
                              labels=None if labels is None else labels[:k], guidance=req.guidance, null_label=null,
                              generator=torch.Generator().manual_seed(req.seed + 2), x_T=x_T[:k])
    return runs, others


def _new_record(setup: _WalkSetup, names: list[str], x_T: torch.Tensor) -> tuple[LabWalk, set[int]]:
    """The walk's record, x_T its frame 0, with room for the tracked particles' every step and for the frames kept for
    the scrubber (RECORDED_FRAMES, evenly spread); returns it and the steps whose frames it keeps."""
    req = setup.req
    chain, n, k = setup.chain, req.particles, min(TRACKED, req.particles)
    other_label = "DDIM (eta = 0)" if req.method == "ddpm" else "DDPM"
    rec = LabWalk(req.data, setup.settings(), req.sampler, other_label, setup.schedule_name, len(chain), req.label)
    keep = set(kept_steps(len(chain), RECORDED_FRAMES))
    for name in names:
        rec.pos[name] = np.zeros((len(keep), n, 2), np.float16)
        rec.x0[name] = np.zeros((len(keep), n, 2), np.float16)
        rec.paths[name] = np.zeros((len(chain) + 1, k, 2), np.float32)
        rec.other[name] = np.zeros((len(chain) + 1, k, 2), np.float32)
        rec.pos[name][0] = x_T.numpy()
        rec.paths[name][0] = rec.other[name][0] = x_T[:k].numpy()
    rec.frames.append(0)
    rec.ts.append(int(chain.timesteps[0]))
    rec.alpha_bars.append(float(chain.alpha_bar[0]))
    return rec, keep


def _side_by_side_steps(runs: dict, others: dict, total: int, share: TaskShare):
    """Advance every walk (and its tracked companion) a step at a time, yielding (step, {name: (record, companion's
    record)}). The exact denoiser walks in its own thread, as far ahead as it gets (``_walk_ahead``); this one advances
    the others, then computes chunks of the exact walk's current step (``accel.share``) until it is done. Closing the
    generator stops the exact walk's thread."""
    pool = ThreadPoolExecutor(max_workers=1)
    exact_steps = [Future() for _ in range(total)]
    stop = threading.Event()
    try:
        pool.submit(_walk_ahead, runs["exact"], others["exact"], exact_steps, stop)
        for i in range(total):
            results = {name: _advance(runs[name], others[name]) for name in runs if name != "exact"}
            share.help_until(exact_steps[i])  # compute chunks of the exact walk's current step until step i is done
            results["exact"] = exact_steps[i].result()
            yield i + 1, results
    finally:
        stop.set()
        pool.shutdown(wait=True)


def _record_step(rec: LabWalk, current: dict, results: dict, step: int, chain: SamplingChain,
                 keep: set[int]) -> tuple[int, float]:
    """Take in a step's records: each walk's particles and x0_hat (``current``), the tracked paths, and a frame for the
    scrubber when ``keep`` has the step; returns t and alpha_bar after the step."""
    for name, (r, o) in results.items():
        current[name] = (r.x_prev.numpy(), r.x0_hat.numpy())
        rec.paths[name][step] = r.x_prev[:rec.paths[name].shape[1]].numpy()
        rec.other[name][step] = o.x_prev.numpy()
    t_prev = next(iter(results.values()))[0].t_prev
    ab_prev = float(chain.alpha_bar_prev[step - 1])
    if step in keep:
        j = len(rec.frames)
        rec.frames.append(step)
        rec.ts.append(t_prev)
        rec.alpha_bars.append(ab_prev)
        for name in current:
            rec.pos[name][j], rec.x0[name][j] = current[name]
    return t_prev, ab_prev


def _walk_picture(rec: LabWalk, current: dict, step: int, t: int, ab: float) -> np.ndarray:
    """Each denoiser's panel at a step (``current``: name -> particles and x0_hat or None), a message in place of a
    missing network."""
    panels = [] if "network" in current else [_message_panel(no_network_message(rec.data))]
    for name, (pos, x0) in current.items():
        panels.append(walk_panel(rec.data, ab, t, pos, x0, *rec.by_method(name, step), NAMES[name], rec.label))
    return hstack(panels, pad=PANEL_GAP)


def walk(dataset: str = "two moons", sampler: str = "DDPM", steps: int = DEFAULT_STEPS, eta: float = 0.0,
         schedule: str = "training", particles: int = DEFAULT_PARTICLES, cls: str = UNCONDITIONAL,
         guidance: float = 1.0, seed: int = 0, trained: LabModel | None = None, sketch=None):
    """Walk ``particles`` from N(0, I) to the data, yielding LabWalkUpdates as ``walk.Pacer`` paces them.

    The network (when one has learned the data) and the exact denoiser run side by side from the same x_T with
    the same per-step noise, each through ``samplers.sample``; four tracked particles also take the other sampler
    (DDIM with eta = 0 beside DDPM, DDPM beside DDIM) from the same start. The exact denoiser walks in a second
    thread, as far ahead as it gets; this one, after the network's step (and a picture), computes chunks of the exact
    walk's current step (``accel.share``), so both cores stay busy. The last update carries the recorded walk and
    its numbers.
    """
    setup = _walk_setup(dataset, sampler, steps, eta, schedule, particles, cls, guidance, seed, trained, sketch)
    share = TaskShare()  # the network's thread computes part of the exact denoiser's step once its own is done
    x_T = seeded_normal((setup.req.particles, 2), setup.req.seed)
    runs, others = _start_walks(setup, share, x_T)
    rec, keep = _new_record(setup, list(runs), x_T)
    current = {name: (x_T.numpy(), None) for name in runs}
    total, note = len(setup.chain), setup.note()
    yield LabWalkUpdate(_walk_picture(rec, current, 0, rec.ts[0], rec.alpha_bars[0]),
                        f"Starting from N(0, I): {rec.settings}. {note}", 0, total)
    started = time.perf_counter()
    pacer = Pacer([total])
    with contextlib.closing(_side_by_side_steps(runs, others, total, share)) as stepped:
        for step, results in stepped:
            t_prev, ab_prev = _record_step(rec, current, results, step, setup.chain, keep)
            update, show = pacer.due(0, step, step == 1)
            if step == total or not update:  # (the last step's picture is the end picture below)
                continue
            pic = _walk_picture(rec, current, step, t_prev, ab_prev) if show else None
            yield LabWalkUpdate(pic, f"step {step}/{total}, t = {t_prev}", step, total)
            pacer.sent(0, show)
    seconds = time.perf_counter() - started
    for name in runs:
        rec.final[name] = current[name][0].astype(np.float64)
    rec.final["noise"] = x_T.numpy().astype(np.float64)
    done = f"Done: {rec.settings}, in {seconds:.2f} s. {note}"
    end = _walk_picture(rec, current, total, 0, 1.0)
    yield LabWalkUpdate(end, done + " Measuring the distances...", total, total)
    rec.metrics = walk_metrics(rec.data, rec.final, setup.req.label, setup.req.seed)
    yield LabWalkUpdate(end, done, total, total, rec, True)  # the end picture again: API callers read the last


def _advance(run, other):
    return next(run), next(other)


def _walk_ahead(run, other, steps: list[Future], stop: threading.Event) -> None:
    """Advance a walk (and its tracked companion) through every step, handing step i's records to ``steps[i]``;
    stops early when ``stop`` is set (the viewer left), and hands an error to every step not done."""
    try:
        for future in steps:
            if stop.is_set():
                future.cancel()
                continue
            future.set_result(_advance(run, other))
    except BaseException as e:  # noqa: BLE001 - the consumer re-raises it from the step it waits for
        for future in steps:
            if not future.done():
                future.set_exception(e)


REFERENCES = 3  # fresh reference samples each distance is averaged over


def _references(data: toy.ToyData, n: int, label: int | None) -> points.Fresh:
    """REFERENCES pairs of fresh samples of n points (cached per data set, size and class, so walks compare)."""
    return _floor_cache.get((data.key, n, label), lambda: points.fresh(
        data, n, [1_000_003 + j for j in range(REFERENCES)], [2_000_003 + j for j in range(REFERENCES)],
        points.landing_tolerance(training_schedule()), label))


_floor_cache = LRU(32)


def walk_metrics(data: toy.ToyData, final: dict, label: int | None, seed: int = 0) -> str:
    """Markdown: each set of final particles against fresh data (sliced Wasserstein averaged over REFERENCES fresh
    samples, and the data-vs-data floor), and the share that lands on a training point."""
    n = len(final["noise"])
    ref = _references(data, n, label)
    floors, training_sw = ref.floors, ref.training
    floor = float(floors.mean())
    rows = [("network (MLP)", final.get("network")), ("exact denoiser", final.get("exact")),
            ("plain noise x_T", final["noise"])]
    lines = ["| particles at the end | distance to fresh data (sliced Wasserstein) | × floor | on a training point |",
             "|---|---|---|---|"]
    for name, x in rows:
        if x is None:
            continue
        m = points.measure(x, ref)
        sw = m["sliced_wasserstein"]
        lines.append(f"| {name} | {sw:.4f} | {sw / floor:.2f} | {100 * m['on_training_point']:.1f} % |")
    lines.append(f"| the training points themselves | {training_sw:.4f} | {training_sw / floor:.2f} | 100.0 % |")
    lines.append(f"| fresh data (the floor) | {floor:.4f} ({floors.min():.4f} to {floors.max():.4f}) | 1.00 "
                 f"({floors.min() / floor:.2f} to {floors.max() / floor:.2f}) | "
                 f"{100 * ref.fresh_share:.1f} % |")
    text = "\n".join(lines)
    text += (f"\n\nFresh data: new samples of {n} points from the same distribution"
             f"{'' if label is None else ' and class'}, never trained on; each distance is the mean over "
             f"{REFERENCES} of them, and the floor is the distance between such samples: what a perfect sampler "
             f"would get. 'On a training point': within {ref.tol:.2g} (the noise level √(1 − ᾱ_1) of the schedule's "
             f"first step) of one of the {len(ref.points)} training points. The training points are a finite draw from "
             "the distribution too, a stratified one (spread evenly along the shape, without the clumps and gaps "
             "of independent draws), so they usually score below the floor: a sampler that returns them (the exact "
             "denoiser does, nearly) scores what they score. Finite samples make every distance noisy "
             "(see the floor's own range): one walk's ratio moves by tens of percent from seed to seed; "
             "benchmarks/lab_speed.py averages many walks.")
    if data.labels is not None:
        text += "\n\n" + _class_numbers(data, final, label, ref.refs[0])
    return text


def _class_numbers(data: toy.ToyData, final: dict, label: int | None, ref: np.ndarray) -> str:
    """For a labelled set: where the particles landed (the class of their nearest training point) and their spread."""
    parts = []
    for name, key in (("network", "network"), ("exact denoiser", "exact")):
        x = final.get(key)
        if x is None:
            continue
        _, idx = points.nearest_distances(x, data.points)
        cls = data.labels[idx]
        if label is None:
            counts = np.bincount(cls, minlength=data.num_classes) / len(x)
            parts.append(f"{name}: classes " + ", ".join(f"{c} {100 * s:.0f} %" for c, s in
                                                          zip(data.class_names, counts)))
        else:
            spread = float(np.sqrt(((x - x.mean(0)) ** 2).sum(1).mean()))
            parts.append(f"{name}: {100 * (cls == label).mean():.1f} % in class {data.class_names[label]}, "
                         f"spread {spread:.3f}")
    if label is not None:
        parts.append(f"fresh data of the class: spread {float(np.sqrt(((ref - ref.mean(0)) ** 2).sum(1).mean())):.3f}")
    return "Where they landed: " + "; ".join(parts) + (
        "." if label is None else ". (Spread: the RMS distance of the particles to their mean; guidance w > 1 "
        "pulls them into the class and shrinks it.)")


def walk_frame(rec: LabWalk | None, index: int = 0):
    """The scrubber: recorded frame ``index`` of both denoisers; returns (picture, Markdown, t, schedule name)."""
    if rec is None:
        raise ValueError("no walk recorded yet: press 'Run' first")
    index = check_int("frame", index, 0, rec.done)
    step, t, ab = rec.frames[index], rec.ts[index], rec.alpha_bars[index]
    current = {name: (rec.pos[name][index].astype(np.float32),
                      rec.x0[name][index].astype(np.float32) if index > 0 else None) for name in rec.pos}
    text = f"**Step {step} of {rec.steps}, t = {t}** ({rec.settings})."
    return _walk_picture(rec, current, step, t, ab), text, t, _schedule_choice(rec.schedule)


def _schedule_choice(name: str) -> str:
    return "cosine" if name.startswith("cosine") else "linear"


# ---------------------------------------------------------------- live training


@dataclass
class TrainUpdate:
    status: str
    step: int
    total: int
    model: LabModel | None = None


def train(dataset: str = "two moons", steps: int = LIVE_TRAIN.train_steps, seed: int = 0, sketch=None):
    """Train the MLP on the data set (a drawing, or a preset anew), yielding progress; the last update has the model."""
    data = lab_data(dataset, sketch)
    steps = check_int("training steps", steps, MIN_TRAIN_STEPS, MAX_TRAIN_STEPS)
    seed = check_int("seed", seed, 0, SEED_MAX)
    # the time budget grows with the steps asked for beyond the default (then the user asked for the wait)
    budget = LIVE_SECONDS * max(1.0, steps / LIVE_TRAIN.train_steps)
    cfg = replace(LIVE_TRAIN, train_steps=steps, seed=seed, warmup=min(LIVE_TRAIN.warmup, steps // 10),
                  ema_start=min(LIVE_TRAIN.ema_start, steps // 2), max_seconds=budget)
    yield TrainUpdate(f"Training on {data.name} ({len(data.points)} points): {steps} steps of batch "
                      f"{cfg.batch_size}...", 0, steps)
    for p in train_steps(data, cfg, report_every=max(1, steps // 40)):
        if p.model is None:
            yield TrainUpdate(f"step {p.step}/{p.total}, loss {p.loss:.3f}, {p.seconds:.1f} s", p.step, p.total)
            continue
        note = (f" (stopped at the {budget:g} s time budget, the learning rate decayed by then; a less busy "
                "machine gets more steps)") if p.stopped_early else ""
        done = (f"Trained on {data.name}: {p.step} steps in {p.seconds:.1f} s{note}, final loss {p.loss:.3f} "
                f"({p.model.parameters:,} parameters). The walk and the field now use this network.")
        yield TrainUpdate(done, p.step, p.total, p.model)
