"""Training: the simple DDPM objective with classifier-free label dropout, AdamW and EMA weights.

Loss (Ho et al. 2020, eq. 14, "L_simple"): || eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t, y) ||^2
with t ~ Uniform{1..T}. For classifier-free guidance (Ho & Salimans 2022, Algorithm 1) the label y is
replaced by the null label with probability ``label_dropout``.

``Trainer`` holds one run in small parts: ``batch`` (draw and noise a batch), ``step`` (one optimiser step),
``save`` (EMA checkpoint and training state), ``sample_grid`` (a progress picture), ``resume`` and ``run``
(the loop). ``train(cfg)`` builds one and runs it.

Under torchrun (``torchrun --nproc_per_node=N -m explainer train ...``) each of the N processes trains a
DistributedDataParallel replica: every rank draws the same global batch from the shared seed and keeps its
own contiguous 1/N of it, DDP averages the gradients, and rank 0 alone keeps the EMA and writes files. One
step of N processes is therefore the step of one process on the whole batch (same global batch size and
learning rate), and the saved state does not depend on N: a run can resume with another process count.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist

from .checkpoint import WEIGHTS, pick_device, save_checkpoint
from .data import Dataset, load_image_folder, load_mnist, load_npz
from ..diffusion.forward import q_sample
from ..diffusion.losses import min_snr_weights, simple_loss
from ..diffusion.schedules import make_schedule
from .unet import UNet, UNetConfig, count_parameters

STATE = "train_state.pt"
LOSS_READBACK = 50  # steps between reads of the losses from the device (and, under torchrun, stop checks)


@dataclass
class TrainConfig:
    out: str = "checkpoints/mnist-ddpm"
    data: str = "mnist"  # "mnist" (bundled digits), an .npz file or a folder of images
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
    batch_size: int = 128  # the global batch, split over the processes under torchrun
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
    class_balance: bool = False  # draw the class uniformly, then an image of it (else images uniformly)
    min_snr_gamma: float | None = None  # weight step t by min(SNR_t, gamma) / SNR_t (Hang et al. 2023)
    init_from: str | None = None  # start from this checkpoint's weights (model and EMA) instead of at random

    def unet_config(self, num_classes: int) -> UNetConfig:
        return UNetConfig(image_size=self.image_size, in_channels=self.channels, base_channels=self.base_channels,
                          channel_mults=tuple(self.channel_mults), num_res_blocks=self.num_res_blocks,
                          attention_levels=tuple(self.attention_levels), num_classes=num_classes,
                          dropout=self.dropout)


def load_training_data(cfg: TrainConfig) -> Dataset:
    """The training images ``cfg.data`` names: "mnist", an .npz file (its train split) or a folder."""
    if cfg.data == "mnist":
        if cfg.image_size != 28 or cfg.channels != 1:
            raise ValueError("the bundled MNIST digits are 28x28 grayscale: use --image-size 28 --channels 1")
        return load_mnist("train")
    if Path(cfg.data).suffix.lower() == ".npz":
        data = load_npz(cfg.data, "train")
        h, w, c = data.image_shape
        if (h, w, c) != (cfg.image_size, cfg.image_size, cfg.channels):
            fix = f": use --image-size {h} --channels {c}" if h == w and c in (1, 3) else ""
            raise ValueError(f"{cfg.data} holds {h}x{w} images with {c} channel(s), not "
                             f"{cfg.image_size}x{cfg.image_size} with {cfg.channels}{fix}")
        return data
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
    from ..diffusion.respacing import make_chain, network_timesteps
    from ..diffusion.samplers import run
    n = 10 * max(1, num_classes) if num_classes else 40
    labels = torch.arange(n, device=device) % num_classes if num_classes else None
    shape = (n, model.config.in_channels, model.config.image_size, model.config.image_size)
    x0 = run(lambda x, ab, y: model(x, network_timesteps(ab, schedule, x), y), make_chain(schedule, 50), shape,
             method="ddim", labels=labels, guidance=2.0, null_label=model.config.null_label, seed=seed, device=device)
    save_grid(x0, path, nrow=10)


# ---------------------------------------------------------------- processes
@dataclass(frozen=True)
class World:
    """The processes of one run: this one's rank and local rank, and how many there are (1 without torchrun)."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1
    local_size: int = 1

    @classmethod
    def from_env(cls) -> World:
        """Read torchrun's WORLD_SIZE, RANK, LOCAL_RANK (and LOCAL_WORLD_SIZE); one process when they are unset."""
        env = os.environ
        if not all(k in env for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK")):
            return cls()
        size = int(env["WORLD_SIZE"])
        return cls(rank=int(env["RANK"]), local_rank=int(env["LOCAL_RANK"]), size=size,
                   local_size=int(env.get("LOCAL_WORLD_SIZE", size)))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def launcher(self) -> str:
        """The command that starts this many processes."""
        if self.size == 1:
            return "python -m explainer"
        nodes = "" if self.local_size == self.size else f" --nnodes={self.size // self.local_size}"
        return f"torchrun{nodes} --nproc_per_node={self.local_size} -m explainer"

    def device(self, requested: str | None) -> torch.device:
        """``requested`` (None: auto); with several processes on CUDA, this process's own GPU cuda:LOCAL_RANK."""
        device = pick_device(requested)
        if self.size > 1 and device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
        return device

    def shard(self, batch_size: int) -> slice:
        """This rank's rows of a global batch: a contiguous 1/N of it."""
        if batch_size % self.size:
            raise ValueError(f"--batch-size {batch_size} cannot be split evenly over {self.size} processes: "
                             f"use a multiple of {self.size}")
        n = batch_size // self.size
        return slice(self.rank * n, (self.rank + 1) * n)

    @contextlib.contextmanager
    def group(self, device: torch.device):
        """The process group for the block (NCCL on CUDA, gloo on CPU), destroyed after it, also on error.

        Nothing happens with one process, or when the caller has already initialised a group.
        """
        if self.size == 1 or dist.is_initialized():
            yield
            return
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        try:
            yield
        finally:
            dist.destroy_process_group()

    def barrier(self) -> None:
        """Wait for every rank (no-op with one process)."""
        if self.size > 1:
            if dist.get_backend() == "nccl":
                dist.barrier(device_ids=[torch.cuda.current_device()])
            else:
                dist.barrier()

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        """The element-wise mean of ``x`` over the ranks (``x`` itself with one process)."""
        if self.size > 1:
            dist.all_reduce(x)
            x = x / self.size
        return x

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when ``flag`` is true on any (a host read: call it rarely)."""
        if self.size == 1:
            return flag
        x = torch.tensor([float(flag)], device=device)
        dist.all_reduce(x, op=dist.ReduceOp.MAX)
        return bool(x.item())


# ---------------------------------------------------------------- training
class Batch(NamedTuple):
    """This rank's share of one training batch."""

    x0: torch.Tensor  # [b,C,H,W] data in [-1, 1]
    t: torch.Tensor  # [b] paper steps in 1..T
    eps: torch.Tensor  # [b,C,H,W] the noise to predict
    x_t: torch.Tensor  # q_sample(x0, t, eps)
    labels: torch.Tensor | None  # class labels, some replaced by the null label; None when unconditional


class Trainer:
    """One training run: data, U-Net, EMA copy, AdamW, noise schedule and a seeded generator.

    world: this process's place among torchrun's (default: one process); ``train`` passes ``World.from_env()``
    inside its process group. ``resume()`` then ``run()`` train; ``step()`` is one optimiser step.
    """

    def __init__(self, cfg: TrainConfig, world: World | None = None, progress: bool = True):
        self.cfg, self.world, self.progress = cfg, world or World(), progress
        self.mine = self.world.shard(cfg.batch_size)
        self.out = Path(cfg.out)
        self.state_path = self.out / STATE
        resumable = cfg.resume and self.state_path.exists()
        if (self.out / WEIGHTS).exists() and not resumable and not cfg.overwrite:
            raise FileExistsError(
                f"{self.out} already holds a trained model and no training state to resume from; training would "
                "replace it. Pass --overwrite to do that, or --out another folder.")
        if self.world.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.device = self.world.device(cfg.device)
        torch.manual_seed(cfg.seed)
        self.data = load_training_data(cfg)
        x_all, y_all = self.data.tensors()
        self.x_all, self.y_all = x_all.to(self.device), y_all.to(self.device)
        self.num_classes = len(self.data.class_names) if cfg.conditional else 0
        self.schedule = make_schedule(cfg.schedule, cfg.num_steps)
        self.model = UNet(cfg.unet_config(self.num_classes)).to(self.device)
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False) if self.world.is_main else None
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.gen = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.net = self.model  # what the forward pass calls: the model, or its DDP wrapper
        if self.world.size > 1:
            from torch.nn.parallel import DistributedDataParallel
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        self.steps_done, self.elapsed, self.losses = 0, 0.0, []
        self._recent: list[torch.Tensor] = []  # losses still on the device
        self.use_bf16 = cfg.bf16 and self.device.type == "cuda"
        self.by_class = None  # the images sorted by class, for class_balance (built at the first draw)

    def say(self, message: str) -> None:
        """Print on rank 0 only."""
        if self.world.is_main:
            print(message)

    def resume(self) -> bool:
        """Load model, EMA, optimiser, step, losses and generator from ``train_state.pt`` if there is one."""
        if not (self.cfg.resume and self.state_path.exists()):
            return False
        st = torch.load(self.state_path, map_location=self.device, weights_only=True)
        self.model.load_state_dict(st["model"])
        if self.ema is not None:
            self.ema.load_state_dict(st["ema"])
        self.opt.load_state_dict(st["opt"])
        self.steps_done, self.elapsed = int(st["step"]), float(st["elapsed"])
        self.losses = list(st.get("losses", []))
        self.gen.set_state(st["gen"].cpu())  # a generator state is a CPU ByteTensor on every device
        self.say(f"resumed from {self.state_path} at step {self.steps_done}")
        return True

    def batch(self) -> Batch:
        """Draw a batch (Ho et al. 2020, Algorithm 1): x_0 from the data, t ~ U{1..T}, eps ~ N(0, I) and
        x_t = q_sample(x_0, t, eps) (eq. 4); labels become the null label with probability ``label_dropout``.

        Every rank draws the whole global batch from the shared generator and keeps its own rows, so the
        batch (and the generator's state) is the same for any number of processes.
        """
        cfg, gen, dev, n = self.cfg, self.gen, self.device, self.cfg.batch_size
        idx = self.draw_images(n)
        t = torch.randint(1, cfg.num_steps + 1, (n,), device=dev, generator=gen)
        eps = torch.randn((n, *self.x_all.shape[1:]), device=dev, generator=gen)
        drop = torch.rand(n, device=dev, generator=gen) < cfg.label_dropout if self.num_classes else None
        idx, t, eps = idx[self.mine], t[self.mine], eps[self.mine]
        x0, y = self.x_all[idx], self.y_all[idx]
        labels = None
        if self.num_classes:
            labels = torch.where(drop[self.mine], torch.full_like(y, self.num_classes), y)
        return Batch(x0, t, eps, q_sample(x0, t, eps, self.schedule), labels)

    def draw_images(self, n: int) -> torch.Tensor:
        """Indices of n training images: uniform over the images, or with ``class_balance`` a class drawn
        uniformly (among those with images) and then an image of that class uniformly."""
        dev, gen = self.device, self.gen
        if not self.cfg.class_balance:
            return torch.randint(0, len(self.x_all), (n,), device=dev, generator=gen)
        if self.by_class is None:
            order = torch.argsort(self.y_all, stable=True)
            counts = torch.bincount(self.y_all, minlength=max(1, self.num_classes))
            present = torch.nonzero(counts).flatten()
            starts = torch.cumsum(counts, 0) - counts
            self.by_class = (order, starts[present], counts[present])
        order, starts, counts = self.by_class
        c = torch.randint(0, len(counts), (n,), device=dev, generator=gen)
        within = (torch.rand(n, device=dev, generator=gen) * counts[c]).long().clamp_max(counts[c] - 1)
        return order[starts[c] + within]

    def init_weights(self) -> None:
        """Copy ``init_from``'s weights into the model and the EMA (a fresh run that continues a trained model)."""
        from .checkpoint import load_model
        src = load_model(self.cfg.init_from, device="cpu").net
        if src.config != self.model.config:
            raise ValueError(f"--init-from {self.cfg.init_from} has another architecture than this run: "
                             f"{src.config} vs {self.model.config}")
        self.model.load_state_dict(src.state_dict())
        if self.ema is not None:
            self.ema.load_state_dict(src.state_dict())
        self.say(f"initialised from {self.cfg.init_from}")

    def step(self) -> torch.Tensor:
        """One optimiser step (L_simple, gradients clipped to norm 1, averaged over the ranks by DDP), then
        the EMA update; returns this rank's loss, left on the device."""
        cfg, s = self.cfg, self.steps_done
        b = self.batch()
        for g in self.opt.param_groups:
            g["lr"] = lr_at(s, cfg)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
            pred = self.net(b.x_t, b.t, b.labels)
        weights = None if cfg.min_snr_gamma is None else min_snr_weights(self.schedule, b.t, cfg.min_snr_gamma)
        loss = simple_loss(pred, b.eps, weights)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        if self.ema is not None:
            ema_update(self.ema, self.model, min(cfg.ema_decay, (1 + s) / (10 + s)))  # EMA warm-up
        self.steps_done += 1
        self._recent.append(loss.detach())
        return loss

    def flush_losses(self) -> None:
        """Read the losses of the last steps back from the device (averaged over the ranks) into ``losses``."""
        if self._recent:
            recent = self.world.mean(torch.stack(self._recent))
            self._recent.clear()
            self.losses.extend(recent.tolist())

    def save(self, final: bool = False) -> None:
        """Write the EMA checkpoint (model.safetensors, config.json) and train_state.pt; rank 0 writes, all wait."""
        self.flush_losses()
        if self.world.is_main:
            self._write(final)
        self.world.barrier()

    def _write(self, final: bool) -> None:
        cfg, out = self.cfg, self.out
        provenance = {
            "command": " ".join([f"{self.world.launcher} train"] + _cli_args(cfg)),
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
            "steps": self.steps_done, "wall_time_s": round(self.elapsed, 1), "device": _device_name(self.device),
            "world_size": self.world.size, "torch": torch.__version__, "parameters": count_parameters(self.model),
            "final": final, "loss_last_1000": float(np.mean(self.losses[-1000:])) if self.losses else None}
        extra = {"data": {"source": cfg.data, "description": self.data.description, "num_images": len(self.data),
                          "attribution": self.data.attribution},
                 "training": provenance}
        old = out / "config.json"
        if old.exists():  # keep metrics measured by `evaluate` if the architecture is unchanged
            try:
                prev = json.loads(old.read_text())
                if "metrics" in prev and prev.get("training", {}).get("steps") == self.steps_done:
                    extra["metrics"] = prev["metrics"]
            except (json.JSONDecodeError, OSError):
                pass
        save_checkpoint(out, self.ema, {"name": cfg.schedule, "num_steps": cfg.num_steps, "zero_terminal_snr": False},
                        self.data.class_names if self.num_classes else [], extra)
        tmp = self.state_path.with_name(STATE + ".tmp")
        torch.save({"model": self.model.state_dict(), "ema": self.ema.state_dict(), "opt": self.opt.state_dict(),
                    "step": self.steps_done, "elapsed": self.elapsed, "losses": self.losses[-5000:],
                    "gen": self.gen.get_state()}, tmp)
        os.replace(tmp, self.state_path)  # a reader never sees a half-written state

    def sample_grid(self) -> Path:
        """The progress grid of the EMA model, samples/stepNNNNNN.png (call on rank 0)."""
        path = self.out / "samples" / f"step{self.steps_done:06d}.png"
        path.parent.mkdir(exist_ok=True)
        save_sample_grid(self.ema, self.schedule, path, self.num_classes, self.device)
        return path

    def _out_of_time(self, deadline: float | None, first: bool) -> bool:
        """Past ``deadline``? With several processes the ranks agree, at the first step and every LOSS_READBACK."""
        if deadline is None:
            return False
        if self.world.size > 1 and not first and self.steps_done % LOSS_READBACK:
            return False
        return self.world.any(time.monotonic() > deadline, self.device)

    def run(self) -> Path:
        """Train up to ``train_steps`` or ``max_minutes``, saving every ``save_every`` steps and at the end."""
        from tqdm import tqdm
        cfg = self.cfg
        deadline = None if cfg.max_minutes is None else time.monotonic() + 60 * cfg.max_minutes
        bar = tqdm(total=cfg.train_steps, initial=self.steps_done, disable=not (self.progress and self.world.is_main),
                   dynamic_ncols=True, mininterval=2.0)
        self.net.train()
        t_start = time.monotonic() - self.elapsed
        self.world.barrier()  # every rank has read the saved state before rank 0 writes a new one
        first = True
        while self.steps_done < cfg.train_steps:
            if self._out_of_time(deadline, first):
                self.say(f"stopping at step {self.steps_done}: --max-minutes {cfg.max_minutes} reached")
                break
            first = False
            self.step()
            self.elapsed = time.monotonic() - t_start
            bar.update(1)
            s = self.steps_done
            if s % LOSS_READBACK == 0:
                self.flush_losses()
                bar.set_postfix(loss=f"{np.mean(self.losses[-200:]):.4f}", lr=f"{lr_at(s, cfg):.2e}")
            if s % cfg.save_every == 0:
                self.save()
            if cfg.sample_every and s % cfg.sample_every == 0 and self.world.is_main:
                self.sample_grid()
        bar.close()
        self.save(final=self.steps_done >= cfg.train_steps)
        self.say(f"saved {self.out} at step {self.steps_done} ({self.elapsed / 60:.1f} min, "
                 f"{count_parameters(self.model):,} parameters)")
        return self.out


def train(cfg: TrainConfig, progress: bool = True) -> Path:
    """Train (or resume) and write the EMA checkpoint to ``cfg.out``. Returns the checkpoint folder.

    Under torchrun, one process of a DistributedDataParallel run (see the module docstring).
    """
    world = World.from_env()
    world.shard(cfg.batch_size)  # refuse an indivisible batch before any process waits for another
    with world.group(world.device(cfg.device)):
        trainer = Trainer(cfg, world, progress)
        if not trainer.resume() and cfg.init_from:
            trainer.init_weights()
        return trainer.run()


def _cli_args(cfg: TrainConfig) -> list[str]:
    """The `python -m explainer train` flags that reproduce ``cfg`` (only those that differ from the defaults)."""
    default = TrainConfig()
    flags = {"conditional": "--unconditional", "bf16": "--no-bf16", "class_balance": "--class-balance"}  # switches
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
