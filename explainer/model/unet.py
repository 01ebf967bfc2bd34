"""A small, readable U-Net that predicts the noise eps_theta(x_t, t, y).

The structure follows the DDPM U-Net (Ho et al. 2020, appendix B) as refined in improved-diffusion
(Nichol & Dhariwal 2021): sinusoidal time embedding -> MLP, residual blocks with GroupNorm whose
features are shifted by the time (and class) embedding, self-attention at low resolution, and skip
connections from every encoder block to the decoder. Class conditioning adds a learned class
embedding to the time embedding; the extra index ``num_classes`` is the *null* class used for
classifier-free guidance (Ho & Salimans 2022).

The network is called with the paper's timestep t in 1..T (a float or integer tensor of shape [B]).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class UNetConfig:
    """Architecture hyper-parameters; stored verbatim in every checkpoint's JSON."""

    image_size: int = 28
    in_channels: int = 1
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention_levels: tuple[int, ...] = (2,)  # indices into channel_mults
    num_heads: int = 4
    num_classes: int = 0  # 0: unconditional; else labels 0..num_classes-1 plus a null label
    dropout: float = 0.0
    groups: int = 8

    def __post_init__(self):
        self.channel_mults = tuple(int(m) for m in self.channel_mults)
        self.attention_levels = tuple(int(a) for a in self.attention_levels)
        if self.image_size % (2 ** (len(self.channel_mults) - 1)):
            raise ValueError(
                f"image_size {self.image_size} must be divisible by 2^{len(self.channel_mults) - 1}"
                " (one halving per extra level)")
        for m in self.channel_mults:
            if (self.base_channels * m) % self.groups:
                raise ValueError(f"channels {self.base_channels * m} not divisible by groups {self.groups}")

    @property
    def null_label(self) -> int | None:
        return self.num_classes if self.num_classes else None

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown U-Net config keys: {sorted(unknown)}")
        return cls(**d)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer sinusoidal embedding of (possibly fractional) timesteps (Ho et al. 2020, sec. 4)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the embedding added between the convolutions."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity (improved-diffusion)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the pixels of a feature map, with a residual connection."""

    def __init__(self, channels: int, num_heads: int, groups: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.num_heads, c // self.num_heads, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x, emb=None):
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x, emb=None):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Stage(nn.Module):
    """A sequence of blocks at one resolution, each taking (x, emb)."""

    def __init__(self, *blocks: nn.Module):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x, emb):
        for block in self.blocks:
            x = block(x, emb)
        return x


class UNet(nn.Module):
    """eps_theta(x_t, t, y): predicts the noise that was added to x_0 to make x_t."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = cfg = config
        ch = cfg.base_channels
        emb_dim = 4 * ch
        self.time_mlp = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(cfg.num_classes + 1, emb_dim) if cfg.num_classes else None
        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)

        def block(c_in, c_out, level):
            layers = [ResBlock(c_in, c_out, emb_dim, cfg.groups, cfg.dropout)]
            if level in cfg.attention_levels:
                layers.append(SelfAttention(c_out, cfg.num_heads, cfg.groups))
            return Stage(*layers)

        self.down = nn.ModuleList()
        skip_channels = [ch]
        c = ch
        for level, mult in enumerate(cfg.channel_mults):
            for _ in range(cfg.num_res_blocks):
                self.down.append(block(c, ch * mult, level))
                c = ch * mult
                skip_channels.append(c)
            if level < len(cfg.channel_mults) - 1:
                self.down.append(Stage(Downsample(c)))
                skip_channels.append(c)
        self.middle = Stage(ResBlock(c, c, emb_dim, cfg.groups, cfg.dropout),
                            SelfAttention(c, cfg.num_heads, cfg.groups),
                            ResBlock(c, c, emb_dim, cfg.groups, cfg.dropout))
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mults))):
            for i in range(cfg.num_res_blocks + 1):
                stage = block(c + skip_channels.pop(), ch * mult, level)
                c = ch * mult
                if level > 0 and i == cfg.num_res_blocks:
                    stage.blocks.append(Upsample(c))
                self.up.append(stage)
        self.out = nn.Sequential(nn.GroupNorm(cfg.groups, c), nn.SiLU(), nn.Conv2d(c, cfg.in_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def embed(self, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Time embedding plus class embedding; labels None (or the null label) means unconditional."""
        emb = self.time_mlp(timestep_embedding(t, self.config.base_channels))
        if self.class_emb is not None:
            if labels is None:
                labels = torch.full((t.shape[0],), self.config.num_classes, device=t.device, dtype=torch.long)
            emb = emb + self.class_emb(labels)
        return emb

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None,
                features: list | None = None) -> torch.Tensor:
        """x: [B,C,H,W] in [-1,1] scale; t: [B] paper timesteps; labels: [B] ints or None.

        If ``features`` is a list, the output of every stage is appended to it (for visualisation).
        """
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        emb = self.embed(t, labels)
        h = self.conv_in(x)
        skips = [h]
        for stage in self.down:
            h = stage(h, emb)
            skips.append(h)
            if features is not None:
                features.append(("down", h))
        h = self.middle(h, emb)
        if features is not None:
            features.append(("middle", h))
        for stage in self.up:
            h = stage(torch.cat([h, skips.pop()], dim=1), emb)
            if features is not None:
                features.append(("up", h))
        return self.out(h)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def describe(model: UNet, x: torch.Tensor | None = None) -> list[dict]:
    """One row per top-level stage: name, kind, input/output shape, channels, parameters.

    Shapes are found by running a dummy input through the model once (no gradients).
    """
    cfg = model.config
    if x is None:
        x = torch.zeros(1, cfg.in_channels, cfg.image_size, cfg.image_size, device=next(model.parameters()).device)
    rows = []
    hooks = []
    named = ([("conv_in", model.conv_in)] + [(f"down.{i}", m) for i, m in enumerate(model.down)]
             + [("middle", model.middle)] + [(f"up.{i}", m) for i, m in enumerate(model.up)] + [("out", model.out)])

    def hook_for(name, module):
        def hook(mod, args, out):
            inp = args[0]
            kinds = [type(b).__name__ for b in getattr(mod, "blocks", [mod])]
            rows.append({"name": name, "blocks": " + ".join(kinds), "in_shape": list(inp.shape[1:]),
                         "out_shape": list(out.shape[1:]), "params": count_parameters(mod)})
        return hook

    for name, module in named:
        hooks.append(module.register_forward_hook(hook_for(name, module)))
    try:
        with torch.no_grad():
            labels = torch.zeros(x.shape[0], dtype=torch.long, device=x.device) if cfg.num_classes else None
            model(x, torch.ones(x.shape[0], device=x.device), labels)
    finally:
        for h in hooks:
            h.remove()
    emb_params = count_parameters(model.time_mlp) + (count_parameters(model.class_emb) if model.class_emb else 0)
    rows.insert(0, {"name": "embedding", "blocks": "sinusoidal(t) -> MLP" + (" + class table" if model.class_emb else ""),
                    "in_shape": [], "out_shape": [4 * cfg.base_channels], "params": emb_params})
    return rows
