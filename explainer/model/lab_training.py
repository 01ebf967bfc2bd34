"""Training the 2D lab's MLP: the DDPM objective on a point set, with the U-Net's q_sample and L_simple (``losses``).

Loss (Ho et al. 2020, *Denoising Diffusion Probabilistic Models*, eq. 14, "L_simple"):
|| eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t, y) ||^2, t ~ Uniform{1..T}; for a labelled set,
y is replaced by the null label with probability ``label_dropout`` (Ho & Salimans 2022, *Classifier-Free
Diffusion Guidance*). AdamW with the U-Net's warm-up and cosine decay
(``training.lr_at``) and EMA weights (``training.ema_update``); the EMA network is the result.

``train_steps`` yields a ``TrainProgress`` every ``report_every`` steps (and the finished model last), so a UI can
show progress and stop between two steps; ``train`` runs it to the end. ``quality.points.evaluate`` measures a
model's samples against fresh data, and ``python -m explainer.quality.lab_presets`` retrains the shipped presets.
"""
from __future__ import annotations

import copy
import platform
import time
from dataclasses import asdict, dataclass
from typing import Iterator

import torch

from ..diffusion.forward import q_sample
from ..diffusion.losses import simple_loss
from ..diffusion.schedules import DDPM_T, make_schedule
from . import toy
from .mlp import EpsMLP, LabModel, MLPConfig
from .toy import ToyData
from .training import ema_update, lr_at


@dataclass
class LabTrainConfig:
    train_steps: int = 3000
    batch_size: int = 512
    lr: float = 3e-3
    warmup: int = 100
    weight_decay: float = 0.0
    ema_decay: float = 0.995
    ema_start: int = 500  # EMA copies the weights until this step, then averages
    label_dropout: float = 0.2
    hidden: int = 128
    blocks: int = 2
    schedule: str = "linear"
    num_steps: int = DDPM_T  # T
    seed: int = 0
    max_seconds: float | None = None  # a time budget: stop there (and say so), the learning rate decayed by then

    def mlp_config(self, num_classes: int) -> MLPConfig:
        return MLPConfig(dim=2, hidden=self.hidden, blocks=self.blocks, num_classes=num_classes)


@dataclass
class TrainProgress:
    step: int
    total: int
    loss: float  # mean loss over the last report window
    seconds: float
    model: LabModel | None = None  # set on the last update
    stopped_early: bool = False


def make_optimizer(net: torch.nn.Module, cfg: LabTrainConfig) -> torch.optim.Optimizer:
    """AdamW, fused into one kernel where this torch build has it for the CPU (several times faster for a small MLP)."""
    try:
        return torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)


def warm_up() -> None:
    """Pay the one-time costs of a first training run now: torch's optimizers import torch._dynamo when the first one
    is made (about 1.4 s on a 2-core x86_64 CPU). A server calls it in the background at start, so the first
    learner to press Train does not wait for it."""
    net = torch.nn.Linear(1, 1)
    opt = make_optimizer(net, LabTrainConfig())
    net(torch.ones(1, 1)).sum().backward()
    opt.step()  # (the first step loads a few more modules)


def schedule_step(step: int, seconds: float, cfg: LabTrainConfig) -> int:
    """Where the learning-rate schedule is: at ``step``, or as far along the time budget as ``seconds`` is, if further.

    With ``max_seconds`` set, training stops at the budget with the learning rate already decayed (not cut off at
    its peak), so a slow or busy machine gets fewer steps of the same schedule.
    """
    if cfg.max_seconds is None:
        return step
    return min(cfg.train_steps - 1, max(step, int(cfg.train_steps * seconds / cfg.max_seconds)))


def train_steps(data: ToyData, cfg: LabTrainConfig | None = None, report_every: int = 50) -> Iterator[TrainProgress]:
    """Train an ``EpsMLP`` on ``data.points`` (CPU), yielding progress; the last update carries the model."""
    cfg = cfg or LabTrainConfig()
    if cfg.train_steps < 1:
        raise ValueError(f"train_steps must be >= 1, got {cfg.train_steps}")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    schedule = make_schedule(cfg.schedule, cfg.num_steps)
    x_all = torch.as_tensor(data.points, dtype=torch.float32)
    labels_all = None if data.labels is None else torch.as_tensor(data.labels, dtype=torch.long)
    net = EpsMLP(cfg.mlp_config(data.num_classes))
    ema = copy.deepcopy(net).requires_grad_(False)
    opt = make_optimizer(net, cfg)
    n, B = len(x_all), cfg.batch_size
    started = time.perf_counter()
    window, count, stopped = 0.0, 0, False
    step = 0
    seconds = 0.0
    for step in range(1, cfg.train_steps + 1):
        for g in opt.param_groups:
            g["lr"] = lr_at(schedule_step(step - 1, seconds, cfg), cfg)
        idx = torch.randint(0, n, (B,), generator=gen)
        x0 = x_all[idx]
        t = torch.randint(1, schedule.T + 1, (B,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        y = None
        if labels_all is not None:
            y = labels_all[idx]
            drop = torch.rand(B, generator=gen) < cfg.label_dropout
            y = torch.where(drop, torch.full_like(y, data.num_classes), y)
        loss = simple_loss(net(q_sample(x0, t, eps, schedule), t, y), eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema_update(ema, net, cfg.ema_decay if step > cfg.ema_start else 0.0)
        window += float(loss.detach())
        count += 1
        seconds = time.perf_counter() - started
        if cfg.max_seconds is not None and seconds >= cfg.max_seconds and step < cfg.train_steps:
            stopped = True
            break
        if step % report_every == 0 and step < cfg.train_steps:
            yield TrainProgress(step, cfg.train_steps, window / count, seconds)
            window, count = 0.0, 0
    seconds = time.perf_counter() - started
    ema.eval()
    info = {"data": {"name": data.name, "points": len(x_all), "key": data.key,
                     "points_sha1": toy.points_digest(data.points)},
            "training": {**asdict(cfg), "steps_done": step, "seconds": round(seconds, 2),
                         "stopped_early": stopped, "final_loss": round(window / max(1, count), 5),
                         "torch": torch.__version__, "threads": torch.get_num_threads(),
                         "machine": platform.machine()}}
    model = LabModel(ema, schedule, list(data.class_names), data.key, info)
    yield TrainProgress(step, cfg.train_steps, window / max(1, count), seconds, model, stopped)


def train(data: ToyData, cfg: LabTrainConfig | None = None) -> LabModel:
    """Run ``train_steps`` to the end and return the trained model."""
    last = None
    for last in train_steps(data, cfg):
        pass
    return last.model

