"""Training: the simple DDPM objective with classifier-free label dropout, AdamW and EMA weights.

Loss (Ho et al. 2020, eq. 14, "L_simple"): || eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t, y) ||^2
with t ~ Uniform{1..T}. For classifier-free guidance (Ho & Salimans 2022, Algorithm 1) the label y is
replaced by the null label with probability ``label_dropout``.
"""
from __future__ import annotations

import copy
import json
import math
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import WEIGHTS, pick_device, save_checkpoint
from .data import MNIST_ATTRIBUTION, load_image_folder, load_mnist
from ..diffusion.schedules import make_schedule
from .unet import UNet, UNetConfig, count_parameters

STATE = "train_state.pt"


@dataclass
class TrainConfig:
    out: str = "checkpoints/mnist-ddpm"
    data: str = "mnist"  # "mnist" (bundled digits) or a folder of images
    image_size: int = 28
    channels: int = 1
    conditional: bool = True
    schedule: str = "linear"
    num_steps: int = 1000  # T
    base_channels: int = 16
    channel_mults: tuple = (1, 2, 4)
    num_res_blocks: int = 1
    attention_levels: tuple = (2,)
    dropout: float = 0.0
    batch_size: int = 128
    lr: float = 2e-3
    warmup: int = 500
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    label_dropout: float = 0.1
    train_steps: int = 12000
    max_minutes: float | None = None
    seed: int = 0
    device: str | None = None
    sample_every: int = 2000
    save_every: int = 1000
    resume: bool = True
    bf16: bool = True  # autocast on CUDA only
    overwrite: bool = False  # start afresh in a folder that holds a finished model (the shipped one, say)

    def unet_config(self, num_classes: int) -> UNetConfig:
        return UNetConfig(image_size=self.image_size, in_channels=self.channels, base_channels=self.base_channels,
                          channel_mults=tuple(self.channel_mults), num_res_blocks=self.num_res_blocks,
                          attention_levels=tuple(self.attention_levels), num_classes=num_classes,
                          dropout=self.dropout)


