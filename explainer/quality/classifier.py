"""An independent judge: a small CNN that classifies generated images into the classes of their data set.

It is trained on the train split of a data set only (the bundled MNIST digits, ``load_mnist("train")``,
or an .npz data set's images that are not held out) and never sees the held-out images, which measure
its accuracy and serve as the real reference set in ``evaluate.py``. Its penultimate layer
(``ClassifierConfig.features`` ReLU units) is the feature space for the Frechet distance between
generated and real images (the FID recipe of Heusel et al. 2017, with this classifier in place of
Inception). Image size, channel count and class names come from the data and are stored in config.json.

Training is deterministic (seeded weights, shuffling and augmentation; one CPU thread) and takes a few
minutes: ``python -m explainer.quality.classifier`` writes ``checkpoints/digit-classifier``;
``python -m explainer.quality.classifier --data data/emoji32.npz --out checkpoints/emoji-classifier --balance``
the emoji judge.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..model.data import MNIST_ATTRIBUTION, Dataset, load_mnist, load_npz
from ..paths import DEFAULT_CLASSIFIER, ROOT, repo_relative

FORMAT = "ddpm-explainer-classifier/1"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


class ClassifierError(RuntimeError):
    """The classifier checkpoint is missing or damaged."""


@dataclass
class ClassifierConfig:
    """Architecture: two conv blocks (c1, c2 channels; two 3x3 convs and a 2x2 max-pool each), then
    a ``features``-wide hidden layer (the penultimate layer) and ``num_classes`` logits, for
    ``channels`` x ``image_size`` x ``image_size`` images (defaults: the 28x28 grayscale digits)."""

    c1: int = 32
    c2: int = 64
    features: int = 256
    num_classes: int = 10
    dropout: float = 0.3
    batch_norm: bool = True
    image_size: int = 28
    channels: int = 1


@dataclass
class ClassifierTrainConfig:
    epochs: int = 40
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    max_shift: int = 2  # augmentation: random translation by up to this many pixels
    max_rotate: float = 10.0  # augmentation: random rotation by up to this many degrees
    max_scale: float = 0.1  # augmentation: random zoom by a factor in [1 - max_scale, 1 + max_scale]
    seed: int = 0
    balance: bool = False  # draw every class equally often (sampling with replacement), for imbalanced data


class ImageClassifier(nn.Module):
    """Images in [-1, 1], [B, channels, image_size, image_size] -> logits [B, num_classes]."""

    def __init__(self, config: ClassifierConfig | None = None):
        super().__init__()
        self.config = config or ClassifierConfig()
        c = self.config

        def conv(c_in, c_out):
            norm = [nn.BatchNorm2d(c_out)] if c.batch_norm else []
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=not c.batch_norm), *norm, nn.ReLU()]

        side = c.image_size // 2 // 2  # after the two max-pools
        self.body = nn.Sequential(
            *conv(c.channels, c.c1), *conv(c.c1, c.c1), nn.MaxPool2d(2),
            *conv(c.c1, c.c2), *conv(c.c2, c.c2), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(c.c2 * side * side, c.features), nn.ReLU())
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.features, c.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer activations [B, features] (the Frechet-distance feature space)."""
        c = self.config
        if x.dim() != 4 or tuple(x.shape[1:]) != (c.channels, c.image_size, c.image_size):
            raise ValueError(f"this classifier takes [B,{c.channels},{c.image_size},{c.image_size}] images, "
                             f"got {tuple(x.shape)}")
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.features(x)))


