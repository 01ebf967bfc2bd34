"""What the views share about their inputs: checks with messages meant for users, class labels, seeded noise.

Every check raises ``ValueError`` naming the input and its allowed range or choices.
"""
from __future__ import annotations

import numbers
import reprlib

import numpy as np
import torch
from PIL import Image

from ..model.checkpoint import DiffusionModel
from ..paths import ASSETS
from ..render import images

UNCONDITIONAL = "unconditional"
SEED_MAX = 2**31 - 1
GUIDANCE_MAX = 10.0


DIGIT_NAMES = [str(i) for i in range(10)]
DIGIT_EXAMPLES = [str(ASSETS / f"digit_{d}.png") for d in range(10)]  # held-out MNIST digits
EMOJI_EXAMPLES = sorted(str(p) for p in (ASSETS / "emoji").glob("*.png"))  # held-out emoji (assets/LICENSES.md)


def is_digit_model(model: DiffusionModel | None) -> bool:
    """A model of MNIST-like digits: one channel and the classes 0..9 (or unconditional); no model counts as one."""
    return model is None or (model.channels == 1 and model.class_names in ([], DIGIT_NAMES))


def is_mnist_sized(model: DiffusionModel) -> bool:
    """28x28 grayscale: uploads become centred MNIST digits."""
    return model.channels == 1 and model.image_size == 28


def class_word(model: DiffusionModel | None) -> str:
    """What the model's classes are called in labels and messages."""
    return "digit class" if is_digit_model(model) else "class"


def image_word(model: DiffusionModel | None) -> str:
    """What the model's pictures are called: "digit" or "image"."""
    return "digit" if is_digit_model(model) else "image"


def example_images(model: DiffusionModel | None) -> list[str]:
    """Bundled held-out pictures for the model: digits for a grayscale model, emoji for a colour one."""
    if model is None or model.channels == 1 or not EMOJI_EXAMPLES:
        return DIGIT_EXAMPLES
    return EMOJI_EXAMPLES


def default_example(model: DiffusionModel | None) -> str:
    """The bundled picture the model tabs start with: the digit 3, or a frog for a colour model."""
    examples = example_images(model)
    return examples[3] if examples is DIGIT_EXAMPLES else next((p for p in examples if "frog" in p), examples[0])


def default_class(model: DiffusionModel | None) -> str:
    """The class a walk starts with: "3" for digits, else the first class (unconditional if there is none)."""
    choices = class_choices(model)
    return "3" if "3" in choices else choices[min(1, len(choices) - 1)]


def class_choices(model: DiffusionModel | None) -> list[str]:
    """The class dropdown: "unconditional" and the model's class names."""
    if model is not None and not model.num_classes:
        return [UNCONDITIONAL]
    names = model.class_names if model is not None else DIGIT_NAMES
    return [UNCONDITIONAL] + list(names)


def class_labels(model: DiffusionModel, label: str, n: int) -> torch.Tensor | None:
    """[n] labels for a class name, or None (unconditional: the network uses its null label)."""
    label = check_choice(class_word(model), str(label), class_choices(model))
    if label == UNCONDITIONAL:
        return None
    return torch.full((n,), model.class_names.index(label), dtype=torch.long, device=model.device)


def digit_tensor(model: DiffusionModel, image) -> torch.Tensor:
    """An upload -> x_0 [1,C,S,S] in [-1, 1] at the model's size and channels.

    A 28x28 grayscale model gets a centred MNIST-style digit; any other model the picture's central square,
    resized to the model's size (LANCZOS), in grayscale or RGB (transparency composited onto white).
    """
    if image is None:
        what = image_word(model)
        raise ValueError(f"no {what} given: pick a held-out {what} or upload a picture")
    if is_mnist_sized(model):
        img = images.load_digit(image)
    else:
        img = images.load_image(image, max_side=4096, mode="L" if model.channels == 1 else "RGB")
        img = center_square(img, model.image_size)
    return images.to_tensor(img)


def center_square(img: np.ndarray, size: int) -> np.ndarray:
    """The central square of a uint8 picture, resized to size x size (LANCZOS)."""
    h, w = img.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = Image.fromarray(img[top:top + s, left:left + s])
    return np.asarray(crop.resize((size, size), Image.Resampling.LANCZOS) if s != size else crop)


def shown(value, limit: int = 40) -> str:
    """``value`` for a message: its repr cut to about ``limit`` characters (a long value is never echoed whole)."""
    if isinstance(value, float) and not np.isfinite(value):
        return repr(value).replace("nan", "NaN")
    text = _REPR.repr(value)
    if len(text) > limit:
        text = text[:limit] + "…"
    if isinstance(value, (str, bytes)) and len(value) > limit:
        text += f" ({len(value):,} characters)"
    return text


_REPR = reprlib.Repr()  # (keyword arguments need Python 3.12)
_REPR.maxstring = _REPR.maxother = 40
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = 4
_REPR.maxlevel = 2


def _real(name: str, value, lo=None, hi=None) -> float:
    """A real number (int or float: no strings, booleans or None), finite, in lo..hi (a bound of None is open)."""
    where = f" in {lo}..{hi}" if lo is not None and hi is not None else ""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number{where}, got {shown(value)}")
    try:
        f = float(value)
    except OverflowError:  # an integer beyond float's range
        f = float("inf") if value > 0 else float("-inf")
        if (lo is None or f >= lo) and (hi is None or f <= hi):
            raise ValueError(f"{name} must be a finite number{where}, got {shown(value)}") from None
    if np.isnan(f) or (np.isinf(f) and lo is None and hi is None):
        raise ValueError(f"{name} must be a finite number{where}, got {shown(value)}")
    if lo is not None and f < lo:
        raise ValueError(f"{name} must be{where}: {shown(value)} is less than the minimum {lo}")
    if hi is not None and f > hi:
        raise ValueError(f"{name} must be{where}: {shown(value)} is greater than the maximum {hi}")
    if np.isinf(f):
        raise ValueError(f"{name} must be a finite number{where}, got {shown(value)}")
    return f


def check_number(name: str, value, lo: float | None = None, hi: float | None = None) -> float:
    """Validate a real number (int or float, finite) in lo..hi; a bound of None is open."""
    return _real(name, value, lo, hi)


def step_text(t) -> str:
    """A chain's step for a caption: an integer as it is, a Karras level between two steps to one decimal."""
    return str(t) if isinstance(t, (int, np.integer)) or float(t).is_integer() else f"{float(t):.1f}"


def check_int(name: str, value, lo: int, hi: int) -> int:
    """Validate an integer-valued input (floats like 3.0 accepted) in lo..hi."""
    f = _real(name, value, lo, hi)
    if f != int(f):
        raise ValueError(f"{name} must be a whole number in {lo}..{hi}, got {shown(value)}")
    return int(f)


def check_float(name: str, value, lo: float, hi: float) -> float:
    """Validate a real number in lo..hi."""
    return _real(name, value, lo, hi)


def check_bool(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be true or false, got {shown(value)}")
    return bool(value)


def check_choice(name: str, value, choices) -> str:
    """Validate one of ``choices`` (the message lists them and shows at most the start of a wrong value)."""
    if not isinstance(value, (str, int, float)) or isinstance(value, bool) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}; got {shown(value)}")
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
