"""The models behind the model tabs, and the one entry point through which every view calls the network.

``load_slot`` loads one checkpoint (a missing or damaged one leaves an empty slot whose message says how
to get one); ``ModelRegistry`` offers every diffusion checkpoint under ``checkpoints/``, loads each on
first use and keeps it; ``start_fast_path`` builds the fastest agreeing eps path (accel/fast.py) in a
background thread; ``eps_fn_for`` hands a view eager ``model.eps`` until that path is ready.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..accel.fast import FastEps, best_eps_fn, export_onnx
from ..model.checkpoint import CONFIG, FORMAT, WEIGHTS, CheckpointError, DiffusionModel, load_model
from ..model.emoji import CLASS_NAMES as EMOJI_CLASSES
from ..paths import CHECKPOINTS, DEFAULT_CHECKPOINT

CHECKPOINT_ENV = "DDPM_EXPLAINER_CHECKPOINT"
FAST_ENV = "DDPM_EXPLAINER_FAST"  # "0" (or false/no/off): keep the app on eager model.eps
FAST_BUILD_NICE = 10  # the background build runs this much "nicer" than requests (Linux; best effort)


class ModelUnavailable(RuntimeError):
    """The model tabs need a checkpoint that is missing or damaged; the message says how to get one."""


@dataclass
class ModelSlot:
    """The app's model, or the reason there is none. ``require()`` returns it or raises ModelUnavailable."""

    model: DiffusionModel | None
    path: str
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.model is not None

    def require(self) -> DiffusionModel:
        if self.model is None:
            raise ModelUnavailable(self.error)
        return self.model

    def notice(self) -> str:
        """Markdown for the model tabs: what is loaded, or what is missing and how to get it."""
        if self.model is not None:
            m = self.model
            classes = f"{m.num_classes} classes" if m.num_classes else "unconditional"
            return (f"Model: `{Path(self.path).name}` ({m.image_size}x{m.image_size}x{m.channels}, {classes}, "
                    f"{m.schedule.name} schedule with T = {m.schedule.T}, on {m.device}).")
        return f"**The model tabs are unavailable with `{Path(self.path).name}`.** {self.error}"


def checkpoint_path() -> str:
    """The checkpoint to load: $DDPM_EXPLAINER_CHECKPOINT, else the shipped checkpoints/mnist-ddpm."""
    return os.environ.get(CHECKPOINT_ENV) or str(DEFAULT_CHECKPOINT)


def load_slot(path: str | None = None, device: str | None = None, fast: bool | None = None,
              default: bool = True) -> ModelSlot:
    """Load the model for the app; a missing or damaged checkpoint gives an empty slot with a clear message.

    fast: build the fast eps path in the background (``start_fast_path``); default: unless $DDPM_EXPLAINER_FAST=0.
    default: the message is for the app's default model (else: for one more model of the picker).
    """
    path = path or checkpoint_path()
    try:
        slot = ModelSlot(load_model(path, device=device), path)
    except CheckpointError as e:
        if default:
            how = (f"To use the model tabs, restore the shipped checkpoint folder `checkpoints/mnist-ddpm`, train one "
                   f"with `python -m explainer train`, or set the environment variable `{CHECKPOINT_ENV}` to a "
                   "checkpoint folder, then restart the app. The forward-process tabs work without a model.")
        else:
            how = ("Pick another model in the model menu; this one loads again once its checkpoint folder is "
                   "complete (restore or re-train it).")
        return ModelSlot(None, path, f"{e} {how}")
    if fast_path_enabled() if fast is None else fast:
        start_fast_path(slot.model)
    return slot


# ---- every diffusion checkpoint under checkpoints/, each loaded on first use and kept ----


