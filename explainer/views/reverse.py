"""Views of the reverse process: streamed walks from pure noise, side-by-side comparisons, strips, GIFs.

``reverse_walk`` is a generator: it yields a ``WalkUpdate`` with a new picture every few steps, and
in any case at least every ``YIELD_EVERY_S`` seconds, so a UI can stream frames, show progress, and
stop the work between two steps.
A side-by-side mode runs two walks from the same x_T (DDPM vs DDIM, two step counts, or the
training schedule vs the other one) interleaved so both advance together.
"""
from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..model.checkpoint import DiffusionModel
from ..diffusion.respacing import make_chain
from ..diffusion.samplers import sample
from ..diffusion.schedules import make_schedule
from .step import record_step
from ..render.display import captioned, hstack, save_gif, strip, to_uint8, upscale, vstack
from .inputs import (GUIDANCE_MAX, SEED_MAX, UNCONDITIONAL, check_bool, check_choice, check_float, check_int,
                     class_choices, class_labels, class_word, even_indices, is_digit_model, seeded_normal)
from .model_slot import eps_fn_for, network_path

SAMPLERS = ("DDPM", "DDIM")
INFERENCE_SCHEDULES = ("training", "other")
COMPARE_MODES = ("off", "DDPM vs DDIM", "two step counts", "training vs other schedule")
MIN_STEPS = 10
SHOWN_FRAMES = 40  # at most this many pictures streamed per walk (updates without one keep progress and Stop going)
YIELD_EVERY_S = 0.1  # never compute longer than this without yielding
MIN_FRAME_S = 0.08  # and send at most about 12 new pictures per second of computing, per walk
# (both clocks restart when the consumer hands control back: the time a UI spends encoding and sending an
# update never makes the next one come sooner)
PANEL_SCALE = 6

_steps_lock = threading.Lock()
_network_steps = 0


def network_steps() -> int:
    """How many reverse steps all walks in this process have computed (to verify that Stop stops)."""
    return _network_steps


def _count_step():
    global _network_steps
    with _steps_lock:
        _network_steps += 1


@dataclass
class Walk:
    """One recorded reverse walk: frames[k] is x after k steps (frames[0] = x_T), uint8 [H,W] or [H,W,3]."""

    name: str
    total: int
    frames: list = field(default_factory=list)
    x0_hats: list = field(default_factory=list)
    ts: list = field(default_factory=list)  # t of each frame (the inference schedule's paper t; 0 = done)
    steps: list = field(default_factory=list)  # step.StepParts of the step from frames[k] to frames[k + 1]

    @property
    def done(self) -> int:
        return len(self.frames) - 1


@dataclass
class WalkUpdate:
    """What a UI shows after one step. panels[i] is None when walk i's picture did not change."""

    panels: list
    status: str
    step: int
    total: int
    walks: list
    finished: bool = False


def other_schedule_name(training: str) -> str:
    return "linear" if training.startswith("cosine") else "cosine"


@dataclass(frozen=True)
class WalkSpec:
    sampler: str
    steps: int
    schedule: str  # "training" or "other"

    def label(self, model: DiffusionModel) -> str:
        name = model.schedule.name if self.schedule == "training" else other_schedule_name(model.schedule.name)
        return f"{self.sampler}, {self.steps} steps, {name} schedule"


def walk_specs(sampler: str, steps: int, schedule: str, compare: str, steps_b: int) -> list[WalkSpec]:
    """The walk(s) to run: one, or two that differ in exactly one setting."""
    a = WalkSpec(sampler, steps, schedule)
    if compare == "off":
        return [a]
    if compare == "DDPM vs DDIM":
        return [WalkSpec("DDPM", steps, schedule), WalkSpec("DDIM", steps, schedule)]
    if compare == "two step counts":
        return [a, WalkSpec(sampler, steps_b, schedule)]
    return [WalkSpec(sampler, steps, "training"), WalkSpec(sampler, steps, "other")]


def _chain(model: DiffusionModel, spec: WalkSpec):
    inference = None
    if spec.schedule == "other":
        inference = make_schedule(other_schedule_name(model.schedule.name), model.schedule.T)
    return make_chain(model.schedule, spec.steps, "linspace", inference)


