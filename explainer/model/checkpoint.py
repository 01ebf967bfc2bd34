"""Checkpoints: safetensors weights + a JSON config, loaded without executing code.

A checkpoint is a folder holding ``model.safetensors`` and ``config.json`` (and, for shipped models, a
``MODEL_CARD.md``). ``load_model`` validates everything and raises ``CheckpointError`` with a message
that says what is wrong and how to fix it. Folders in diffusers' ``UNet2DModel`` format are loaded too
(diffusers is then required; it is optional for everything else).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..diffusion.respacing import network_timesteps
from ..diffusion.schedules import Schedule, make_schedule
from ..paths import DEFAULT_CHECKPOINT
from .unet import UNet, UNetConfig

FORMAT = "ddpm-explainer/1"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, or does not match its config."""


def pick_device(device: str | None = None) -> torch.device:
    """``None`` or "auto": CUDA when present, else CPU. Otherwise the named device (validated)."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CheckpointError(f"device {device!r} asked for, but CUDA is not available here; use --device cpu")
    return dev


@dataclass
class DiffusionModel:
    """A trained eps-prediction network with the schedule it was trained on.

    ``eps(x_t, alpha_bar, labels)`` is a denoiser (samplers.py): the network evaluated at noise level alpha_bar,
    which it maps to its (fractional) training step itself (``respacing.network_timesteps``).
    """

    net: torch.nn.Module
    schedule: Schedule
    image_size: int
    channels: int
    class_names: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    path: str = ""
    kind: str = "explainer"  # or "diffusers"
    # faster eps paths built for this model (explainer.accel.fast.best_eps_fn), keyed by their build
    # settings, and the app's background build of one (views.model_slot.start_fast_path); held here so that
    # they go away with the model
    fast_paths: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    fast_build: object = field(default=None, init=False, repr=False, compare=False)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def null_label(self) -> int | None:
        return self.num_classes if self.num_classes else None

    @property
    def recommended_guidance(self) -> float:
        """The guidance scale w its card recommends (``config.json``'s ``recommended_guidance``; else 1)."""
        return float(self.config.get("recommended_guidance", 1.0))

    @property
    def recommended_clip_x0(self) -> bool:
        """Whether its card recommends sampling with x0_hat clipped to [-1, 1] (``recommended_clip_x0``)."""
        return bool(self.config.get("recommended_clip_x0", False))

    def eps(self, x_t: torch.Tensor, alpha_bar, labels: torch.Tensor | None = None) -> torch.Tensor:
        """eps_theta(x_t) at noise level ``alpha_bar`` (a float, or one per row): the network at its training step of the same sigma."""
        t = network_timesteps(alpha_bar, self.schedule, x_t)
        if self.kind == "diffusers":
            return self.net(x_t, t - 1).sample  # diffusers indexes timesteps 0..T-1
        return self.net(x_t, t, labels)

    def __call__(self, x_t, alpha_bar, labels=None):
        return self.eps(x_t, alpha_bar, labels)


def save_checkpoint(folder: str | os.PathLike, net: UNet, schedule_spec: dict, class_names: list[str],
                    extra: dict | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``folder`` (created if needed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = net.config
    config = {"format": FORMAT, "unet": cfg.to_dict(), "schedule": schedule_spec,
              "image": {"size": cfg.image_size, "channels": cfg.in_channels}, "class_names": list(class_names)}
    config.update(extra or {})
    return write_checkpoint(folder, net, config, FORMAT)


def write_checkpoint(folder: Path, net: torch.nn.Module, config: dict, fmt: str) -> Path:
    """Write ``net``'s weights (float32 safetensors, replaced atomically) and ``config`` as JSON into ``folder``."""
    state = {k: v.detach().float().cpu().contiguous() for k, v in net.state_dict().items()}
    tmp = folder / (WEIGHTS + ".tmp")
    save_file(state, str(tmp), metadata={"format": fmt})
    os.replace(tmp, folder / WEIGHTS)
    (folder / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return folder


def _resolve(path) -> Path:
    path = Path(path if path is not None else DEFAULT_CHECKPOINT)
    if path.is_file() and path.name.endswith(".safetensors"):
        path = path.parent
    if not path.exists():
        raise CheckpointError(
            f"checkpoint not found: {path}. The shipped model lives in checkpoints/mnist-ddpm; "
            "train one with `python -m explainer train` or pass --checkpoint PATH.")
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a checkpoint folder (expected a folder with {WEIGHTS} and {CONFIG})")
    return path


def checkpoint_files(folder: Path, error: type[Exception], what: str) -> tuple[Path, Path]:
    """The config and weights paths of a checkpoint folder; ``error`` names the one missing ("<what> is
    incomplete: ... is missing")."""
    paths = folder / CONFIG, folder / WEIGHTS
    for p in paths:
        if not p.exists():
            raise error(f"{what} is incomplete: {p.name} is missing")
    return paths


def load_model(path=None, device: str | None = None) -> DiffusionModel:
    """Load a checkpoint folder (ours, or diffusers' UNet2DModel layout) onto ``device`` (auto by default)."""
    folder = _resolve(path)
    dev = pick_device(device)
    if (folder / "unet" / "config.json").exists() or _is_diffusers_unet(folder):
        return load_diffusers_unet(folder, dev)
    cfg_path, w_path = checkpoint_files(folder, CheckpointError, f"checkpoint {folder}")
    try:
        config = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_path} is not valid JSON ({e}); the file is damaged") from e
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{cfg_path} is not a {FORMAT} config (format: {config.get('format') if isinstance(config, dict) else None!r})")
    try:
        ucfg = UNetConfig.from_dict(config["unet"])
        sched = config["schedule"]
        schedule = make_schedule(sched["name"], int(sched["num_steps"]), bool(sched.get("zero_terminal_snr", False)))
        class_names = [str(c) for c in config.get("class_names", [])]
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{cfg_path} has a missing or invalid field: {e}") from e
    if len(class_names) != ucfg.num_classes:
        raise CheckpointError(f"{cfg_path}: {len(class_names)} class names but the U-Net has {ucfg.num_classes} classes")
    try:
        state = load_file(str(w_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{w_path} cannot be read ({e}); the file is truncated or not safetensors. "
                              "Re-copy or re-train the checkpoint.") from e
    net = UNet(ucfg)
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    bad_shapes = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or bad_shapes:
        raise CheckpointError(
            f"{w_path} does not match the architecture in {cfg_path}: "
            f"{len(missing)} missing tensors {missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, "
            f"{len(bad_shapes)} with other shapes {bad_shapes[:3]}")
    for k, v in state.items():
        if not torch.isfinite(v).all():
            raise CheckpointError(f"{w_path}: tensor {k} holds NaN or inf values")
    net.load_state_dict(state)
    net.to(dev).eval().requires_grad_(False)
    return DiffusionModel(net=net, schedule=schedule, image_size=ucfg.image_size, channels=ucfg.in_channels,
                          class_names=class_names, config=config, path=str(folder))


def _is_diffusers_unet(folder: Path) -> bool:
    cfg = folder / "config.json"
    if not cfg.exists():
        return False
    try:
        return json.loads(cfg.read_text()).get("_class_name") == "UNet2DModel"
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def load_diffusers_unet(folder, device=None) -> DiffusionModel:
    """Load a diffusers ``UNet2DModel`` folder (or a pipeline folder with ``unet/`` and ``scheduler/``).

    The schedule comes from ``scheduler/scheduler_config.json`` when present (linear 1e-4..0.02, T=1000
    otherwise, as for the google/ddpm-* models). Works offline; needs ``pip install diffusers``.
    """
    folder = Path(folder)
    dev = pick_device(device) if not isinstance(device, torch.device) else device
    try:
        from diffusers import UNet2DModel
    except ImportError as e:
        raise CheckpointError("this is a diffusers checkpoint; install diffusers to load it (pip install diffusers)") from e
    unet_dir = folder / "unet" if (folder / "unet").is_dir() else folder
    try:
        net = UNet2DModel.from_pretrained(str(unet_dir), local_files_only=True)
    except Exception as e:  # diffusers raises many error types for bad folders
        raise CheckpointError(f"cannot load diffusers UNet2DModel from {unet_dir}: {e}") from e
    sched_cfg = {}
    for cand in (folder / "scheduler" / "scheduler_config.json", folder / "scheduler_config.json"):
        if cand.exists():
            try:
                sched_cfg = json.loads(cand.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise CheckpointError(f"{cand} is not valid JSON ({e}); the file is damaged") from e
            if not isinstance(sched_cfg, dict):
                raise CheckpointError(f"{cand} must hold a JSON object")
            break
    name = {"linear": "linear", "squaredcos_cap_v2": "cosine", "scaled_linear": "scaled_linear",
            "sigmoid": "sigmoid"}.get(sched_cfg.get("beta_schedule", "linear"))
    if name is None:
        raise CheckpointError(f"unsupported beta_schedule {sched_cfg.get('beta_schedule')!r} in {folder}")
    T = int(sched_cfg.get("num_train_timesteps", 1000))
    if name in ("linear", "scaled_linear", "sigmoid") and ("beta_start" in sched_cfg or "beta_end" in sched_cfg):
        from ..diffusion import schedules as S
        maker = {"linear": S.linear_betas, "scaled_linear": S.scaled_linear_betas, "sigmoid": S.sigmoid_betas}[name]
        schedule = Schedule(name, maker(T, float(sched_cfg.get("beta_start", 1e-4)), float(sched_cfg.get("beta_end", 0.02))))
    else:
        schedule = make_schedule(name, T)
    if getattr(net.config, "num_class_embeds", None):
        raise CheckpointError("class-conditional diffusers UNet2DModel checkpoints are not supported")
    net.to(dev).eval().requires_grad_(False)
    size = net.config.sample_size
    size = size[0] if isinstance(size, (list, tuple)) else int(size)
    return DiffusionModel(net=net, schedule=schedule, image_size=size, channels=int(net.config.in_channels),
                          config={"diffusers": dict(net.config), "scheduler": sched_cfg}, path=str(folder),
                          kind="diffusers")
