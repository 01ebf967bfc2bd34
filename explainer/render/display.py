"""Tensors as pictures: uint8 conversion, nearest-neighbour enlargement, and laying pictures out.

The one implementation of these helpers for the app's views, the article's figures and the CLI.
Pictures are uint8 numpy arrays, [H,W] (grayscale) or [H,W,C]. Layouts pad with a ``value`` (white
by default): ``hstack`` / ``vstack`` place pictures of any size (top- / left-aligned), ``grid`` tiles
a batch of same-sized pictures, ``captioned`` adds a text band, ``titled`` writes a title over the top-left
corner, ``strip`` is a captioned row; ``save_gif`` writes an animation.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw


def to_uint8(x: torch.Tensor, keep_gray_channel: bool = False) -> np.ndarray:
    """[-1, 1] float [..., C, H, W] -> uint8 [..., H, W, C]: round((x + 1) * 127.5), clipped.

    One channel becomes [..., H, W] (what PIL and Gradio take) unless ``keep_gray_channel``.
    """
    u = ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).cpu().movedim(-3, -1)
    return u[..., 0].numpy() if u.shape[-1] == 1 and not keep_gray_channel else u.numpy()


def eps_to_uint8(eps: torch.Tensor) -> np.ndarray:
    """Display noise: eps / 3 mapped to [0, 255] (about 99.7 % of N(0, 1) fits)."""
    return to_uint8(eps / 3.0)


def upscale(img: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement by an integer factor (keeps pixels crisp for 28x28 digits)."""
    if factor <= 1:
        return img
    return np.repeat(np.repeat(img, factor, axis=0), factor, axis=1)


def as_rgb(img: np.ndarray) -> np.ndarray:
    """[H,W] -> [H,W,3]; colour pictures unchanged."""
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img


def _stack(images, axis: int, pad: int, value: int, rgb: bool) -> np.ndarray:
    """Pictures one after another along ``axis`` (0: down, 1: across), ``pad`` pixels of ``value`` between.

    rgb: convert every picture to RGB first; else they must share their channel layout, which is kept.
    """
    images = [as_rgb(i) if rgb else np.asarray(i) for i in images]
    other = 1 - axis
    size = [0, 0]
    size[axis] = sum(i.shape[axis] for i in images) + pad * (len(images) - 1)
    size[other] = max(i.shape[other] for i in images)
    out = np.full(tuple(size) + images[0].shape[2:], value, dtype=np.uint8)
    at = 0
    for i in images:
        if axis == 1:
            out[:i.shape[0], at:at + i.shape[1]] = i
        else:
            out[at:at + i.shape[0], :i.shape[1]] = i
        at += i.shape[axis] + pad
    return out


def hstack(images, pad: int = 4, value: int = 255, rgb: bool = True) -> np.ndarray:
    """Place pictures side by side (top-aligned); RGB unless ``rgb=False``."""
    return _stack(images, 1, pad, value, rgb)


def vstack(images, pad: int = 4, value: int = 255, rgb: bool = True) -> np.ndarray:
    """Place pictures one below the other (left-aligned); RGB unless ``rgb=False``."""
    return _stack(images, 0, pad, value, rgb)


def grid(images: np.ndarray, nrow: int, pad: int = 2, pad_value: int = 0) -> np.ndarray:
    """Tile same-sized uint8 pictures [B,H,W,C], ``nrow`` to a row, into one [rows*(H+pad)-pad, ...] array.

    The channel layout is kept (one channel stays one channel).
    """
    ncol = min(nrow, len(images))
    rows = [hstack(images[k:k + ncol], pad, pad_value, rgb=False) for k in range(0, len(images), ncol)]
    return vstack(rows, pad, pad_value, rgb=False)


def captioned(img: np.ndarray, text: str, height: int = 14) -> np.ndarray:
    """Add a white caption band with ``text`` under a picture (RGB)."""
    img = as_rgb(img)
    band = Image.new("RGB", (img.shape[1], height), (255, 255, 255))
    ImageDraw.Draw(band).text((2, 1), text, fill=(0, 0, 0))
    return np.concatenate([img, np.asarray(band)], axis=0)


def titled(img: np.ndarray, text: str) -> np.ndarray:
    """``text`` in a white box over the picture's top-left corner: a caption that keeps the picture's size (RGB)."""
    pic = Image.fromarray(as_rgb(img))
    draw = ImageDraw.Draw(pic)
    draw.rectangle([0, 0, int(draw.textlength(text)) + 6, 13], fill=(255, 255, 255))
    draw.text((3, 1), text, fill=(0, 0, 0))
    return np.array(pic)


def strip(frames, labels, pad: int = 4) -> np.ndarray:
    """A row of pictures, each captioned (e.g. with its t)."""
    return hstack([captioned(f, lab) for f, lab in zip(frames, labels)], pad=pad)


def save_grid(x: torch.Tensor, path, nrow: int = 8, scale: int = 2) -> Path:
    """Save a batch in [-1, 1] as a PNG grid (each image enlarged ``scale`` times, nearest neighbour)."""
    g = grid(to_uint8(x, keep_gray_channel=True), nrow)
    im = Image.fromarray(g[..., 0] if g.shape[-1] == 1 else g)
    if scale != 1:
        im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return path


def save_gif(frames: list[np.ndarray], path, ms_per_frame: int = 40, hold_last_ms: int = 1500) -> Path:
    """Animated GIF from uint8 [H,W] or [H,W,C] frames (C = 1 or 3), looping forever; the last frame is held.

    Gray frames keep their 256 levels. Colour frames share one palette, taken from a few of them, without
    dithering: every frame shows the same colour as the same index (no flicker, no speckle).
    """
    arrays = [f[..., 0] if f.ndim == 3 and f.shape[-1] == 1 else f for f in frames]
    if arrays[0].ndim == 3:
        sample = np.concatenate(arrays[::max(1, len(arrays) // 6)] + arrays[-1:], axis=0)
        palette = Image.fromarray(sample).quantize(colors=256, method=Image.Quantize.FASTOCTREE)
        ims = [Image.fromarray(a).quantize(palette=palette, dither=Image.Dither.NONE) for a in arrays]
    else:
        ims = [Image.fromarray(a) for a in arrays]
    durations = [ms_per_frame] * (len(ims) - 1) + [hold_last_ms]
    ims[0].save(path, save_all=True, append_images=ims[1:], duration=durations, loop=0, optimize=False)
    return Path(path)
