"""Views of the reverse process: streamed walks from pure noise, side-by-side comparisons, strips, GIFs.

``reverse_walk`` is a generator: it yields a ``WalkUpdate`` with a new picture every few steps, paced by the
one walk pipeline (``views/walk.py``), so a UI can stream frames, show progress, and stop the work between two
steps.
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
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..model.checkpoint import DiffusionModel
from ..diffusion.samplers import SAMPLER_TITLES, network_calls, paper_t, sample
from .step import record_step
from ..render.display import captioned, hstack, save_gif, strip, to_uint8, upscale, vstack
from .inputs import (GUIDANCE_MAX, UNCONDITIONAL, check_bool, check_choice, check_float, check_int, class_choices,
                     class_labels, class_word, even_indices, is_digit_model, step_text)
from .model_slot import eps_fn_for, network_path
from .walk import MIN_STEPS, SHOWN_FRAMES, Pacer, WalkRequest, inference_schedule, reverse_sampler

COMPARE_MODES = ("off", "DDPM vs DDIM", "two step counts", "training vs other schedule", "two classes",
                 "two guidance scales")
CONDITION_MODES = ("two classes", "two guidance scales")  # the same walk under two conditions (views/decided.py)
PANEL_SCALE = 6


@dataclass
class Walk:
    """One recorded reverse walk: frames[k] is x after k steps (frames[0] = x_T), uint8 [H,W] or [H,W,3]."""

    name: str
    total: int
    frames: list = field(default_factory=list)
    x0_hats: list = field(default_factory=list)
    ts: list = field(default_factory=list)  # t of each frame (the inference schedule's paper t; 0 = done)
    steps: list = field(default_factory=list)  # step.StepParts of the step from frames[k] to frames[k + 1]
    calls: int = 0  # network calls (NFE) of the whole walk

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


def second_label(model: DiffusionModel, label: str) -> str:
    """The second class of "two classes" when none is given: an 8 beside a 3 (they share strokes), else the next."""
    classes = [c for c in class_choices(model) if c != UNCONDITIONAL]
    if not classes:
        return UNCONDITIONAL
    if is_digit_model(model) and label == "3":
        return "8"
    return classes[(classes.index(label) + 1) % len(classes)] if label in classes else classes[0]


@dataclass(frozen=True)
class ReverseRequest(WalkRequest):
    """A reverse walk from pure noise: the shared settings, the class, a side-by-side mode and clipping."""

    label: str  # a class name, or "unconditional"
    compare: str  # one of COMPARE_MODES
    steps_b: int  # the second walk's steps ("two step counts")
    clip_x0: bool
    label_b: str = UNCONDITIONAL  # the second walk's class ("two classes")
    guidance_b: float = 1.0  # the second walk's guidance scale ("two guidance scales")

    @classmethod
    def checked(cls, model: DiffusionModel, label, guidance, sampler, steps, schedule, seed, compare, steps_b,
                clip_x0=False, label_b=None, guidance_b=None) -> ReverseRequest:
        choices = class_choices(model)
        label = check_choice(class_word(model), str(label), choices)
        common = cls.check_common(sampler, steps, schedule, guidance, seed, model.schedule.T,
                                  "number of inference steps", reverse_sampler)
        compare = check_choice("side-by-side mode", compare, COMPARE_MODES)
        label_b = (check_choice(f"second {class_word(model)}", str(label_b), choices)
                   if compare == "two classes" and label_b is not None else second_label(model, label))
        guidance_b = check_float("second guidance scale", 1.0 if guidance_b is None else guidance_b, 0.0,
                                 GUIDANCE_MAX)
        same = label_b == label if compare == "two classes" else guidance_b == common["guidance"]
        if compare in CONDITION_MODES and (label == UNCONDITIONAL or same):
            raise ValueError(f"'{compare}' compares two conditions of one walk: pick a {class_word(model)} and a "
                             f"second {'one' if compare == 'two classes' else 'guidance scale'} that differs")
        return cls(**common, label=label, compare=compare,
                   steps_b=check_int("second number of steps", steps_b, MIN_STEPS, model.schedule.T),
                   clip_x0=check_bool("clip x0_hat", clip_x0), label_b=label_b, guidance_b=guidance_b)

    def walks(self) -> list[ReverseRequest]:
        """The walk(s) to run: this one, or two that differ in exactly one setting."""
        if self.compare == "DDPM vs DDIM":
            return [replace(self, sampler="ddpm"), replace(self, sampler="ddim")]
        if self.compare == "two step counts":
            return [self, replace(self, steps=self.steps_b)]
        if self.compare == "training vs other schedule":
            return [replace(self, schedule="training"), replace(self, schedule="other")]
        if self.compare == "two classes":
            return [self, replace(self, label=self.label_b)]
        if self.compare == "two guidance scales":
            return [self, replace(self, guidance=self.guidance_b)]
        return [self]

    @property
    def calls(self) -> int:
        """Network calls (NFE) of this walk: Heun calls twice a step; guidance doubles the batch, not the calls."""
        return network_calls(self.method, self.steps)

    def name(self, model: DiffusionModel) -> str:
        schedule = inference_schedule(model.schedule, self.schedule) or model.schedule
        calls = f" ({self.calls} network calls)" if self.calls != self.steps else ""
        levels = "Karras levels" if self.spacing == "karras" else "steps"
        what = f"digit {self.label}" if is_digit_model(model) else self.label
        condition = f"{what}, w = {self.guidance:g}: " if self.compare in CONDITION_MODES else ""
        return f"{condition}{SAMPLER_TITLES[self.method]}, {self.steps} {levels}{calls}, {schedule.name} schedule"

    def conditioning(self, model: DiffusionModel) -> str:
        what = "digit" if is_digit_model(model) else "class"
        cond = "unconditional" if self.label == UNCONDITIONAL else f"{what} {self.label}, guidance w = {self.guidance:g}"
        return cond + ("; x0_hat clipped to [-1, 1] at every step" if self.clip_x0 else "")


def _panel(x_t: np.ndarray, x0_hat: np.ndarray, t: int, name: str) -> np.ndarray:
    left = captioned(upscale(x_t, PANEL_SCALE), f"x_t, t = {step_text(t)}")
    right = captioned(upscale(x0_hat, PANEL_SCALE), "x0_hat (all noise removed)")
    return vstack([captioned(hstack([left, right]), name, height=16)], pad=0)


def _start_walks(model: DiffusionModel, req: ReverseRequest, eps_fn) -> tuple[list[Walk], list]:
    """Each walk's record (x_T its frame 0) and its sampler (``samplers.sample``), all from the same x_T and the same
    per-step noise: each walk's generator is seeded alike and draws x_T first, then the fresh z of its steps (the
    samplers' order), so no z repeats x_T."""
    shape = (1, model.channels, model.image_size, model.image_size)
    walks, runs = [], []
    for spec in req.walks():
        generator = torch.Generator().manual_seed(req.seed)
        x_T = torch.randn(shape, generator=generator).to(model.device)
        chain = spec.chain(model.schedule)
        walks.append(Walk(spec.name(model), len(chain), [to_uint8(x_T[0])], [to_uint8(torch.zeros_like(x_T[0]))],
                          [paper_t(chain.timesteps[0])], calls=spec.calls))
        runs.append(sample(eps_fn, chain, shape, method=spec.method, labels=class_labels(model, spec.label, 1),
                           guidance=spec.guidance,
                           null_label=model.null_label, clip_x0=req.clip_x0,
                           generator=generator, x_T=x_T, device=model.device))
    return walks, runs