def _panel(x_t: np.ndarray, x0_hat: np.ndarray, t: int, name: str) -> np.ndarray:
    left = captioned(upscale(x_t, PANEL_SCALE), f"x_t, t = {t}")
    right = captioned(upscale(x0_hat, PANEL_SCALE), "x0_hat (all noise removed)")
    return vstack([captioned(hstack([left, right]), name, height=16)], pad=0)


def validate_walk_args(model: DiffusionModel, label, guidance, sampler, steps, schedule, seed, compare, steps_b,
                       clip_x0=False):
    label = check_choice(class_word(model), str(label), class_choices(model))
    guidance = check_float("guidance scale", guidance, 0.0, GUIDANCE_MAX)
    sampler = check_choice("sampler", sampler, SAMPLERS)
    steps = check_int("number of inference steps", steps, MIN_STEPS, model.schedule.T)
    schedule = check_choice("inference schedule", schedule, INFERENCE_SCHEDULES)
    seed = check_int("seed", seed, 0, SEED_MAX)
    compare = check_choice("side-by-side mode", compare, COMPARE_MODES)
    steps_b = check_int("second number of steps", steps_b, MIN_STEPS, model.schedule.T)
    clip_x0 = check_bool("clip x0_hat", clip_x0)
    return label, guidance, sampler, steps, schedule, seed, compare, steps_b, clip_x0


