"""A small MLP eps_theta(x_t, t[, y]) for 2-D data, and its checkpoints (safetensors + a JSON config).

The network sees x_t (D numbers), the sinusoidal embedding of t (the U-Net's, ``unet.timestep_embedding``) passed
through a two-layer MLP, and optionally a learned class embedding whose extra index ``num_classes`` is the null
class of classifier-free guidance (Ho & Salimans 2022, *Classifier-Free Diffusion Guidance*). The embedding e is
added to the hidden state before every residual block:

    h_0 = W_in x_t,   h_{k+1} = h_k + W2_k SiLU(W1_k SiLU(h_k + e)),   eps = W_out SiLU(h_n + e).

The network is called with the paper's t in 1..T (a tensor [B]), like the U-Net; ``LabModel.eps(x_t, alpha_bar,
labels)`` is the denoiser the samplers take (samplers.py), which maps a noise level to its (fractional) training step
(``respacing.network_timesteps``), so the same samplers drive both networks and the exact denoiser.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ..diffusion.respacing import network_timesteps
from ..diffusion.schedules import Schedule, make_schedule
from .checkpoint import CONFIG, WEIGHTS, checkpoint_files, write_checkpoint
from .unet import count_parameters, timestep_embedding

FORMAT = "ddpm-explainer-lab/1"  # not the U-Net format: the app's model menu never lists these


class LabCheckpointError(RuntimeError):
    """A 2D-lab checkpoint is missing, damaged or does not match its config."""


class LabCheckpointMissing(LabCheckpointError):
    """A 2D-lab checkpoint folder, or one of its two files, is not there (rather than there and damaged)."""


@dataclass
class MLPConfig:
    dim: int = 2
    hidden: int = 128
    blocks: int = 2
    emb_dim: int = 64  # sinusoidal features of t
    num_classes: int = 0  # 0: unconditional; else labels 0..num_classes-1 plus the null label

    @property
    def null_label(self) -> int | None:
        return self.num_classes if self.num_classes else None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MLPConfig":
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown MLP config keys: {sorted(unknown)}")
        return cls(**d)


class Block(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, h, e):
        return h + self.fc2(torch.nn.functional.silu(self.fc1(torch.nn.functional.silu(h + e))))


class EpsMLP(nn.Module):
    """eps_theta(x_t, t, y): x_t [B, D], t [B] paper steps, labels [B] or None (None = the null class)."""

    def __init__(self, config: MLPConfig):
        super().__init__()
        self.config = config
        h = config.hidden
        self.t_mlp = nn.Sequential(nn.Linear(config.emb_dim, h), nn.SiLU(), nn.Linear(h, h))
        self.class_emb = nn.Embedding(config.num_classes + 1, h) if config.num_classes else None
        self.inp = nn.Linear(config.dim, h)
        self.blocks = nn.ModuleList(Block(h) for _ in range(config.blocks))
        self.out = nn.Linear(h, config.dim)

    def embed(self, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """The time embedding plus the class embedding, [B, hidden] ([1, hidden] when every row has the same t and
        label: it broadcasts), computed once per distinct (t, label)."""
        t = t.reshape(-1).to(torch.float32)  # a fractional step between two training steps is embedded as it is
        if self.class_emb is not None:
            labels = (torch.full(t.shape, self.config.num_classes, dtype=torch.long, device=t.device)
                      if labels is None else labels.reshape(-1).long().expand(t.shape[0]))
            key = torch.stack([t, labels.to(torch.float32)], 1)
        else:
            key = t[:, None]
        if len(key) and bool((key == key[0]).all()):  # one (t, label) for all rows, as a sampler calls: broadcast
            return self._embed(t[:1], None if labels is None else labels[:1])
        uniq, inverse = torch.unique(key, dim=0, return_inverse=True)
        if len(uniq) * 4 > len(key):  # mostly distinct (training): embed every row
            return self._embed(t, labels)
        first = torch.zeros(len(uniq), dtype=torch.long, device=key.device).scatter_(
            0, inverse, torch.arange(len(key), device=key.device))
        return self._embed(t[first], None if labels is None else labels[first])[inverse]

    def _embed(self, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        e = self.t_mlp(timestep_embedding(t, self.config.emb_dim))
        return e if self.class_emb is None else e + self.class_emb(labels)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device).reshape(-1)
        if t.numel() == 1:
            t = t.expand(x.shape[0])
        e = self.embed(t, labels)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, e)
        return self.out(torch.nn.functional.silu(h + e))


@dataclass
class LabModel:
    """A trained MLP with the schedule it was trained on and the data it learned (``data_key``)."""

    net: EpsMLP
    schedule: Schedule
    class_names: list[str] = field(default_factory=list)
    data_key: str = ""
    info: dict = field(default_factory=dict)  # training and evaluation records (the config's extra fields)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def null_label(self) -> int | None:
        return self.net.config.null_label

    @property
    def parameters(self) -> int:
        return count_parameters(self.net)

    def eps(self, x_t: torch.Tensor, alpha_bar, labels: torch.Tensor | None = None) -> torch.Tensor:
        """eps_theta(x_t) at noise level ``alpha_bar`` (a float, or one per row): the MLP at its training step of the same sigma."""
        return self.net(x_t, network_timesteps(alpha_bar, self.schedule, x_t), labels)

    def __call__(self, x_t, alpha_bar, labels=None):
        return self.eps(x_t, alpha_bar, labels)


def schedule_spec(schedule: Schedule) -> dict:
    name = schedule.name.replace("+zsnr", "")
    return {"name": name, "num_steps": schedule.T, "zero_terminal_snr": schedule.name.endswith("+zsnr")}


def save_lab_model(folder, model: LabModel) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (architecture, schedule, classes, data key, records)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"format": FORMAT, "mlp": model.net.config.to_dict(), "schedule": schedule_spec(model.schedule),
              "class_names": list(model.class_names), "data_key": model.data_key, **model.info}
    return write_checkpoint(folder, model.net, config, FORMAT)


def load_lab_model(folder) -> LabModel:
    """Load a 2D-lab checkpoint folder on the CPU; ``LabCheckpointError`` says what is wrong (``LabCheckpointMissing``
    where a file is not there, else that a file is damaged or does not match)."""
    folder = Path(folder)
    cfg_path, w_path = checkpoint_files(folder, LabCheckpointMissing, f"2D-lab checkpoint {folder.name}")
    try:
        config = json.loads(cfg_path.read_text())
        if config.get("format") != FORMAT:
            raise ValueError(f"format {config.get('format')!r}, expected {FORMAT}")
        mcfg = MLPConfig.from_dict(config["mlp"])
        sched = config["schedule"]
        schedule = make_schedule(sched["name"], int(sched["num_steps"]), bool(sched.get("zero_terminal_snr")))
        class_names = [str(c) for c in config.get("class_names", [])]
        if len(class_names) != mcfg.num_classes:
            raise ValueError(f"{len(class_names)} class names for {mcfg.num_classes} classes")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise LabCheckpointError(f"{cfg_path.parent.name}/{CONFIG} is damaged or not a 2D-lab config: {e}") from e
    try:
        state = load_file(str(w_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise LabCheckpointError(f"{folder.name}/{WEIGHTS} is damaged: it cannot be read ({e}); the file is "
                                 "truncated or not safetensors") from e
    net = EpsMLP(mcfg)
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise LabCheckpointError(f"{folder.name}/{WEIGHTS} does not match its config: {e}") from e
    net.eval().requires_grad_(False)
    info = {k: v for k, v in config.items() if k not in ("format", "mlp", "schedule", "class_names", "data_key")}
    return LabModel(net, schedule, class_names, str(config.get("data_key", "")), info)