def load_training_data(cfg: TrainConfig):
    if cfg.data == "mnist":
        if cfg.image_size != 28 or cfg.channels != 1:
            raise ValueError("the bundled MNIST digits are 28x28 grayscale: use --image-size 28 --channels 1")
        return load_mnist("train")
    return load_image_folder(cfg.data, cfg.image_size, cfg.channels)


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay ema + (1 - decay) model, as one multi-tensor kernel on CUDA (a loop of lerps on CPU)."""
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 10 % of the peak over ``train_steps``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.train_steps - cfg.warmup))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def save_sample_grid(model, schedule, path: Path, num_classes: int, device, seed: int = 0) -> None:
    """A quick grid (DDIM, 50 steps, guidance 2) to watch training progress."""
    from ..render.display import save_grid
    from ..diffusion.respacing import make_chain
    from ..diffusion.samplers import run
    n = 10 * max(1, num_classes) if num_classes else 40
    labels = torch.arange(n, device=device) % num_classes if num_classes else None
    x0 = run(lambda x, t, y: model(x, t, y), make_chain(schedule, 50), (n, model.config.in_channels,
             model.config.image_size, model.config.image_size), method="ddim", labels=labels, guidance=2.0,
             null_label=model.config.null_label, seed=seed, device=device)
    save_grid(x0, path, nrow=10)


def train(cfg: TrainConfig, progress: bool = True) -> Path:
    """Train (or resume) and write the EMA checkpoint to ``cfg.out``. Returns the checkpoint folder."""
    from tqdm import tqdm
    out = Path(cfg.out)
    resumable = cfg.resume and (out / STATE).exists()
    if (out / WEIGHTS).exists() and not resumable and not cfg.overwrite:
        raise FileExistsError(
            f"{out} already holds a trained model and no training state to resume from; training would replace "
            "it. Pass --overwrite to do that, or --out another folder.")
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    data = load_training_data(cfg)
    x_all, y_all = data.tensors()
    x_all, y_all = x_all.to(device), y_all.to(device)
    num_classes = len(data.class_names) if cfg.conditional else 0
    schedule = make_schedule(cfg.schedule, cfg.num_steps)
    model = UNet(cfg.unet_config(num_classes)).to(device)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sqrt_ab = torch.tensor(np.sqrt(np.concatenate([[1.0], schedule.alpha_bars])), dtype=torch.float32, device=device)
    sqrt_1m_ab = torch.tensor(np.sqrt(1 - np.concatenate([[1.0], schedule.alpha_bars])), dtype=torch.float32, device=device)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    step, elapsed, losses = 0, 0.0, []
    state_path = out / STATE
    if cfg.resume and state_path.exists():
        st = torch.load(state_path, map_location=device, weights_only=True)
        model.load_state_dict(st["model"])
        ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["opt"])
        step, elapsed = int(st["step"]), float(st["elapsed"])
        losses = list(st.get("losses", []))
        gen.set_state(st["gen"].cpu())  # a generator state is a CPU ByteTensor on every device (map_location moved it)
        print(f"resumed from {state_path} at step {step}")
    use_bf16 = cfg.bf16 and device.type == "cuda"
    spec = {"name": cfg.schedule, "num_steps": cfg.num_steps, "zero_terminal_snr": False}

    def save(final: bool):
        provenance = {
            "command": " ".join(["python -m explainer train"] + _cli_args(cfg)),
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
            "steps": step, "wall_time_s": round(elapsed, 1), "device": _device_name(device),
            "torch": torch.__version__, "parameters": count_parameters(model), "final": final,
            "loss_last_1000": float(np.mean(losses[-1000:])) if losses else None}
        extra = {"data": {"source": cfg.data, "description": data.description, "num_images": len(data),
                          "attribution": MNIST_ATTRIBUTION if cfg.data == "mnist" else ""},
                 "training": provenance}
        old = out / "config.json"
        if old.exists():  # keep metrics measured by `evaluate` if the architecture is unchanged
            try:
                prev = json.loads(old.read_text())
                if "metrics" in prev and prev.get("training", {}).get("steps") == step:
                    extra["metrics"] = prev["metrics"]
            except (json.JSONDecodeError, OSError):
                pass
        save_checkpoint(out, ema, spec, data.class_names if num_classes else [], extra)
        torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "step": step,
                    "elapsed": elapsed, "losses": losses[-5000:], "gen": gen.get_state()}, state_path)

    deadline = None if cfg.max_minutes is None else time.monotonic() + 60 * cfg.max_minutes
    bar = tqdm(total=cfg.train_steps, initial=step, disable=not progress, dynamic_ncols=True, mininterval=2.0)
    model.train()
    t_start = time.monotonic() - elapsed
    recent: list[torch.Tensor] = []  # losses still on the device: read back every 50 steps, not every step

    def flush_losses():
        if recent:
            losses.extend(torch.stack(recent).tolist())
            recent.clear()

    while step < cfg.train_steps:
        if deadline is not None and time.monotonic() > deadline:
            print(f"stopping at step {step}: --max-minutes {cfg.max_minutes} reached")
            break
        idx = torch.randint(0, len(x_all), (cfg.batch_size,), device=device, generator=gen)
        x0, y = x_all[idx], y_all[idx]
        t = torch.randint(1, cfg.num_steps + 1, (cfg.batch_size,), device=device, generator=gen)
        eps = torch.randn(x0.shape, device=device, generator=gen)
        x_t = sqrt_ab[t].view(-1, 1, 1, 1) * x0 + sqrt_1m_ab[t].view(-1, 1, 1, 1) * eps
        labels = None
        if num_classes:
            drop = torch.rand(cfg.batch_size, device=device, generator=gen) < cfg.label_dropout
            labels = torch.where(drop, torch.full_like(y, num_classes), y)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            pred = model(x_t, t, labels)
        loss = F.mse_loss(pred.float(), eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema_update(ema, model, min(cfg.ema_decay, (1 + step) / (10 + step)))  # EMA warm-up
        step += 1
        recent.append(loss.detach())
        elapsed = time.monotonic() - t_start
        bar.update(1)
        if step % 50 == 0:
            flush_losses()
            bar.set_postfix(loss=f"{np.mean(losses[-200:]):.4f}", lr=f"{lr_at(step, cfg):.2e}")
        if step % cfg.save_every == 0:
            flush_losses()
            save(final=False)
        if cfg.sample_every and step % cfg.sample_every == 0:
            (out / "samples").mkdir(exist_ok=True)
            save_sample_grid(ema, schedule, out / "samples" / f"step{step:06d}.png", num_classes, device)
    bar.close()
    flush_losses()
    save(final=step >= cfg.train_steps)
    print(f"saved {out} at step {step} ({elapsed / 60:.1f} min, {count_parameters(model):,} parameters)")
    return out


def _cli_args(cfg: TrainConfig) -> list[str]:
    """The `python -m explainer train` flags that reproduce ``cfg`` (only those that differ from the defaults)."""
    default = TrainConfig()
    flags = {"conditional": "--unconditional", "bf16": "--no-bf16"}  # boolean switches
    args = []
    for k, v in asdict(cfg).items():
        d = getattr(default, k)
        if k in ("resume", "overwrite") or v == d or (isinstance(v, (list, tuple)) and tuple(v) == tuple(d)):
            continue
        if k in flags:
            args.append(flags[k])
        else:
            args.append(f"--{k.replace('_', '-')} " + (" ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)))
    return args


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
