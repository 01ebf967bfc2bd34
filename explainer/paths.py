"""Where the repository keeps its files: the one home of every path the package reads by default."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository
ASSETS = ROOT / "assets"  # bundled example images
CHECKPOINTS = ROOT / "checkpoints"
DATA = ROOT / "data"

DEFAULT_CHECKPOINT = CHECKPOINTS / "mnist-ddpm"  # the shipped diffusion model
DEFAULT_CLASSIFIER = CHECKPOINTS / "digit-classifier"  # the evaluation judge
MNIST_NPZ = DATA / "mnist5000.npz"


def repo_relative(path) -> str:
    """``path`` relative to the repository when it lies inside it (for reports), else as given."""
    p = Path(path).resolve()
    try:
        return p.relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)
