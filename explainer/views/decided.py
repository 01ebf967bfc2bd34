"""When is the picture decided? Two walks from the same noise that differ in one condition, compared step by step.

The reverse tab's "two classes" (a 3 against an 8) and "two guidance scales" (w = 1 against w = 5) modes run two
walks from the same x_T with the same fresh noise. At every step each walk has a prediction x0_hat of the picture it
will end on. ``decided`` measures how far apart the two predictions are (root mean square over pixels, in the data's
[-1, 1] units) and asks the model's independent judge (quality/classifier.py, the classifier its card is measured
with) which class each prediction shows: the step from which a walk's judged class no longer changes is when its
picture is decided. Early on x0_hat is a blurry average of everything the noise could become; by the time the class
is decided only details are left (Ho et al. 2020, sec. 4.3 and figure 6, "large-scale image features appear first").
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from ..model.checkpoint import DiffusionModel
from ..quality.classifier import ClassifierError, load_classifier, predict
from ..quality.evaluate import data_source, judge_dir
from .cache import LRU
from .inputs import step_text

_judges = LRU(4)


def judge_for(model: DiffusionModel):
    """(judge, its class names) for ``model``, or None where it has none (the tab then shows distances only)."""
    try:
        folder = judge_dir(model, data_source(model))
    except (ValueError, FileNotFoundError):
        return None
    if not (Path(folder) / "model.safetensors").exists():
        return None

    def load():
        try:
            clf, info = load_classifier(folder)
        except ClassifierError:
            return None
        names = info.get("class_names") or [str(i) for i in range(clf.config.num_classes)]
        return clf, names
    return _judges.get(str(folder), load)


@dataclass
class Decided:
    """Two walks compared at each of their steps k = 1..n (x0_hat predicted from frame k - 1)."""

    ts: list  # t of the frame each x0_hat was predicted from
    distance: np.ndarray  # RMS distance between the two x0_hat, [-1, 1] units
    classes: list | None  # per walk, the judge's class name at each step (None: no judge)
    decided: list  # per walk, the 1-based step from which its judged class stays the same (None: no judge)


def _as_images(x0_hats: list) -> torch.Tensor:
    """uint8 pictures [H, W] or [H, W, C] as a float batch [N, C, H, W] in [-1, 1]."""
    x = torch.from_numpy(np.stack(x0_hats)).float() / 127.5 - 1.0
    return x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)


def decided_step(classes: list) -> int:
    """The first step (1-based) from which the class no longer changes."""
    k = len(classes)
    while k > 1 and classes[k - 2] == classes[-1]:
        k -= 1
    return k


def decided(walks: list, model: DiffusionModel) -> Decided:
    """Compare two recorded walks (``reverse.Walk``, equal lengths) step by step; see the module docstring."""
    if len(walks) != 2 or walks[0].done != walks[1].done or walks[0].done < 1:
        raise ValueError("comparing needs two finished walks of the same length: run a side-by-side walk first")
    a, b = (_as_images(w.x0_hats[1:]) for w in walks)  # x0_hats[0] is a blank placeholder for x_T
    distance = ((a - b) ** 2).flatten(1).mean(1).sqrt().numpy()
    judged = judge_for(model)
    classes, steps = None, [None, None]
    if judged is not None:
        clf, names = judged
        classes = [[names[int(c)] for c in predict(clf, x)[0]] for x in (a, b)]
        steps = [decided_step(c) for c in classes]
    return Decided(list(walks[0].ts[:-1]), distance, classes, steps)


def decided_figure(d: Decided, names: list[str]) -> Figure:
    """The distance between the two x0_hat at every step, with each walk's decided step marked."""
    fig = Figure(figsize=(6.4, 3.0), dpi=90, layout="constrained")
    ax = fig.add_subplot()
    steps = np.arange(1, len(d.distance) + 1)
    ax.plot(steps, d.distance, color="black", label="distance between the two x̂_0 (RMS)")
    for k, (name, colour) in enumerate(zip(names, ("tab:blue", "tab:orange"))):
        if d.decided[k] is not None:
            ax.axvline(d.decided[k], color=colour, linestyle="--",
                       label=f"{name}: class {d.classes[k][-1]} from step {d.decided[k]}")
    ax.set_xlabel("step of the walk (x̂_0 predicted from this frame)")
    ax.set_ylabel("RMS distance, [−1, 1] units")
    ax.set_ylim(bottom=0)
    ax.set_title("When is the picture decided?")
    ax.legend(fontsize=7, loc="lower right", framealpha=0.9)
    return fig


def short_names(walks: list) -> list[str]:
    """The condition each walk of a "two classes" or "two guidance scales" pair was run under ("digit 3, w = 1")."""
    return [w.name.split(":")[0] for w in walks]


def decided_text(d: Decided, names: list[str]) -> str:
    """What the curve says, in words, with its numbers."""
    n = len(d.distance)
    peak = int(np.argmax(d.distance)) + 1
    text = (f"The two walks start from the same noise. Their predictions x̂_0 are furthest apart at step {peak} of {n} "
            f"(t = {step_text(d.ts[peak - 1])}, distance {d.distance[peak - 1]:.3f}) and end "
            f"{d.distance[-1]:.3f} apart.")
    if d.classes is None:
        return text + " (This model has no judge, so the class of each x̂_0 is not named.)"
    for k, name in enumerate(names):
        s, final = d.decided[k], d.classes[k][-1]
        others = [c for c in dict.fromkeys(d.classes[k][:s - 1]) if c != final]
        text += (f" **{name}**: the judge sees class {final} in every x̂_0 from step {s} of {n} "
                 f"(t = {step_text(d.ts[s - 1])}) on" + (f"; before that it also saw {', '.join(others)}." if others
                                                          else ", that is from the start."))
    return text + (" What to look at: at each dashed line the class is settled while x_t is still noisy; the "
                   "steps after it refine strokes and colours. Where the lines fall says when each condition "
                   "decided the picture: compare them, and scrub to the step to see it.")
