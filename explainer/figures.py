"""Figures: image grids and strips, and the article's figures regenerated from the real math and model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[-1, 1] float [B,C,H,W] -> uint8 [B,H,W,C]."""
    x = ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).cpu()
    return x.permute(0, 2, 3, 1).numpy()


def grid(images: np.ndarray, nrow: int, pad: int = 2, pad_value: int = 0) -> np.ndarray:
    """Tile uint8 images [B,H,W,C] into one [rows*(H+pad)-pad, ...] array."""
    b, h, w, c = images.shape
    ncol = min(nrow, b)
    rows = -(-b // ncol)
    out = np.full((rows * (h + pad) - pad, ncol * (w + pad) - pad, c), pad_value, dtype=np.uint8)
    for i in range(b):
        r, q = divmod(i, ncol)
        out[r * (h + pad):r * (h + pad) + h, q * (w + pad):q * (w + pad) + w] = images[i]
    return out


def save_grid(x: torch.Tensor, path, nrow: int = 8, scale: int = 2) -> Path:
    """Save a batch in [-1, 1] as a PNG grid (each image enlarged ``scale`` times, nearest neighbour)."""
    g = grid(to_uint8(x), nrow)
    im = Image.fromarray(g[..., 0] if g.shape[-1] == 1 else g)
    if scale != 1:
        im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return path