def augment(x: torch.Tensor, cfg: "ClassifierTrainConfig", generator: torch.Generator,
            background=-1.0) -> torch.Tensor:
    """Random small affine distortions: rotation, zoom and a shift of up to ``max_shift`` pixels.

    Bilinear resampling with ``background`` (a number, or one value per channel; -1 is black, +1 white)
    outside the image; all randomness from ``generator``. No flips: mirrored text, flags and arrows
    would be other pictures.
    """
    b, _, h, w = x.shape
    u = torch.rand(b, 4, generator=generator) * 2 - 1  # uniform in [-1, 1]
    angle = u[:, 0] * math.radians(cfg.max_rotate)
    scale = 1.0 + u[:, 1] * cfg.max_scale
    shift = u[:, 2:] * (2.0 * cfg.max_shift / torch.tensor([w, h]))  # pixels -> normalised coordinates
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    bg = torch.as_tensor(background, dtype=x.dtype).reshape(-1, 1, 1)
    return F.grid_sample(x - bg, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + bg


def border_background(x: torch.Tensor) -> torch.Tensor:
    """The background colour of images [N,C,H,W]: the median of their border pixels, per channel [C]."""
    border = torch.cat([x[:, :, 0], x[:, :, -1], x[:, :, :, 0], x[:, :, :, -1]], dim=2)  # [N, C, 4W]
    return border.transpose(0, 1).reshape(x.shape[1], -1).median(dim=1).values


def load_data(source, split: str) -> Dataset:
    """The ``split`` ("train" or "test") of a data set: "mnist" (the bundled digits) or an .npz file.

    A relative .npz path is looked up from the working directory, then from the repository. Raises
    ValueError for anything else (a folder of images has no held-out split) and FileNotFoundError for a
    missing file.
    """
    if str(source) == "mnist":
        return load_mnist(split)
    if Path(source).suffix.lower() != ".npz":
        raise ValueError(f"a judge needs a data set with a held-out split: 'mnist' or an .npz file, not {source!r}")
    return load_npz(load_path(source), split)


def data_name(source) -> str:
    """How reports name a data source: "mnist" or a repository-relative .npz path."""
    return "mnist" if str(source) == "mnist" else repo_relative(load_path(source))


def load_path(source) -> Path:
    """The file an .npz source names (as ``load_data`` finds it)."""
    path = Path(source)
    return ROOT / path if not path.is_file() and not path.is_absolute() and (ROOT / path).is_file() else path


def split_call(source, split: str) -> str:
    """The loader call that gives a split, as reports print it: load_mnist('train') or load_npz('...', 'train')."""
    return f"load_mnist({split!r})" if str(source) == "mnist" else f"load_npz({data_name(source)!r}, {split!r})"


@torch.no_grad()
def predict(model: ImageClassifier, x: torch.Tensor, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted labels [N], penultimate features [N, F] as float64) for images [N,C,H,W] in [-1, 1]."""
    model.eval()
    dev = next(model.parameters()).device
    labels, feats = [], []
    for i in range(0, len(x), batch_size):
        f = model.features(x[i:i + batch_size].to(dev, torch.float32))
        labels.append(model.head(f).argmax(1).cpu())
        feats.append(f.double().cpu())
    return torch.cat(labels), torch.cat(feats)


def accuracy(model: ImageClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    pred, _ = predict(model, x)
    return float((pred == y.cpu()).double().mean())


def per_class_accuracy(pred: torch.Tensor, y: torch.Tensor, num_classes: int) -> list[float | None]:
    """Accuracy within each class (None for a class with no images)."""
    pred, y = pred.cpu(), y.cpu()
    return [float((pred[y == c] == c).double().mean()) if (y == c).any() else None for c in range(num_classes)]


def balanced_accuracy(per_class: list[float | None]) -> float:
    """Mean of the per-class accuracies (classes with images only): every class counts the same."""
    vals = [a for a in per_class if a is not None]
    return float(np.mean(vals)) if vals else float("nan")


def epoch_order(labels: torch.Tensor, balance: bool, generator: torch.Generator) -> torch.Tensor:
    """The image indices of one epoch: a random permutation, or with ``balance`` as many indices drawn with
    replacement with probability proportional to 1 / n_c (so every class is drawn equally often)."""
    if not balance:
        return torch.randperm(len(labels), generator=generator)
    counts = torch.bincount(labels).double()
    return torch.multinomial((1.0 / counts)[labels], len(labels), replacement=True, generator=generator)


def train_classifier(cfg: ClassifierTrainConfig | None = None, arch: ClassifierConfig | None = None,
                     progress: bool = False, max_steps: int | None = None,
                     report_train_accuracy: bool = True, data="mnist") -> tuple[ImageClassifier, dict]:
    """Train on the train split of ``data`` ("mnist" or an .npz path) with AdamW, cosine learning-rate
    decay and small random affine distortions (background: the images' border colour).

    The image size, channel count and number of classes of ``arch`` are taken from the data. With
    ``cfg.balance`` every batch draws each class equally often (indices drawn with replacement, weight
    1 / n_c per image), so small classes count as much as large ones. Deterministic for a given seed and
    thread count. ``max_steps`` stops early (for tests); ``report_train_accuracy=False`` skips measuring
    the training images. Returns (model in eval mode, info dict with the held-out accuracy, per class
    too, and the training settings).
    """
    cfg = cfg or ClassifierTrainConfig()
    train_set, test_set = load_data(data, "train"), load_data(data, "test")
    h, w, c = train_set.image_shape
    if h != w:
        raise ValueError(f"the judge takes square images; {data} holds {h}x{w}")
    k = len(train_set.class_names) or int(train_set.labels.max()) + 1
    arch = replace(arch or ClassifierConfig(), image_size=h, channels=c, num_classes=k)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = ImageClassifier(arch)
    x, y = train_set.tensors()
    x_test, y_test = test_set.tensors()
    background = border_background(x)
    background = -1.0 if bool((background == -1).all()) else background  # digits: black, as before
    steps_per_epoch = math.ceil(len(x) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch if max_steps is None else min(max_steps, cfg.epochs * steps_per_epoch)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, step = time.perf_counter(), 0
    while step < total:
        model.train()
        perm = epoch_order(y, cfg.balance, gen)
        for i in range(0, len(x), cfg.batch_size):
            if step >= total:
                break
            for g in opt.param_groups:  # cosine decay to 0 over all steps
                g["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / total))
            idx = perm[i:i + cfg.batch_size]
            loss = F.cross_entropy(model(augment(x[idx], cfg, gen, background)), y[idx],
                                   label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        if progress:
            print(f"epoch {math.ceil(step / steps_per_epoch)}: loss {loss.item():.4f}, "
                  f"held-out acc {accuracy(model, x_test, y_test):.4f}, {time.perf_counter() - start:.0f} s",
                  flush=True)
    model.eval()
    test_pred, _ = predict(model, x_test)
    per_class = per_class_accuracy(test_pred, y_test, k)
    names = list(train_set.class_names) or [str(i) for i in range(k)]
    source = data_name(data)
    info = {"test_accuracy": float((test_pred == y_test).double().mean()),
            "balanced_test_accuracy": balanced_accuracy(per_class),
            "per_class_test_accuracy": dict(zip(names, per_class)),
            "train_accuracy": accuracy(model, x, y) if report_train_accuracy else None,
            "train_steps": step, "train_seconds": round(time.perf_counter() - start, 1),
            "torch_threads": torch.get_num_threads(), "train": asdict(cfg), "arch": asdict(arch),
            "class_names": names,
            "data": {"train": f"{split_call(data, 'train')}: {len(x)} images",
                     "test": f"{split_call(data, 'test')}: {len(x_test)} images",
                     "source": MNIST_ATTRIBUTION if source == "mnist" else train_set.attribution}}
    if source != "mnist":
        info["data"]["path"] = source
    return model, info


def save_classifier(model: ImageClassifier, info: dict, folder=DEFAULT_CLASSIFIER) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (architecture, classes, training settings, accuracy)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS), metadata={"format": FORMAT})
    config = {"format": FORMAT, "arch": asdict(model.config),
              "platform": {"torch": torch.__version__, "python": platform.python_version()},
              **{k: v for k, v in info.items() if k != "arch"}}
    (folder / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return folder


def load_classifier(folder=DEFAULT_CLASSIFIER, device="cpu") -> tuple[ImageClassifier, dict]:
    """Load a saved classifier; raises ``ClassifierError`` with a clear message if it is missing or damaged.

    The returned config always has ``class_names`` (the digit judge's are "0".."9") and its ``arch`` the
    image size and channel count (28 and 1 where config.json predates them).
    """
    folder = Path(folder)
    cfg_path, w_path = folder / CONFIG, folder / WEIGHTS
    if not cfg_path.exists() or not w_path.exists():
        raise ClassifierError(f"no classifier in {folder} ({CONFIG} and {WEIGHTS} expected); "
                              "train one with `python -m explainer.quality.classifier` (--data DATA --out FOLDER "
                              "for another data set)")
    try:
        config = json.loads(cfg_path.read_text())
        if config.get("format") != FORMAT:
            raise ClassifierError(f"{cfg_path} is not a {FORMAT} config")
        arch = ClassifierConfig(**config["arch"])
        model = ImageClassifier(arch)
        model.load_state_dict(load_file(str(w_path)))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError,
            SafetensorError, OSError, RuntimeError) as e:
        if isinstance(e, ClassifierError):
            raise
        raise ClassifierError(f"cannot load the classifier from {folder}: {e}") from e
    config["arch"] = asdict(arch)
    names = config.get("class_names") or [str(i) for i in range(arch.num_classes)]
    if len(names) != arch.num_classes:
        raise ClassifierError(f"{cfg_path} names {len(names)} classes for {arch.num_classes} logits")
    config["class_names"] = list(names)
    return model.to(device).eval().requires_grad_(False), config


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m explainer.quality.classifier",
                                description="Train the judge used by `python -m explainer evaluate`: a small CNN "
                                "on the train split of a data set.")
    d = ClassifierTrainConfig()
    p.add_argument("--data", default="mnist", help="'mnist' (the bundled digits, default) or an .npz data set "
                   "with a held_out key (trains on the images not held out)")
    p.add_argument("--out", default=None, help="folder to write (default checkpoints/digit-classifier for mnist; "
                   "required for other data)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--max-shift", type=int, default=d.max_shift, help="random-shift augmentation in pixels")
    p.add_argument("--max-rotate", type=float, default=d.max_rotate, help="random rotation in degrees")
    p.add_argument("--max-scale", type=float, default=d.max_scale, help="random zoom factor range (0.1: +-10 %%)")
    p.add_argument("--balance", action="store_true", help="draw every class equally often (imbalanced data)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: reproducible and polite)")
    args = p.parse_args(argv)
    if (args.epochs < 1 or args.batch_size < 1 or args.lr <= 0 or args.max_shift < 0 or args.threads < 1
            or args.max_rotate < 0 or not 0 <= args.max_scale < 1):
        p.error("--epochs, --batch-size, --threads must be >= 1, --lr > 0, --max-shift and --max-rotate >= 0 "
                "and --max-scale in [0, 1)")
    if args.out is None:
        if args.data != "mnist":
            p.error("--out is required with --data other than mnist (e.g. checkpoints/emoji-classifier)")
        args.out = str(DEFAULT_CLASSIFIER)
    torch.set_num_threads(args.threads)
    cfg = ClassifierTrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                max_shift=args.max_shift, max_rotate=args.max_rotate, max_scale=args.max_scale,
                                seed=args.seed, balance=args.balance)
    try:
        model, info = train_classifier(cfg, progress=True, data=args.data)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    folder = save_classifier(model, info, args.out)
    print(f"held-out accuracy {info['test_accuracy']:.4f} (balanced {info['balanced_test_accuracy']:.4f}) after "
          f"{info['train_seconds']} s; wrote {folder}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
