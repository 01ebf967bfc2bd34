"""An independent digit classifier: a small CNN that judges generated digits.

It is trained on the train split of the bundled MNIST digits only (``load_mnist("train")``, 4,500
images) and never sees the 500 held-out digits, which measure its accuracy and serve as the real
reference set in ``evaluate.py``. Its penultimate layer (``ClassifierConfig.features`` ReLU units) is
the feature space for the Frechet distance between generated and real digits (the FID recipe of
Heusel et al. 2017, with this classifier in place of Inception).

Training is deterministic (seeded weights, shuffling and augmentation; one CPU thread) and takes a few
minutes: ``python -m explainer.quality.classifier`` writes ``checkpoints/digit-classifier``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..model.data import MNIST_ATTRIBUTION, load_mnist
from ..paths import DEFAULT_CLASSIFIER

FORMAT = "ddpm-explainer-classifier/1"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


class ClassifierError(RuntimeError):
    """The classifier checkpoint is missing or damaged."""


@dataclass
class ClassifierConfig:
    """Architecture: two conv blocks (c1, c2 channels; two 3x3 convs and a 2x2 max-pool each), then
    a ``features``-wide hidden layer (the penultimate layer) and 10 logits."""

    c1: int = 32
    c2: int = 64
    features: int = 256
    num_classes: int = 10
    dropout: float = 0.3
    batch_norm: bool = True


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


class DigitClassifier(nn.Module):
    """28x28 grayscale digits in [-1, 1], [B,1,28,28] -> logits [B, num_classes]."""

    def __init__(self, config: ClassifierConfig | None = None):
        super().__init__()
        self.config = config or ClassifierConfig()
        c = self.config

        def conv(c_in, c_out):
            norm = [nn.BatchNorm2d(c_out)] if c.batch_norm else []
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=not c.batch_norm), *norm, nn.ReLU()]

        self.body = nn.Sequential(
            *conv(1, c.c1), *conv(c.c1, c.c1), nn.MaxPool2d(2),
            *conv(c.c1, c.c2), *conv(c.c2, c.c2), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(c.c2 * 7 * 7, c.features), nn.ReLU())
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.features, c.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer activations [B, features] (the Frechet-distance feature space)."""
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, 28, 28):
            raise ValueError(f"the digit classifier takes [B,1,28,28] images, got {tuple(x.shape)}")
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.features(x)))


def augment(x: torch.Tensor, cfg: "ClassifierTrainConfig", generator: torch.Generator) -> torch.Tensor:
    """Random small affine distortions: rotation, zoom and a shift of up to ``max_shift`` pixels.

    Bilinear resampling with the background (-1) outside the image; all randomness from ``generator``.
    """
    b, _, h, w = x.shape
    u = torch.rand(b, 4, generator=generator) * 2 - 1  # uniform in [-1, 1]
    angle = u[:, 0] * math.radians(cfg.max_rotate)
    scale = 1.0 + u[:, 1] * cfg.max_scale
    shift = u[:, 2:] * (2.0 * cfg.max_shift / torch.tensor([w, h]))  # pixels -> normalised coordinates
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x + 1.0, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1.0


