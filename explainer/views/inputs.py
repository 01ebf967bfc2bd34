"""What the views share about their inputs: checks with messages meant for users, class labels, seeded noise.

Every check raises ``ValueError`` naming the input and its allowed range or choices.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import torch
from PIL import Image

from ..model.checkpoint import DiffusionModel
from ..render import images

UNCONDITIONAL = "unconditional"
SEED_MAX = 2**31 - 1
GUIDANCE_MAX = 10.0


def digit_choices(model: DiffusionModel | None) -> list[str]:
    """The class dropdown: "unconditional" and the model's class names."""
    if model is not None and not model.num_classes:
        return [UNCONDITIONAL]
    names = model.class_names if model is not None else [str(i) for i in range(10)]
    return [UNCONDITIONAL] + list(names)


def class_labels(model: DiffusionModel, digit: str, n: int) -> torch.Tensor | None:
    """[n] labels for a class name, or None (unconditional: the network uses its null label)."""
    digit = check_choice("digit class", str(digit), digit_choices(model))
    if digit == UNCONDITIONAL:
        return None
    return torch.full((n,), model.class_names.index(digit), dtype=torch.long, device=model.device)


def digit_tensor(model: DiffusionModel, image) -> torch.Tensor:
    """An upload -> x_0 [1,C,S,S] in [-1, 1] at the model's size (a centred 28x28 digit for MNIST)."""
    if image is None:
        raise ValueError("no digit given: pick a held-out digit or upload a picture of one")
    if model.channels == 1 and model.image_size == 28:
        img = images.load_digit(image)
    else:
        img = images.load_image(image, max_side=4096, mode="L" if model.channels == 1 else "RGB")
        img = np.asarray(Image.fromarray(img).resize((model.image_size, model.image_size), Image.Resampling.LANCZOS))
    return images.to_tensor(img)


def check_int(name: str, value, lo: int, hi: int) -> int:
    """Validate an integer-valued input (floats like 3.0 accepted) in lo..hi."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(f) or f != int(f):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if not lo <= int(f) <= hi:
        raise ValueError(f"{name} must be in {lo}..{hi}, got {int(f)}")
    return int(f)


def check_float(name: str, value, lo: float, hi: float) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(f) or not lo <= f <= hi:
        raise ValueError(f"{name} must be in {lo}..{hi}, got {value!r}")
    return f


def check_choice(name: str, value, choices) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")
    return value


def seeded_normal(shape, seed: int) -> torch.Tensor:
    """Standard normal noise of ``shape`` from a CPU generator seeded with ``seed`` (reproducible)."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(tuple(shape), generator=g)


def even_indices(n: int, k: int) -> list[int]:
    """k indices spread evenly over 0..n-1, both ends included (fewer if n < k)."""
    if n <= 0:
        return []
    return sorted(set(np.round(np.linspace(0, n - 1, min(k, n))).astype(int).tolist()))


class LRU:
    """A tiny thread-safe LRU cache."""

    def __init__(self, size: int):
        self.size, self.data, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, key, make):
        with self.lock:
            if key in self.data:
                self.data.move_to_end(key)
                return self.data[key]
        value = make()
        with self.lock:
            self.data[key] = value
            while len(self.data) > self.size:
                self.data.popitem(last=False)
        return value
