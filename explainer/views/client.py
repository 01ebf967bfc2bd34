"""What the browser needs to draw the forward views itself, so that moving t costs no server call.

x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (Ho et al. 2020, eq. 4) is one multiply-add per pixel:
the page gets x_0, the seed's eps and both schedules' tables once, and repaints x_t, the numbers, the cursor
on the curves and the pixel histogram on every t move (``static/forward.js``).

- ``pixels_payload(image, seed)``: sent when the image or the seed changes: a small dict naming a binary file
  (the session keeps only the dict; the file is served from ``PIXELS_DIR``, which holds the newest
  ``PAYLOAD_FILES``) of x_0 as its 8-bit levels and eps as little-endian int16 in steps of 1/``EPS_SCALE``
  (the same eps as ``forward.noise_like``).
- ``forward_props()`` / ``compare_props()``: what never changes: the schedules' tables as float64 (betas,
  alpha_bars and log SNR; alpha_t, sqrt(alpha_bar_t), 1 - alpha_bar_t and the SNR are one IEEE operation each
  from these, so the page shows the same numbers as ``forward.numbers_at``), the curve and histogram axes as
  PNG with their pixel mapping (``forward.CursorPlot``), colours and bins.

``client_x_t`` and ``decode_pixels`` repeat the page's arithmetic in numpy, for tests.
"""
from __future__ import annotations

import atexit
import base64
import functools
import hashlib
import io
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PIL import Image

from . import forward as vf
from . import histogram as vh

EPS_SCALE = 4096  # eps travels as round(eps * 4096) in int16: at most 1/8192 off, under 0.02 of a grey level
EPS_LIMIT = 32767 / EPS_SCALE  # |eps| beyond this (8 sigma: never drawn in practice) is clipped
SCHEDULE_TABLES = ("betas", "alpha_bars", "log_snr")
STATIC = Path(__file__).resolve().parent / "static"  # forward.js (the painter) and forward.css
VIEW_TEMPLATE = ""  # forward.js builds the view's elements itself

PIXELS_DIR = Path(tempfile.gettempdir()) / f"ddpm-explainer-pixels-{os.getpid()}"  # this process's (gone at exit)
PAYLOAD_FILES = 64  # pixels files kept there, the newest (served from there: the app makes it a static path)
_lock = threading.Lock()
_payloads: OrderedDict = OrderedDict()  # (x_0's id, shape, seed, folder) -> (x_0, payload), newest last


@functools.lru_cache(maxsize=None)
def _pixels_dir() -> Path:
    PIXELS_DIR.mkdir(parents=True, exist_ok=True)
    atexit.register(shutil.rmtree, PIXELS_DIR, True)
    remove_stale_pixel_dirs(PIXELS_DIR.parent)
    return PIXELS_DIR