def reverse_walk(model: DiffusionModel, label: str = UNCONDITIONAL, guidance: float | None = None,
                 sampler: str = "DDPM", steps: int = 100, schedule: str = "training", seed: int = 0,
                 compare: str = "off", steps_b: int = 20, clip_x0: bool = False):
    """Sample from pure noise, yielding WalkUpdates as it goes (both walks in side-by-side mode).

    Both walks start from the same x_T (drawn from ``seed``) and use the same per-step noise stream.
    label: the class name (or "unconditional"); guidance: w, by default the model card's recommended one.
    clip_x0: clip x0_hat to [-1, 1] at every step (the DDPM step then takes the posterior mean of the clipped
    x0_hat, Ho et al. 2020 eq. 7), as the reference implementations do; the article's formula does not.
    """
    if guidance is None:
        guidance = model.recommended_guidance
    label, guidance, sampler, steps, schedule, seed, compare, steps_b, clip_x0 = validate_walk_args(
        model, label, guidance, sampler, steps, schedule, seed, compare, steps_b, clip_x0)
    specs = walk_specs(sampler, steps, schedule, compare, steps_b)
    shape = (1, model.channels, model.image_size, model.image_size)
    x_T = seeded_normal(shape, seed).to(model.device)
    labels = class_labels(model, label, 1)
    eps_fn = eps_fn_for(model)
    walks, runs = [], []
    for spec in specs:
        chain = _chain(model, spec)
        walk = Walk(spec.label(model), len(chain), [to_uint8(x_T[0])], [to_uint8(torch.zeros_like(x_T[0]))],
                    [int(chain.timesteps[0])])
        gen = torch.Generator().manual_seed(seed)
        it = sample(eps_fn, chain, shape, method=spec.sampler.lower(), labels=labels, guidance=guidance,
                    null_label=model.null_label, clip_x0=clip_x0, generator=gen, x_T=x_T, device=model.device)
        walks.append(walk)
        runs.append(it)
    total = sum(w.total for w in walks)
    show_every = [max(1, w.total // SHOWN_FRAMES) for w in walks]
    what = "digit" if is_digit_model(model) else "class"
    cond = "unconditional" if labels is None else f"{what} {label}, guidance w = {guidance:g}"
    cond += "; x0_hat clipped to [-1, 1] at every step" if clip_x0 else ""
    panels = [_panel(w.frames[0], w.x0_hats[0], w.ts[0], w.name) for w in walks]
    path = network_path(model, eps_fn)
    yield WalkUpdate(panels, f"Starting from pure noise x_T (seed {seed}); {cond}. Network: {path}.", 0, total, walks)
    started = last_yield = time.perf_counter()
    last_picture = [last_yield] * len(walks)
    done = 0
    while done < total:
        i = min(range(len(walks)), key=lambda k: (walks[k].done / walks[k].total if walks[k].done < walks[k].total
                                                  else 2.0))
        rec = next(runs[i])
        _count_step()
        done += 1
        w = walks[i]
        w.frames.append(to_uint8(rec.x_prev[0]))
        w.x0_hats.append(to_uint8(rec.x0_hat[0]))
        w.ts.append(rec.t_prev)
        w.steps.append(record_step(rec, specs[i].sampler.lower(), clip_x0))
        now = time.perf_counter()
        show = (w.done == 1  # the first denoised frame at once, a walk's last one when another walk goes on
                or (w.done == w.total and done < total)  # (the final update shows every walk's last frame)
                or (w.done % show_every[i] == 0 and now - last_picture[i] >= MIN_FRAME_S))
        if not show and now - last_yield < YIELD_EVERY_S:
            continue
        panels = [None] * len(walks)
        if show:
            panels[i] = _panel(to_uint8(rec.x_t[0]), w.x0_hats[-1], rec.t, w.name)
        status = "; ".join(f"{v.name}: step {v.done}/{v.total}" for v in walks)
        yield WalkUpdate(panels, status, done, total, walks)
        last_yield = time.perf_counter()
        if show:
            last_picture[i] = last_yield
    panels = [_panel(w.frames[-1], w.x0_hats[-1], 0, w.name) for w in walks]
    seconds = time.perf_counter() - started
    yield WalkUpdate(panels, "Done: " + "; ".join(f"{w.name} ({w.total} network steps)" for w in walks)
                     + f" in {seconds:.1f} s. Network: {path}.", total, total, walks, finished=True)


def walk_frame(walks: list[Walk], index: int = 0) -> np.ndarray:
    """The scrubber: frame ``index`` of the first walk (and the same fraction of the way in the second)."""
    if not walks:
        raise ValueError("no walk recorded yet: run a reverse walk first")
    index = check_int("frame", index, 0, walks[0].done)
    frac = index / max(1, walks[0].done)
    panels = []
    for w in walks:
        k = int(round(frac * w.done))
        x0 = w.x0_hats[k + 1] if k < w.done else w.frames[-1]  # the x0_hat predicted from this frame
        panels.append(_panel(w.frames[k], x0, w.ts[k], w.name))
    return hstack(panels, pad=12)


def walk_strip(walks: list[Walk], count: int = 10, scale: int = 2) -> np.ndarray:
    """``count`` frames of each walk from x_T to x_0, evenly spread (the article's figure 9)."""
    if not walks:
        raise ValueError("no walk recorded yet: run a reverse walk first")
    rows = []
    for w in walks:
        idx = even_indices(len(w.frames), count)
        row = strip([upscale(w.frames[k], scale) for k in idx], [f"t={w.ts[k]}" for k in idx])
        rows.append(captioned(row, w.name, height=16))
    return vstack(rows, pad=8)


class GifStore:
    """Writes walk GIFs into one private temp folder, keeps only the newest ``keep``, removes the folder at exit."""

    def __init__(self, keep: int = 32):
        self.folder = Path(tempfile.mkdtemp(prefix="ddpm-explainer-gifs-"))
        self.keep = keep
        atexit.register(shutil.rmtree, self.folder, True)
        self.lock = threading.Lock()

    def save(self, walks: list[Walk], max_frames: int = SHOWN_FRAMES) -> str:
        """An animated GIF of the walk(s) (at most ``max_frames`` frames, the last one held); returns its path.

        All frames share one palette, taken from a few of them (colour walks included), without dithering
        (``display.save_gif``).
        """
        if not walks:
            raise ValueError("no walk recorded yet: run a reverse walk first")
        path = self.folder / f"reverse-walk-{uuid.uuid4().hex[:10]}.gif"
        save_gif([walk_frame(walks, k) for k in even_indices(walks[0].done + 1, max_frames)], path, ms_per_frame=80)
        with self.lock:
            gifs = sorted(self.folder.glob("*.gif"), key=lambda p: p.stat().st_mtime)
            for old in gifs[:-self.keep]:
                old.unlink(missing_ok=True)
        return str(path)
