"""What the model tabs show before the learner presses anything: each tab's result at its default settings.

A tab that opens on empty frames does not say what it will show, or whether it works. The default results are
deterministic for a model (the tabs' default settings, seed 0), so one computation serves every session:
``warm_up`` computes them in a background thread once the app serves (the default model), ``of`` on first
use (the others), once per model however many pages ask at once. The learner's own presses then replace them.
"""
from __future__ import annotations

import atexit
import hashlib
import io
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..model.checkpoint import DiffusionModel
from . import arch as va
from . import noise as vn
from . import reverse as vr
from .inputs import UNCONDITIONAL, default_class, default_example
from .step import step_anatomy

STEPS = 100  # the reverse tab's default walk: DDPM, 100 steps of the training schedule, seed 0, side by side off
SEED = 0
NUM_T = 50  # the noise-removal tab's default timesteps (of the default real image, unconditional)
ARCH_T = 300  # the architecture tab's default t


@dataclass(frozen=True)
class ReverseDefault:
    """The default walk: its record (the scrubber's), last panel, status, strip, GIF, and one middle step."""

    walks: list
    panel: str  # the pictures: PNG files (``picture_file``)
    status: str
    strip: str
    gif: str
    index: int  # the scrubber's frame: a middle step, where the step's noise is neither all nor nothing
    frame: str
    step: str
    step_text: str


@dataclass(frozen=True)
class NoiseDefault:
    """The default real image's noise removal: the result (the timestep slider's) and its first triplet."""

    result: vn.NoiseRemoval
    grid: str  # PNG files
    triplet: str
    text: str


@dataclass(frozen=True)
class TabDefaults:
    reverse: ReverseDefault
    noise: NoiseDefault
    x_t: str | None  # the architecture tab: x_t and its feature maps (PNG files; None without an explainer U-Net)
    maps: str | None


_files: dict = {}  # "folder": where the default results' pictures are written once, "gifs": their GIF store
_LOCK = threading.Lock()


def folder() -> Path:
    """The folder of the default results' picture files, removed at exit. Every session is handed the same files,
    which a web server can serve from here as they are (each one written once, complete, before it is handed out)."""
    with _LOCK:
        if not _files:
            _files["folder"] = Path(tempfile.mkdtemp(prefix="ddpm-explainer-defaults-"))
            atexit.register(shutil.rmtree, _files["folder"], True)
            _files["gifs"] = vr.GifStore(keep=64, folder=_files["folder"] / "gifs")
        return _files["folder"]


def picture_file(picture: np.ndarray) -> str:
    """``picture`` as a PNG file in ``folder()``, named by its content (written once, atomically)."""
    data = io.BytesIO()
    Image.fromarray(picture).save(data, format="PNG")
    data = data.getvalue()
    path = folder() / f"{hashlib.blake2b(data, digest_size=12).hexdigest()}.png"
    if not path.exists():
        part = path.with_suffix(f".{threading.get_ident()}.part")
        part.write_bytes(data)
        os.replace(part, path)
    return str(path)


def reverse_default(model: DiffusionModel) -> ReverseDefault:
    """The reverse tab's default walk, as the Sample button would compute it, with its middle step shown."""
    walk = vr.reverse_walk(model, default_class(model), None, "ddpm", STEPS, "training", SEED, "off", 20,
                           model.recommended_clip_x0)
    update = None
    for update in walk:
        pass
    walks = update.walks
    req = vr.ReverseRequest.checked(model, default_class(model), model.recommended_guidance, "ddpm", STEPS,
                                    "training", SEED, "off", 20, model.recommended_clip_x0)
    status = (f"Shown: the default walk ({walks[0].name}; {req.conditioning(model)}; seed {SEED}). Choose your own "
              "settings and press **Sample** to draw another.")
    index = walks[0].done // 2
    step, step_text = step_anatomy(walks, index)
    folder()
    return ReverseDefault(walks, picture_file(update.panels[0]), status, picture_file(vr.walk_strip(walks)),
                          _files["gifs"].save(walks), index, picture_file(vr.walk_frame(walks, index)), picture_file(step),
                          step_text)


def noise_default(model: DiffusionModel) -> NoiseDefault:
    """The noise-removal tab's default: the model's default real image, unconditional, at NUM_T timesteps."""
    result = vn.noise_removal(model, vn.REAL_IMAGE, default_example(model), UNCONDITIONAL,
                              model.recommended_guidance, min(NUM_T, model.schedule.T), SEED)
    triplet, text = vn.noise_triplet(result, 0)
    return NoiseDefault(result, picture_file(vn.noise_grid(result)), picture_file(triplet), text)


def compute(model: DiffusionModel) -> TabDefaults:
    """Every model tab's default result for ``model``, computed afresh."""
    maps = (va.feature_maps(model, default_example(model), min(ARCH_T, model.schedule.T), default_class(model), SEED)
            if isinstance(model.net, va.UNet) else (None, None))
    return TabDefaults(reverse_default(model), noise_default(model), *(m if m is None else picture_file(m) for m in maps))


def of(model: DiffusionModel) -> TabDefaults:
    """The model's default results: computed on first use (one computation, the other callers wait), then kept on
    the model (``DiffusionModel.tab_defaults``), so they go away with it."""
    found = getattr(model, "tab_defaults", None)
    if found is not None:
        return found
    with _LOCK:
        lock = model.__dict__.setdefault("tab_defaults_lock", threading.Lock())
    with lock:
        found = getattr(model, "tab_defaults", None)
        if found is None:
            found = model.tab_defaults = compute(model)
        return found


_waiting: list = []  # models whose defaults are computed once the app serves (``warm_later``, ``warm_up``)


def warm_later(model: DiffusionModel) -> None:
    """Compute ``model``'s defaults once the app serves (``warm_up``): computing them while the app starts would
    delay its first answer by seconds on a small CPU (the walk's Python loop competes for the interpreter)."""
    with _LOCK:
        _waiting.append(model)


def warm_up() -> list[threading.Thread]:
    """Start computing, in the background, the defaults of the models that ``warm_later`` named."""
    with _LOCK:
        models, _waiting[:] = list(_waiting), []
    return [start(m) for m in models]


def start(model: DiffusionModel) -> threading.Thread:
    """Compute the model's defaults in a daemon thread (start-up does not wait; the first page load may)."""
    def work():
        try:
            of(model)
        except Exception:  # a page load computes them again and shows its error as a message
            pass

    thread = threading.Thread(target=work, name="tab-defaults", daemon=True)
    thread.start()
    return thread