def remove_stale_pixel_dirs(parent: Path) -> None:
    """Remove the pixels folders that processes which are gone left in ``parent`` (a killed app cannot)."""
    for other in parent.glob("ddpm-explainer-pixels-*"):
        pid = other.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(other, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # (another user's process)
        return True
    return True


def _recall(key, x0) -> dict | None:
    with _lock:
        hit = _payloads.get(key)
        if hit is None or hit[0] is not x0 or not Path(hit[1]["file"]["path"]).exists():
            return None  # (an id reused by a new array, or the file removed)
        _payloads.move_to_end(key)
        return hit[1]


def _remember(key, x0, payload: dict) -> None:
    """Keep the payload; the oldest beyond PAYLOAD_FILES go, with their files."""
    with _lock:
        _payloads[key] = (x0, payload)
        _payloads.move_to_end(key)
        while len(_payloads) > PAYLOAD_FILES:
            _, (_, old) = _payloads.popitem(last=False)
            if all(p["file"]["path"] != old["file"]["path"] for _, p in _payloads.values()):
                Path(old["file"]["path"]).unlink(missing_ok=True)


def b64(a: np.ndarray, dtype: str) -> str:
    """An array as base64 of its little-endian bytes in ``dtype`` ("u1", "<i2", "<f8")."""
    return base64.b64encode(np.ascontiguousarray(a, dtype=dtype).tobytes()).decode("ascii")


def from_b64(text: str, dtype: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=dtype)


def png_data_url(rgb_or_rgba: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(rgb_or_rgba).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def pixels_payload(image, seed: int = 0, folder: str | os.PathLike | None = None, max_side: int | None = None) -> dict:
    """x_0 and the seed's eps for the page, as a small dict that points to a binary file.

    {"file": {"path", "meta"} (Gradio serves it and adds its "url"), "width", "height", "seed", "eps_scale"};
    the file holds x_0's 8-bit RGB levels (H*W*3 bytes) and then eps as little-endian int16 (H*W*3 values).
    Files are kept per (image, seed) in ``folder`` (default ``PIXELS_DIR``), the ``PAYLOAD_FILES`` newest only.
    ``max_side``: the picture at this size (the strips' ``forward.STRIP_SIDE``) instead of the views' size.
    """
    _, _, seed = vf.validate_inputs(0, "linear", seed)
    x0 = vf.prepare_image(image) if max_side is None else vf.prepare_image(image, max_side=max_side)
    folder = Path(folder) if folder is not None else _pixels_dir()

    def make():
        levels = np.rint((x0 + 1.0) * 127.5).astype(np.uint8)  # x0 = level / 127.5 - 1 exactly (prepare_image)
        eps = np.clip(np.rint(vf.noise_like(x0, seed) * EPS_SCALE), -32768, 32767).astype("<i2")
        data = levels.tobytes() + eps.tobytes()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"pixels-{hashlib.blake2b(data, digest_size=12).hexdigest()}.bin"
        if not path.exists():
            tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)  # (atomic: a reader never sees half a file)
        h, w, _ = x0.shape
        return {"file": {"path": str(path), "meta": {"_type": "gradio.FileData"}}, "width": w, "height": h,
                "seed": seed, "eps_scale": EPS_SCALE}

    key = (id(x0), x0.shape, seed, str(folder))
    payload = _recall(key, x0)
    if payload is None:
        payload = make()
        _remember(key, x0, payload)
    return {**payload, "file": dict(payload["file"])}  # (Gradio adds a url to its copy)


def decode_pixels(payload: dict) -> tuple[np.ndarray, np.ndarray]:
    """(x_0, eps) as the page reads them from the payload's file: float32 [H,W,3] each."""
    shape = (payload["height"], payload["width"], 3)
    data = Path(payload["file"]["path"]).read_bytes()
    n = shape[0] * shape[1] * 3
    if len(data) != 3 * n:
        raise ValueError(f"a pixels file of {len(data)} bytes does not hold a {shape[1]}x{shape[0]} picture")
    x0 = np.frombuffer(data[:n], dtype=np.uint8).reshape(shape).astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    eps = np.frombuffer(data[n:], dtype="<i2").reshape(shape).astype(np.float32) / np.float32(payload["eps_scale"])
    return x0, eps


def client_x_t(payload: dict, alpha_bar: float) -> np.ndarray:
    """x_t as uint8 from the payload, the page's arithmetic (float32 steps, round half to even)."""
    x0, eps = decode_pixels(payload)
    return vf.closed_form_uint8(x0, eps, alpha_bar)


def schedule_tables() -> dict:
    """Both schedules' float64 tables (base64) and their near-pure-noise step counts."""
    out = {}
    for name in vf.SCHEDULE_NAMES:
        s = vf.ARTICLE_SCHEDULES[name]
        out[name] = {key: b64(getattr(s, key), "<f8") for key in SCHEDULE_TABLES}
        out[name]["near_noise"] = s.steps_near_pure_noise(vf.NEAR_NOISE)
    return {"T": vf.T, "names": list(vf.SCHEDULE_NAMES), "near_noise": vf.NEAR_NOISE, "schedules": out}


def plot_spec(plot: vf.CursorPlot) -> dict:
    """A cached plot for the page: its picture and, per axes, the pixel rows/columns and the data-to-pixel map."""
    axes = [{"rows": [int(a["rows"][0]), int(a["rows"][1])], "cols": [int(a["cols"][0]), int(a["cols"][1])],
             "x": [float(v) for v in a["x"]], "y": [float(v) for v in a["y"]]} for a in plot.axes]
    h, w, _ = plot.base.shape
    return {"png": png_data_url(plot.base), "width": w, "height": h, "axes": axes}


def histogram_spec(schedule: str) -> dict:
    """The histogram's axes (``histogram._HistogramPlot``): picture, the N(0, 1) curve drawn over the bars, bins."""
    hp = vh._plot(schedule)
    overlay = np.zeros(hp.plot.base.shape[:2] + (4,), dtype=np.uint8)
    flat = overlay.reshape(-1, 4)
    flat[hp.normal_at, :3] = hp.plot.base.reshape(-1, 3)[hp.normal_at]
    flat[hp.normal_at, 3] = 255
    return {**plot_spec(hp.plot), "over": png_data_url(overlay), "bar_rgb": [int(c) for c in hp.bar_rgb],
            "edge_cols": [int(c) for c in hp.edge_cols]}


def histogram_constants() -> dict:
    return {"edges": [float(e) for e in vh.EDGES], "bin_width": float(vh.BIN_WIDTH), "y_max": vh.Y_MAX,
            "line_rgb": list(vh.LINE_RGB)}


def colors() -> dict:
    return {name: list(vf.schedule_rgb(name)) for name in vf.SCHEDULE_NAMES}


@functools.lru_cache(maxsize=None)
def forward_props() -> dict:
    """Everything the forward tab's page view needs that never changes."""
    return {"mode": "forward", "tables": schedule_tables(), "colors": colors(),
            "curves": {n: plot_spec(vf._schedule_plot(n)) for n in vf.SCHEDULE_NAMES},
            "hist": {n: histogram_spec(n) for n in vf.SCHEDULE_NAMES}, "bins": histogram_constants()}


@functools.lru_cache(maxsize=None)
def compare_props() -> dict:
    """Everything the compare tab's page view needs that never changes."""
    return {"mode": "compare", "tables": schedule_tables(), "colors": colors(), "curves": plot_spec(vf._compare_plot())}


@functools.lru_cache(maxsize=None)
def page_code() -> tuple[str, str]:
    """(the painter's JavaScript, its CSS) for a gr.HTML's ``js_on_load`` and ``css_template``."""
    return (STATIC / "forward.js").read_text(encoding="utf-8"), (STATIC / "forward.css").read_text(encoding="utf-8")