def _record(w: Walk, rec, method: str, clip_x0: bool) -> None:
    w.frames.append(to_uint8(rec.x_prev[0]))
    w.x0_hats.append(to_uint8(rec.x0_hat[0]))
    w.ts.append(rec.t_prev)
    w.steps.append(record_step(rec, method, clip_x0))


def _lagging(walks: list[Walk]) -> int:
    """The walk that is least far along (side by side, both advance together)."""
    return min(range(len(walks)), key=lambda k: walks[k].done / walks[k].total if walks[k].done < walks[k].total
               else 2.0)


def reverse_walk(model: DiffusionModel, label: str = UNCONDITIONAL, guidance: float | None = None,
                 sampler: str = "ddpm", steps: int = 100, schedule: str = "training", seed: int = 0,
                 compare: str = "off", steps_b: int = 20, clip_x0: bool = False, label_b: str | None = None,
                 guidance_b: float | None = None):
    """Sample from pure noise, yielding WalkUpdates as ``walk.Pacer`` paces them (both walks side by side).

    label: the class name (or "unconditional"); guidance: w, by default the model card's recommended one.
    label_b, guidance_b: the second walk's class or guidance in the "two classes" and "two guidance scales" modes
    (``views.decided`` then compares the two walks step by step).
    clip_x0: clip x0_hat to [-1, 1] at every step (the DDPM step then takes the posterior mean of the clipped
    x0_hat, Ho et al. 2020 eq. 7), as the reference implementations do; the article's formula does not.
    """
    req = ReverseRequest.checked(model, label, model.recommended_guidance if guidance is None else guidance, sampler,
                                 steps, schedule, seed, compare, steps_b, clip_x0, label_b, guidance_b)
    eps_fn = eps_fn_for(model)
    walks, runs = _start_walks(model, req, eps_fn)
    methods = [spec.method for spec in req.walks()]
    total = sum(w.total for w in walks)
    path = network_path(model, eps_fn)
    yield WalkUpdate([_panel(w.frames[0], w.x0_hats[0], w.ts[0], w.name) for w in walks],
                     f"Starting from pure noise x_T (seed {req.seed}); {req.conditioning(model)}. Network: {path}.",
                     0, total, walks)
    started = time.perf_counter()
    pacer = Pacer([w.total for w in walks])
    for done in range(1, total + 1):
        i = _lagging(walks)
        rec = next(runs[i])
        w = walks[i]
        _record(w, rec, methods[i], req.clip_x0)
        # the first denoised frame at once, a walk's last one when another walk goes on (the final update shows
        # every walk's last frame)
        update, show = pacer.due(i, w.done, w.done == 1 or (w.done == w.total and done < total))
        if not update:
            continue
        panels = [None] * len(walks)
        if show:
            panels[i] = _panel(to_uint8(rec.x_t[0]), w.x0_hats[-1], rec.t, w.name)
        yield WalkUpdate(panels, "; ".join(f"{v.name}: step {v.done}/{v.total}" for v in walks), done, total, walks)
        pacer.sent(i, show)
    seconds = time.perf_counter() - started
    yield WalkUpdate([_panel(w.frames[-1], w.x0_hats[-1], 0, w.name) for w in walks],
                     "Done: " + "; ".join(f"{w.name}: {w.calls} network calls" for w in walks)
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
        row = strip([upscale(w.frames[k], scale) for k in idx], [f"t={step_text(w.ts[k])}" for k in idx])
        rows.append(captioned(row, w.name, height=16))
    return vstack(rows, pad=8)


class GifStore:
    """Writes walk GIFs into one private temp folder, keeps only the newest ``keep``, removes the folder at exit."""

    def __init__(self, keep: int = 32, folder=None):
        self.folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="ddpm-explainer-gifs-"))
        self.folder.mkdir(parents=True, exist_ok=True)
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