def is_diffusion_checkpoint(folder) -> bool:
    """True for a folder holding a diffusion model: this package's config.json format, or a diffusers UNet2DModel.

    Reads config.json only (no weights); judges (classifiers) and empty folders give False.
    """
    folder = Path(folder)
    for cfg in (folder / CONFIG, folder / "unet" / CONFIG):
        try:
            data = json.loads(cfg.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and (data.get("format") == FORMAT or data.get("_class_name") == "UNet2DModel"):
            return True
    return False


def find_checkpoints(root=CHECKPOINTS) -> list[Path]:
    """The diffusion checkpoint folders directly under ``root``, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and is_diffusion_checkpoint(p)), key=lambda p: p.name)


def config_class_names(path) -> list[str]:
    """The class names a checkpoint's config.json declares, without loading it ([] when unknown)."""
    try:
        data = json.loads((Path(path) / CONFIG).read_text())
        return [str(c) for c in data.get("class_names", [])] if isinstance(data, dict) else []
    except (OSError, ValueError, TypeError):
        return []


def config_words(path) -> str:
    """A model in words, from its config.json without loading it: what it shows and its pictures' size
    ("handwritten digits, 28x28", "emoji, 32x32 colour"); "" when the config cannot be read."""
    try:
        data = json.loads((Path(path) / CONFIG).read_text())
        image = data.get("image") or {}
        size, channels = int(image["size"]), int(image["channels"])
        names = [str(c) for c in data.get("class_names", [])]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return ""
    if channels == 1 and names in ([], [str(d) for d in range(10)]):
        what = "handwritten digits"
    elif channels == 3 and names == list(EMOJI_CLASSES):
        what = "emoji"
    else:
        what = f"{len(names)} classes of pictures" if names else "pictures"
    return f"{what}, {size}x{size}" + (" colour" if channels == 3 else "")


def _files_stamp(path) -> tuple:
    """What changes when a checkpoint's files are written again (to retry a failed load only then)."""
    stamp = []
    for name in (CONFIG, WEIGHTS):
        try:
            st = (Path(path) / name).stat()
            stamp.append((name, st.st_mtime_ns, st.st_size))
        except OSError:
            stamp.append((name, None, None))
    return tuple(stamp)


class ModelRegistry:
    """The models the app offers, by name: each loaded on first use (with its background fast path) and kept.

    A model that fails to load gives an empty ``ModelSlot`` whose message says why; the others keep working.
    A failed load is tried again when the checkpoint's files change.
    """

    def __init__(self, paths: dict[str, str], default: str | None = None, device: str | None = None,
                 fast: bool | None = None):
        if not paths:
            raise ValueError("a model registry needs at least one checkpoint")
        self.paths = dict(paths)
        self.default = default if default is not None else next(iter(self.paths))
        if self.default not in self.paths:
            raise ValueError(f"default model {self.default!r} is not one of {', '.join(self.paths)}")
        self.device, self.fast = device, fast
        self._slots: dict[str, ModelSlot] = {}
        self._failed: dict[str, tuple] = {}  # name -> files stamp of the failed load
        self._locks = {name: threading.Lock() for name in self.paths}

    @classmethod
    def discover(cls, root=CHECKPOINTS, default: str | None = None, device: str | None = None,
                 fast: bool | None = None) -> "ModelRegistry":
        """Every diffusion checkpoint under ``root``; the default ($DDPM_EXPLAINER_CHECKPOINT or the shipped
        model) comes first, offered even when it is missing (its slot then says how to get one)."""
        default_path = Path(default or checkpoint_path())
        paths = {_name(default_path): str(default_path)}
        for folder in find_checkpoints(root):
            if folder.resolve() != default_path.resolve():
                paths.setdefault(folder.name, str(folder))
        return cls(paths, _name(default_path), device, fast)

    @classmethod
    def of(cls, slot: ModelSlot) -> "ModelRegistry":
        """A registry of one model slot that is already loaded (or failed)."""
        reg = cls({_name(Path(slot.path)): slot.path})
        reg._slots[reg.default] = slot
        if not slot.ok:
            reg._failed[reg.default] = _files_stamp(slot.path)
        return reg

    def add(self, name: str, path: str) -> None:
        """Offer one more checkpoint (loaded on first use)."""
        self.paths[name] = str(path)
        self._locks.setdefault(name, threading.Lock())

    @property
    def names(self) -> list[str]:
        return list(self.paths)

    def choices(self) -> list[tuple[str, str]]:
        """The model menu's (label, name) pairs: each model in words (``config_words``), its name added where two
        read alike or where its config says nothing."""
        words = {name: config_words(path) for name, path in self.paths.items()}
        counts = {w: list(words.values()).count(w) for w in words.values()}
        return [(w if w and counts[w] == 1 else f"{w} ({name})" if w else name, name) for name, w in words.items()]

    def check_name(self, name: str | None) -> str:
        """``name`` (default: the default model) if offered, else a ValueError listing the models."""
        name = self.default if name in (None, "") else str(name)
        if name not in self.paths:
            raise ValueError(f"model must be one of {', '.join(self.paths)}; got {name!r}")
        return name

    def loaded(self, name: str) -> bool:
        slot = self._slots.get(name)
        return slot is not None and slot.ok

    def slot(self, name: str | None = None) -> ModelSlot:
        """The named model's slot, loading it on first use (thread-safe: one load per model)."""
        name = self.check_name(name)
        slot = self._slots.get(name)
        if slot is not None and (slot.ok or self._failed.get(name) == _files_stamp(self.paths[name])):
            return slot
        with self._locks[name]:
            slot = self._slots.get(name)
            if slot is not None and (slot.ok or self._failed.get(name) == _files_stamp(self.paths[name])):
                return slot
            stamp = _files_stamp(self.paths[name])
            slot = load_slot(self.paths[name], self.device, self.fast, default=name == self.default)
            if not slot.ok:
                self._failed[name] = stamp
            self._slots[name] = slot
            return slot

    def require(self, name: str | None = None) -> DiffusionModel:
        """The named model, or ModelUnavailable with the reason."""
        return self.slot(name).require()

    def class_names(self, name: str | None = None) -> list[str]:
        """The model's class names: from the loaded model, else from its config.json (nothing is loaded)."""
        name = self.check_name(name)
        slot = self._slots.get(name)
        if slot is not None and slot.ok:
            return list(slot.model.class_names)
        return config_class_names(self.paths[name])


def _name(path: Path) -> str:
    """A model's name in the picker: its folder name."""
    return path.name or str(path)


# ---- the network entry point: eager model.eps until the fast path is ready ----


@dataclass
class FastPathBuild:
    """The fast eps path of one model, built by a background thread; ``fn`` is set once it is ready."""

    thread: threading.Thread
    fn: FastEps | None = None  # set once built
    error: str = ""
    seconds: float | None = None  # how long the build took
    export_error: str = ""  # why the low-priority ONNX export failed (the build then tries it once more itself)

    @property
    def ready(self) -> bool:
        return self.fn is not None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the build has ended (tests, benchmarks); True when the fast path is ready."""
        self.thread.join(timeout)
        return self.ready


def fast_path_enabled() -> bool:
    """False when $DDPM_EXPLAINER_FAST is 0 / false / no / off (tests use it to skip the ONNX export)."""
    return os.environ.get(FAST_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def _nice_export(model: DiffusionModel) -> str:
    """Write the model's ONNX file to the disk cache from a thread of lower CPU priority (Linux; best effort).

    The export is the expensive part of the build (it traces the whole network). Only this short-lived
    thread is reniced: ONNX Runtime's worker threads, created later by the session, inherit the priority of
    the thread that creates them, and they must run at the requests' priority. Returns why the export failed
    ("" if it did not); ``best_eps_fn`` then exports once more, and reports a second failure in its path's name.
    """
    failure = []

    def work():
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(),
                           os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) + FAST_BUILD_NICE)
        except (AttributeError, OSError):
            pass
        try:
            export_onnx(model)
        except Exception as e:  # the exporter raises many error types
            failure.append(f"{type(e).__name__}: {e}")

    th = threading.Thread(target=work, name="fast-eps-export", daemon=True)
    th.start()
    th.join()
    if failure:
        print(f"fast eps path: the low-priority ONNX export failed ({failure[0]}); trying again", file=sys.stderr,
              flush=True)
    return failure[0] if failure else ""


_START_LOCK = threading.Lock()


def start_fast_path(model: DiffusionModel, threads: int | None = None) -> FastPathBuild:
    """Build ``explainer.accel.fast.best_eps_fn(model)`` in a daemon thread; ``eps_fn_for`` switches to it when ready.

    Start-up does not wait for it, and requests run on eager ``model.eps`` meanwhile. On CPU the ONNX
    export (cached on disk by weight hash) runs at a lower CPU priority first; then the path is built
    and checked against eager. threads: intra-op threads of the fast path, default torch's count now
    (server.launch.configure_threads gives each model event half the cores, and up to ui.common.MODEL_SLOTS = 4
    such events run at once, so they share the cores; with one thread per call, on a 2-core machine,
    explainer.accel.fast runs the calls in parallel, without its lock). The build is kept on the model
    (``DiffusionModel.fast_build``), so it goes away with it.
    """
    with _START_LOCK:
        state = fast_path(model)
        if state is not None:
            return state
        threads = int(threads or torch.get_num_threads())

        def build():
            t0 = time.perf_counter()
            try:
                if model.device.type == "cpu" and importlib.util.find_spec("onnxruntime") is not None:
                    state.export_error = _nice_export(model)
                fn = best_eps_fn(model, threads=threads)
                if fn.backend == "eager":  # every fast path was skipped: keep plain model.eps, say why
                    state.error = "; ".join(fn.skipped) or fn.name
                else:
                    state.fn = fn
            except Exception as e:  # never let a failed build break the app: it stays on eager
                state.error = f"{type(e).__name__}: {e}"
            state.seconds = time.perf_counter() - t0

        state = FastPathBuild(threading.Thread(target=build, name="fast-eps-build", daemon=True))
        model.fast_build = state
        state.thread.start()
        return state


def fast_path(model: DiffusionModel) -> FastPathBuild | None:
    """The model's background build, if one was started."""
    return getattr(model, "fast_build", None)


def eps_fn_for(model: DiffusionModel):
    """The one place the app evaluates the network: returns a denoiser eps_fn(x_t, alpha_bar, labels) -> eps_hat.

    Every view that needs eps_theta goes through here: the fast path (explainer/accel/fast.py) once its
    background build is ready, else eager ``model.eps``. A caller keeps the function it got for a whole
    walk, so one walk never mixes paths.
    """
    state = fast_path(model)
    return state.fn if state is not None and state.fn is not None else model.eps


def network_path(model: DiffusionModel, eps_fn=None) -> str:
    """Which path computes eps_theta, in words (for status texts): ``eps_fn`` or what eps_fn_for gives now."""
    eps_fn = eps_fn if eps_fn is not None else eps_fn_for(model)
    if isinstance(eps_fn, FastEps):
        return eps_fn.description
    what = f"eager PyTorch fp32 on {model.device.type}"
    state = fast_path(model)
    if state is None:
        return what
    if state.error:
        return f"{what} (no fast path: {state.error})"
    return f"{what} (a faster path is being prepared)"
