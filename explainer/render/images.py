"""Safe image loading for user uploads: any size, any mode, animated files, corrupt files, bombs.

Every failure becomes an ``ImageError`` (a ``ValueError``) whose message says what is wrong in plain
words, so a UI can show it as is. Loaded images are 8-bit RGB or grayscale numpy arrays, downscaled so
that the longer side is at most ``max_side`` pixels (aspect ratio kept).

``to_digit`` turns any picture into a 28x28 MNIST-style digit (bright ink on black, centred by its
centre of mass in a 20x20 box, as LeCun et al. prepared MNIST).
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_SIDE = 256  # longer side after loading
MAX_FILE_BYTES = 25 * 1024 * 1024  # refuse bigger uploads outright
MAX_PIXELS = 50_000_000  # width x height limit checked from the header, before any pixel is decoded


class ImageError(ValueError):
    """An upload that cannot be used as an image; the message is meant for the user."""


def _open(source) -> Image.Image:
    """Open a path, bytes or file object lazily (header only), with size limits checked first."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"no such image file: {path.name}")
        size = path.stat().st_size
        if size == 0:
            raise ImageError(f"{path.name} is empty (0 bytes)")
        if size > MAX_FILE_BYTES:
            raise ImageError(f"{path.name} is {size / 2**20:.0f} MB; the limit is {MAX_FILE_BYTES // 2**20} MB")
        fp, name = str(path), path.name
    elif isinstance(source, (bytes, bytearray)):
        if len(source) > MAX_FILE_BYTES:
            raise ImageError(f"the upload is {len(source) / 2**20:.0f} MB; the limit is {MAX_FILE_BYTES // 2**20} MB")
        fp, name = io.BytesIO(source), "the upload"
    else:
        fp, name = source, "the upload"
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(fp)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageError(f"{name} declares too many pixels to decode safely ({e})") from e
        except UnidentifiedImageError as e:
            raise ImageError(f"{name} is not an image file that can be read (PNG, JPEG, GIF, WebP, BMP, TIFF ...)") from e
        except (OSError, ValueError, SyntaxError) as e:
            raise ImageError(f"{name} cannot be opened as an image: {e}") from e
    w, h = im.size
    if w < 1 or h < 1:
        raise ImageError(f"{name} has no pixels ({w}x{h})")
    if w * h > MAX_PIXELS:
        raise ImageError(f"{name} is {w}x{h} pixels; the limit is {MAX_PIXELS / 1e6:.0f} megapixels")
    return im


def _to_8bit(im: Image.Image) -> Image.Image:
    """Bring any PIL mode to L, LA, RGB or RGBA (first frame of animations, 16-bit scaled by its range)."""
    if getattr(im, "n_frames", 1) > 1:
        im.seek(0)
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        if not np.isfinite(a).all():  # a float TIFF with one NaN or inf pixel
            raise ImageError("the image holds NaN or infinite values")
        lo, hi = (0.0, 65535.0) if im.mode.startswith("I;16") else (float(a.min()), float(a.max()))
        scaled = np.zeros_like(a) if hi <= lo else (a - lo) / (hi - lo) * 255.0
        return Image.fromarray(np.clip(np.round(scaled), 0, 255).astype(np.uint8), "L")
    if im.mode == "P":
        return im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode == "PA":
        return im.convert("RGBA")
    if im.mode in ("1", "L", "LA", "RGB", "RGBA"):
        return im.convert("L") if im.mode == "1" else im
    return im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX, ...


def _flatten(im: Image.Image, background: int = 255) -> Image.Image:
    """Composite transparent images onto a plain background (white by default)."""
    if im.mode not in ("LA", "RGBA"):
        return im
    base = Image.new(im.mode[:-1], im.size, background if im.mode == "LA" else (background,) * 3)
    base.paste(im.convert(im.mode[:-1]), mask=im.getchannel("A"))
    return base


def load_image(source, max_side: int = MAX_SIDE, mode: str = "RGB") -> np.ndarray:
    """Read an upload and return uint8 [H,W,3] (mode "RGB") or [H,W] (mode "L"), longer side <= max_side.

    source: a path, bytes, a file object, a PIL image or a numpy array (uint8 or float in [0, 1]).
    Raises ``ImageError`` with a readable message for anything that is not a usable image.
    """
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be RGB or L, got {mode!r}")
    if not isinstance(max_side, (int, np.integer)) or max_side < 1:
        raise ValueError(f"max_side must be a positive integer, got {max_side!r}")
    if source is None:
        raise ImageError("no image given: pick an example or upload a picture")
    if isinstance(source, np.ndarray):
        im = Image.fromarray(_array_to_uint8(source))
    elif isinstance(source, Image.Image):
        im = source
    else:
        im = _open(source)
    try:
        if im.format == "JPEG":
            im.draft("RGB" if mode == "RGB" else "L", (max_side, max_side))  # decode big JPEGs at reduced size
        im = _to_8bit(im)
        im.load()
        im = ImageOps.exif_transpose(im) if im.getexif().get(274, 1) != 1 else im
        im = _flatten(im)
        if max(im.size) > max_side:
            im = im.copy()
            im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        out = np.asarray(im.convert(mode), dtype=np.uint8)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"the image declares too many pixels to decode safely ({e})") from e
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as e:
        raise ImageError(f"the image file is damaged or truncated and cannot be decoded ({e})") from e
    return np.ascontiguousarray(out)