@torch.no_grad()
def predict(model: DigitClassifier, x: torch.Tensor, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted labels [N], penultimate features [N, F] as float64) for images [N,1,28,28] in [-1, 1]."""
    model.eval()
    dev = next(model.parameters()).device
    labels, feats = [], []
    for i in range(0, len(x), batch_size):
        f = model.features(x[i:i + batch_size].to(dev, torch.float32))
        labels.append(model.head(f).argmax(1).cpu())
        feats.append(f.double().cpu())
    return torch.cat(labels), torch.cat(feats)


def accuracy(model: DigitClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    pred, _ = predict(model, x)
    return float((pred == y.cpu()).double().mean())


def train_classifier(cfg: ClassifierTrainConfig | None = None, arch: ClassifierConfig | None = None,
                     progress: bool = False, max_steps: int | None = None,
                     report_train_accuracy: bool = True) -> tuple[DigitClassifier, dict]:
    """Train on load_mnist("train") with AdamW, cosine learning-rate decay and small random affine distortions.

    Deterministic for a given seed and thread count. ``max_steps`` stops early (for tests);
    ``report_train_accuracy=False`` skips measuring the 4,500 training digits.
    Returns (model in eval mode, info dict with the held-out accuracy and the training settings).
    """
    cfg = cfg or ClassifierTrainConfig()
    arch = arch or ClassifierConfig()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = DigitClassifier(arch)
    x, y = load_mnist("train").tensors()
    x_test, y_test = load_mnist("test").tensors()
    steps_per_epoch = math.ceil(len(x) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch if max_steps is None else min(max_steps, cfg.epochs * steps_per_epoch)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, step = time.perf_counter(), 0
    while step < total:
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), cfg.batch_size):
            if step >= total:
                break
            for g in opt.param_groups:  # cosine decay to 0 over all steps
                g["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / total))
            idx = perm[i:i + cfg.batch_size]
            loss = F.cross_entropy(model(augment(x[idx], cfg, gen)), y[idx], label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        if progress:
            print(f"epoch {math.ceil(step / steps_per_epoch)}: loss {loss.item():.4f}, "
                  f"held-out acc {accuracy(model, x_test, y_test):.4f}, {time.perf_counter() - start:.0f} s",
                  flush=True)
    model.eval()
    info = {"test_accuracy": accuracy(model, x_test, y_test),
            "train_accuracy": accuracy(model, x, y) if report_train_accuracy else None,
            "train_steps": step, "train_seconds": round(time.perf_counter() - start, 1),
            "torch_threads": torch.get_num_threads(), "train": asdict(cfg), "arch": asdict(arch),
            "data": {"train": f"load_mnist('train'): {len(x)} images", "test": f"load_mnist('test'): {len(x_test)} images",
                     "source": MNIST_ATTRIBUTION}}
    return model, info


def save_classifier(model: DigitClassifier, info: dict, folder=DEFAULT_CLASSIFIER) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (architecture, training settings, accuracy)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS), metadata={"format": FORMAT})
    config = {"format": FORMAT, "arch": asdict(model.config),
              "platform": {"torch": torch.__version__, "python": platform.python_version()},
              **{k: v for k, v in info.items() if k != "arch"}}
    (folder / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return folder


def load_classifier(folder=DEFAULT_CLASSIFIER, device="cpu") -> tuple[DigitClassifier, dict]:
    """Load a saved classifier; raises ``ClassifierError`` with a clear message if it is missing or damaged."""
    folder = Path(folder)
    cfg_path, w_path = folder / CONFIG, folder / WEIGHTS
    if not cfg_path.exists() or not w_path.exists():
        raise ClassifierError(f"no digit classifier in {folder} ({CONFIG} and {WEIGHTS} expected); "
                              "train one with `python -m explainer.quality.classifier`")
    try:
        config = json.loads(cfg_path.read_text())
        if config.get("format") != FORMAT:
            raise ClassifierError(f"{cfg_path} is not a {FORMAT} config")
        model = DigitClassifier(ClassifierConfig(**config["arch"]))
        model.load_state_dict(load_file(str(w_path)))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError,
            SafetensorError, OSError, RuntimeError) as e:
        if isinstance(e, ClassifierError):
            raise
        raise ClassifierError(f"cannot load the digit classifier from {folder}: {e}") from e
    return model.to(device).eval().requires_grad_(False), config


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m explainer.quality.classifier",
                                description="Train the digit classifier used by `python -m explainer evaluate`.")
    d = ClassifierTrainConfig()
    p.add_argument("--out", default=str(DEFAULT_CLASSIFIER), help="folder to write (default checkpoints/digit-classifier)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--max-shift", type=int, default=d.max_shift, help="random-shift augmentation in pixels")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: reproducible and polite)")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or args.lr <= 0 or args.max_shift < 0 or args.threads < 1:
        p.error("--epochs, --batch-size, --threads must be >= 1, --lr > 0 and --max-shift >= 0")
    torch.set_num_threads(args.threads)
    cfg = ClassifierTrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                max_shift=args.max_shift, seed=args.seed)
    model, info = train_classifier(cfg, progress=True)
    folder = save_classifier(model, info, args.out)
    print(f"held-out accuracy {info['test_accuracy']:.4f} after {info['train_seconds']} s; wrote {folder}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
