"""One walk pipeline for every streamed reverse walk (the reverse tab, the noise-removal source and the 2D lab).

- ``WalkRequest``: the settings every walk shares, checked once with messages meant for users; each view extends
  it with its own (``reverse.ReverseRequest``, ``lab.LabWalkRequest``).
- ``inference_schedule`` / ``walk_chain``: the one place that resolves "the training schedule or the other one"
  into a sampling chain (``respacing.make_chain``: the network is told the inference schedule's noise levels).
- ``Pacer``: when a walk hands its consumer an update and when that update carries a new picture. Updates come at
  least every ``YIELD_EVERY_S`` of computing (so a UI shows progress and Stop acts between two steps), pictures at
  most every ``MIN_FRAME_S`` and about ``SHOWN_FRAMES`` per walk; both clocks restart when the consumer hands
  control back, so the time a UI spends encoding and sending an update never makes the next one come sooner.
- ``kept_steps``: the steps whose frames a recorded walk keeps for its scrubber.

One walk per session (a second stops the first) is the server's rule (``server.sessions.SessionWork.newest``);
Stop closes the walk's generator, which ends its work between two steps.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..diffusion.respacing import SamplingChain, make_chain
from ..diffusion.samplers import DEFAULT_SPACING, SAMPLER_TITLES
from ..diffusion.samplers import SAMPLERS as REVERSE_SAMPLERS
from ..diffusion.schedules import Schedule, make_schedule
from .cache import LRU
from .inputs import GUIDANCE_MAX, SEED_MAX, check_choice, check_float, check_int

SAMPLERS = ("DDPM", "DDIM")  # the 2D lab's pair (each walk beside the other)
SAMPLER_CHOICES = [(SAMPLER_TITLES[m], m) for m in REVERSE_SAMPLERS]  # the reverse tab's: (shown, value)
LEGACY_SAMPLERS = {"DDPM": "ddpm", "DDIM": "ddim"}  # the reverse_walk endpoint's values before Euler and the rest
INFERENCE_SCHEDULES = ("training", "other")
MIN_STEPS = 10
SHOWN_FRAMES = 40  # at most about this many pictures streamed per walk (updates without one keep progress going)
YIELD_EVERY_S = 0.1  # never compute longer than this without an update
MIN_FRAME_S = 0.1  # and send at most about 10 new pictures per second of computing, per walk


def other_schedule_name(training: str) -> str:
    """The schedule a walk may take instead of the training one: cosine for linear, linear for the others."""
    return "linear" if training.startswith("cosine") else "cosine"


_other_schedules = LRU(8)


def inference_schedule(training: Schedule, choice: str) -> Schedule | None:
    """None for "training" (the chain then uses the training schedule), else the other schedule with the same T."""
    if choice == "training":
        return None
    name = other_schedule_name(training.name)
    return _other_schedules.get((name, training.T), lambda: make_schedule(name, training.T))


def walk_chain(training: Schedule, steps: int, choice: str = "training", spacing: str = "linspace") -> SamplingChain:
    """``steps`` steps (evenly spaced, or as ``spacing`` says) of the training schedule or of the other one."""
    return make_chain(training, steps, spacing, inference_schedule(training, choice))


def reverse_sampler(value) -> str:
    """A reverse walk's sampler as ``samplers.SAMPLERS`` names it; the endpoint's older "DDPM" and "DDIM" too."""
    value = LEGACY_SAMPLERS.get(value, value)
    return check_choice("sampler", value, REVERSE_SAMPLERS)


@dataclass(frozen=True)
class WalkRequest:
    """What every walk is asked for: the sampler, how many steps of which schedule, the guidance and the seed."""

    sampler: str  # one of SAMPLERS
    steps: int
    schedule: str  # one of INFERENCE_SCHEDULES
    guidance: float
    seed: int

    @staticmethod
    def check_common(sampler, steps, schedule, guidance, seed, max_steps: int, steps_name: str,
                     check_sampler=lambda value: check_choice("sampler", value, SAMPLERS)) -> dict:
        """The shared settings, checked (a ValueError names the setting and its range)."""
        return dict(sampler=check_sampler(sampler),
                    steps=check_int(steps_name, steps, MIN_STEPS, max_steps),
                    schedule=check_choice("inference schedule", schedule, INFERENCE_SCHEDULES),
                    guidance=check_float("guidance scale", guidance, 0.0, GUIDANCE_MAX),
                    seed=check_int("seed", seed, 0, SEED_MAX))

    @property
    def method(self) -> str:
        """The sampler's name in ``samplers.sample``."""
        return self.sampler.lower()

    @property
    def spacing(self) -> str:
        """The step spacing its sampler's authors recommend (``samplers.DEFAULT_SPACING``)."""
        return DEFAULT_SPACING[self.method]

    def chain(self, training: Schedule, steps: int | None = None) -> SamplingChain:
        return walk_chain(training, self.steps if steps is None else steps, self.schedule, self.spacing)


class Pacer:
    """Paces the updates of one or more walks computed together (see the module docstring)."""

    def __init__(self, totals: list[int], shown_frames: int | None = None):
        self.every = [max(1, n // (shown_frames or SHOWN_FRAMES)) for n in totals]
        now = time.perf_counter()
        self.last_update, self.last_picture = now, [now] * len(totals)

    def due(self, walk: int, done: int, first_or_last: bool = False) -> tuple[bool, bool]:
        """After step ``done`` of walk ``walk``: (send an update now, with a new picture of that walk).

        ``first_or_last``: a picture the learner must see whatever the pace (the first denoised frame, say).
        """
        now = time.perf_counter()
        picture = first_or_last or (done % self.every[walk] == 0 and now - self.last_picture[walk] >= MIN_FRAME_S)
        return picture or now - self.last_update >= YIELD_EVERY_S, picture

    def sent(self, walk: int, picture: bool) -> None:
        """The consumer took the update and handed control back: both clocks restart now."""
        self.last_update = time.perf_counter()
        if picture:
            self.last_picture[walk] = self.last_update


def kept_steps(total: int, limit: int | None = None) -> list[int]:
    """The steps 0..total whose frames a recorded walk keeps: all of them, or ``limit`` + 1 evenly spread."""
    if limit is None or limit >= total:
        return list(range(total + 1))
    return sorted(set(np.round(np.linspace(0, total, limit + 1)).astype(int).tolist()))