def _array_to_uint8(a: np.ndarray) -> np.ndarray:
    """Validate a numpy image ([H,W], [H,W,1], [H,W,3] or [H,W,4]) and return it as uint8."""
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)) or a.size == 0:
        raise ImageError(f"an image array must be [H,W], [H,W,3] or [H,W,4]; got shape {a.shape}")
    if a.shape[0] * a.shape[1] > MAX_PIXELS:
        raise ImageError(f"the image is {a.shape[1]}x{a.shape[0]} pixels; the limit is {MAX_PIXELS / 1e6:.0f} megapixels")
    if a.dtype == np.uint8:
        return a
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    a = np.asarray(a, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ImageError("the image holds NaN or infinite values")
    if a.min() >= 0 and a.max() <= 1:
        a = a * 255.0
    return np.clip(np.round(a), 0, 255).astype(np.uint8)


def to_unit_range(img: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [-1, 1] (x / 127.5 - 1), the data range of every model here."""
    return np.asarray(img, dtype=np.float32) / 127.5 - 1.0


def batch_to_tensor(imgs: np.ndarray, device=None) -> torch.Tensor:
    """uint8 [N,H,W] or [N,H,W,C] -> float32 [N,C,H,W] in [-1, 1]."""
    x = torch.from_numpy(to_unit_range(imgs))
    x = x[:, None] if x.dim() == 3 else x.permute(0, 3, 1, 2)
    return x.contiguous().to(device) if device is not None else x.contiguous()


def to_tensor(img: np.ndarray, device=None) -> torch.Tensor:
    """uint8 [H,W] or [H,W,C] -> float32 [1,C,H,W] in [-1, 1]."""
    return batch_to_tensor(np.asarray(img)[None], device)


def center_square(im: Image.Image, size: int) -> np.ndarray:
    """Centre-crop a PIL image to a square and resize it to ``size`` x ``size`` (Lanczos), as uint8."""
    w, h = im.size
    s = min(w, h)
    im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return np.asarray(im.resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)


def to_digit(img: np.ndarray, size: int = 28, box: int = 20) -> np.ndarray:
    """Any uint8 picture -> an MNIST-like digit: uint8 [size, size], bright ink on a black background.

    Grayscale; inverted when the border is brighter than the middle (dark ink on paper); cropped to
    the ink; fitted into a ``box`` square keeping the aspect ratio; centred by its centre of mass.
    """
    g = np.asarray(Image.fromarray(img).convert("L"), dtype=np.float64) if img.ndim == 3 else img.astype(np.float64)
    border = np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]])
    if np.median(border) > 127:
        g = 255.0 - g
    g = g - np.median(border if np.median(border) <= 127 else 255.0 - border)  # background to 0
    g = np.clip(g, 0, None)
    if g.max() <= 0:
        raise ImageError("the picture is blank: no digit (ink) could be found in it")
    g = g / g.max() * 255.0
    ys, xs = np.nonzero(g > 0.1 * 255)
    crop = g[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    h, w = crop.shape
    scale = box / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = np.asarray(Image.fromarray(crop.astype(np.float32), "F").resize((nw, nh), Image.Resampling.LANCZOS))
    small = np.clip(small, 0, 255)
    out = np.zeros((size, size), dtype=np.float64)
    mass = small.sum()
    cy = (np.arange(nh)[:, None] * small).sum() / mass if mass > 0 else nh / 2
    cx = (np.arange(nw)[None, :] * small).sum() / mass if mass > 0 else nw / 2
    top = int(np.clip(round(size / 2 - cy - 0.5), 0, size - nh))
    left = int(np.clip(round(size / 2 - cx - 0.5), 0, size - nw))
    out[top:top + nh, left:left + nw] = small
    return np.round(out).astype(np.uint8)


def load_digit(source) -> np.ndarray:
    """An upload (path/bytes/array) -> a 28x28 uint8 digit; already 28x28 grayscale images are kept as they are."""
    img = load_image(source, max_side=512, mode="L")
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    if img.shape == (28, 28) and np.median(border) <= 127:
        return img
    return to_digit(img)
