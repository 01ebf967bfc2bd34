"""Training the 2D lab's MLP: the DDPM objective on a point set, with the U-Net's q_sample and L_simple (``losses``).

Loss (Ho et al. 2020, *Denoising Diffusion Probabilistic Models*, eq. 14, "L_simple"):
|| eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t, y) ||^2, t ~ Uniform{1..T}; for a labelled set,
y is replaced by the null label with probability ``label_dropout`` (Ho & Salimans 2022, *Classifier-Free
Diffusion Guidance*). AdamW with the U-Net's warm-up and cosine decay
(``training.lr_at``) and EMA weights (``training.ema_update``); the EMA network is the result.

``train_steps`` yields a ``TrainProgress`` every ``report_every`` steps (and the finished model last), so a UI can
show progress and stop between two steps; ``train`` runs it to the end. ``evaluate`` measures a model's samples
against fresh data, and ``python -m explainer.model.lab_training`` retrains the shipped presets (checkpoints/lab).
"""
from __future__ import annotations

import copy
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..diffusion.forward import q_sample
from ..diffusion.losses import simple_loss
from ..diffusion.respacing import make_chain
from ..diffusion.samplers import run
from ..diffusion.schedules import DDPM_T, make_schedule
from ..paths import CHECKPOINTS
from . import toy
from .mlp import EpsMLP, LabModel, MLPConfig, load_lab_model, save_lab_model
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


# ---------------------------------------------------------------- evaluation and the shipped presets


def sample_points(model, chain, n: int, seed: int, labels=None, guidance: float = 1.0, null_label=None,
                  method: str = "ddpm") -> np.ndarray:
    """n particles walked from N(0, I) along ``chain`` by ``samplers.run`` (any eps function), as float64 numpy."""
    x = run(model, chain, (n, 2), method=method, labels=labels, guidance=guidance, null_label=null_label, seed=seed)
    return x.double().numpy()


def evaluate(model, data: ToyData, steps: int = 100, n: int = 2000, seeds: int = 3, method: str = "ddpm") -> dict:
    """Distances of ``model``'s samples (``steps`` respaced steps) to fresh data, against the data-vs-data floor.

    For each seed: n particles, a fresh reference sample and a second fresh sample (the floor), all of size n;
    sliced Wasserstein and energy distances are averaged over the seeds. Also the share of particles within
    sqrt(1 - abar_1) of a training point, and the training points' own distance to the same fresh samples (what
    a sampler that returns them, as the exact denoiser nearly does, would score). ``model``: any eps function with a
    ``schedule`` (an exact denoiser too).
    """
    chain = make_chain(model.schedule, steps)
    tol = float(np.sqrt(1.0 - model.schedule.alpha_bars[0]))
    rows = []
    for s in range(seeds):
        x = sample_points(model, chain, n, 10 + s, method=method)
        ref, other = data.fresh(n, 100 + s), data.fresh(n, 200 + s)
        rows.append([toy.sliced_wasserstein(x, ref), toy.sliced_wasserstein(other, ref),
                     toy.energy_distance(x, ref), toy.energy_distance(other, ref),
                     toy.share_on_points(x, data.points, tol), toy.share_on_points(other, data.points, tol),
                     toy.sliced_wasserstein(data.points, ref)])
    m = np.mean(rows, axis=0)
    return {"steps": steps, "method": method, "particles": n, "seeds": seeds,
            "sliced_wasserstein": round(float(m[0]), 5), "sliced_wasserstein_floor": round(float(m[1]), 5),
            "sliced_wasserstein_ratio": round(float(m[0] / m[1]), 3),
            "training_points_ratio": round(float(m[6] / m[1]), 3),
            "energy_distance": round(float(m[2]), 6), "energy_distance_floor": round(float(m[3]), 6),
            "energy_distance_ratio": round(float(m[2] / m[3]), 3),
            "on_training_point": round(float(m[4]), 4), "fresh_on_training_point": round(float(m[5]), 4)}


PRESET_STEPS = 8000  # the shipped presets: the live recipe, trained longer (8 narrow Gaussians need it)


def train_presets(out, names=toy.PRESETS, cfg: LabTrainConfig | None = None, points: int = toy.NUM_POINTS,
                  log=print) -> dict:
    """Train and evaluate each preset's network; write ``out/<preset>/`` (weights + config with the records)."""
    cfg = cfg or LabTrainConfig(train_steps=PRESET_STEPS)
    results = {}
    for name in names:
        data = toy.make_preset(name, points, 0)
        model = train(data, cfg)
        model.info["eval"] = evaluate(model, data, seeds=EVAL_SEEDS)
        save_lab_model(Path(out) / toy.slug(name), model)
        results[name] = model.info
        t, e = model.info["training"], model.info["eval"]
        log(f"{name}: {t['steps_done']} steps in {t['seconds']} s, loss {t['final_loss']}; 100 DDPM steps: sliced "
            f"Wasserstein {e['sliced_wasserstein']} = {e['sliced_wasserstein_ratio']}x the floor, energy distance "
            f"{e['energy_distance_ratio']}x")
    return results


EVAL_SEEDS = 8  # walks averaged in the shipped presets' records (one walk's ratio varies by tens of percent)


def evaluate_presets(out, names=toy.PRESETS, seeds: int = EVAL_SEEDS, log=print) -> None:
    """Re-measure the shipped presets (``evaluate`` with ``seeds`` walks) and rewrite their records, not weights."""
    for name in names:
        folder = Path(out) / toy.slug(name)
        model = load_lab_model(folder)
        model.info["eval"] = evaluate(model, toy.make_preset(name, toy.NUM_POINTS, 0), seeds=seeds)
        save_lab_model(folder, model)
        e = model.info["eval"]
        log(f"{name}: sliced Wasserstein {e['sliced_wasserstein']} = {e['sliced_wasserstein_ratio']}x the floor, "
            f"energy distance {e['energy_distance_ratio']}x, on a training point {e['on_training_point']}")


def main(argv=None) -> None:
    import argparse
    p = argparse.ArgumentParser(description="Train the 2D lab's preset networks (the shipped checkpoints/lab).")
    p.add_argument("--out", default=str(CHECKPOINTS / "lab"))
    p.add_argument("--presets", nargs="*", default=list(toy.PRESETS), choices=list(toy.PRESETS))
    p.add_argument("--steps", type=int, default=PRESET_STEPS)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--hidden", type=int, default=LabTrainConfig.hidden, help="width of the MLP")
    p.add_argument("--blocks", type=int, default=LabTrainConfig.blocks, help="residual blocks of the MLP")
    p.add_argument("--evaluate-only", action="store_true", help="re-measure the shipped networks, do not train")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.evaluate_only:
        evaluate_presets(args.out, args.presets)
        return
    train_presets(args.out, args.presets, LabTrainConfig(train_steps=args.steps, hidden=args.hidden, blocks=args.blocks))


if __name__ == "__main__":
    main()
