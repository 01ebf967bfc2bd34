"""Views of the network itself: its blocks, how t and the class enter, and its feature maps on an x_t.

The article stops where the U-Net begins; these views continue with the real model (explainer.model.unet).
"""
from __future__ import annotations

import weakref

import numpy as np
import pandas as pd
import torch

from ..model.checkpoint import DiffusionModel
from ..diffusion.forward import q_sample
from ..model.unet import UNet, count_parameters, describe
from ..render.display import captioned, eps_to_uint8, hstack, to_uint8, upscale, vstack
from .inputs import SEED_MAX, UNCONDITIONAL, check_int, class_labels, digit_tensor, seeded_normal

MAX_CHANNELS_SHOWN = 8
_TABLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # network -> its table (a model switch reuses it)
FEATURE_TILE = 84  # pixels per feature map (at least), whatever its resolution


def _require_unet(model: DiffusionModel) -> UNet:
    if not isinstance(model.net, UNet):
        raise ValueError(f"the architecture views need an explainer U-Net; this checkpoint is a {model.kind} model "
                         f"({type(model.net).__name__})")
    return model.net


def architecture_table(model: DiffusionModel) -> pd.DataFrame:
    """One row per stage (explainer.model.unet.describe): blocks, input and output [C,H,W], parameters; plus a total.

    Built once per network (describe runs it on a dummy input) and handed out as a copy.
    """
    net = _require_unet(model)
    if net not in _TABLES:
        _TABLES[net] = _table(net)
    return _TABLES[net].copy()


def _table(net: UNet) -> pd.DataFrame:
    rows = describe(net)
    df = pd.DataFrame({
        "stage": [r["name"] for r in rows],
        "blocks": [r["blocks"] for r in rows],
        "input [C,H,W]": [" x ".join(map(str, r["in_shape"])) if r["in_shape"] else "t, class" for r in rows],
        "output [C,H,W]": [" x ".join(map(str, r["out_shape"])) for r in rows],
        "parameters": [int(r["params"]) for r in rows],
    })
    total = pd.DataFrame({"stage": ["total"], "blocks": [""], "input [C,H,W]": [""], "output [C,H,W]": [""],
                          "parameters": [count_parameters(net)]})
    return pd.concat([df, total], ignore_index=True)


def conditioning_markdown(model: DiffusionModel) -> str:
    """How t and the class label enter the network, with this model's sizes."""
    net = _require_unet(model)
    cfg = net.config
    ch, emb = cfg.base_channels, 4 * cfg.base_channels
    n_res = sum(1 for m in net.modules() if type(m).__name__ == "ResBlock")
    n_att = sum(1 for m in net.modules() if type(m).__name__ == "SelfAttention")
    cls = (f"The class y (0..{cfg.num_classes - 1}, or the extra *null* label {cfg.num_classes} for \"no class\", "
           f"used for classifier-free guidance) picks a row of a learned {cfg.num_classes + 1} x {emb} table, "
           "which is **added** to the time embedding." if cfg.num_classes else
           "This model is unconditional: there is no class embedding.")
    res = " -> ".join(f"{cfg.image_size // 2 ** i}x{cfg.image_size // 2 ** i}" for i in range(len(cfg.channel_mults)))
    return "\n".join([
        f"- **Timestep t** (the paper's 1..{model.schedule.T}) becomes a {ch}-dimensional sinusoidal vector "
        f"(cos and sin of t at {ch // 2} frequencies, as in the Transformer), then an MLP "
        f"({ch} -> {emb} -> {emb}, SiLU).",
        f"- {cls}",
        f"- That {emb}-dimensional embedding goes into **every** residual block ({n_res} of them): a linear layer "
        "maps it to the block's channels and adds it to every pixel of the feature map between the two "
        "convolutions. This is how one network serves all noise levels.",
        f"- Resolutions {res}; channels {', '.join(str(ch * m) for m in cfg.channel_mults)}; "
        f"{n_att} self-attention layers (at the lowest resolutions and in the middle); "
        "skip connections carry every encoder output to the decoder.",
        "- The output has the input's shape: the predicted noise eps_hat.",
    ])


def tile_factor(size: int) -> int:
    """The enlargement that makes a size x size map at least FEATURE_TILE pixels wide."""
    return max(1, -(-FEATURE_TILE // size))


def _tiles(fmap: torch.Tensor, k: int) -> np.ndarray:
    """The first k channels of one feature map [C,H,W], each normalised to its own range, in a row."""
    tiles = []
    for c in range(min(k, fmap.shape[0])):
        f = fmap[c].float()
        lo, hi = f.min(), f.max()
        g = ((f - lo) / (hi - lo) * 2 - 1) if hi > lo else torch.zeros_like(f)
        img = to_uint8(g[None])
        tiles.append(upscale(img, tile_factor(img.shape[0])))
    return hstack(tiles, pad=2)


def feature_rows(model: DiffusionModel, image=None, t: int = 300, digit: str = UNCONDITIONAL, seed: int = 0,
                 channels: int = MAX_CHANNELS_SHOWN) -> tuple[np.ndarray, list[tuple[np.ndarray, str]]]:
    """Noise a digit to x_t, run the U-Net once with ``features=[]``; return x_t and one row of maps per stage.

    Each row is (the first ``channels`` maps side by side, captioned; a caption with stage and shape).
    The U-Net is called directly (not through views.eps_fn_for): only the module exposes its features.
    """
    net = _require_unet(model)
    t = check_int("t", t, 1, model.schedule.T)
    labels = class_labels(model, str(digit), 1)
    seed = check_int("seed", seed, 0, SEED_MAX)
    channels = check_int("channels shown", channels, 1, 32)
    x0 = digit_tensor(model, image)
    x_t = q_sample(x0, t, seeded_normal(x0.shape, seed), model.schedule).to(model.device)
    feats: list = []
    tt = torch.full((1,), t, device=model.device)
    with torch.inference_mode():
        eps_hat = net(x_t, tt, labels, features=feats)
    rows = []
    for i, (where, h) in enumerate(feats):
        c, hh, ww = h.shape[1:]
        rows.append((captioned(_tiles(h[0].cpu(), channels), f"{i}: {where}, {c} channels at {hh}x{ww}"),
                     f"{where} stage {i}: {c} channels at {hh}x{ww}"))
    rows.append((captioned(upscale(eps_to_uint8(eps_hat[0].cpu()), tile_factor(model.image_size)), "output: eps_hat"),
                 "output: the predicted noise eps_hat"))
    x_img = captioned(upscale(to_uint8(x_t[0].cpu()), 6), f"x_t, t = {t}")
    return x_img, rows


def feature_maps(model: DiffusionModel, image=None, t: int = 300, digit: str = UNCONDITIONAL, seed: int = 0,
                 channels: int = MAX_CHANNELS_SHOWN) -> tuple[np.ndarray, np.ndarray]:
    """x_t and one sheet with a row of feature maps per stage, from the input side to the output."""
    x_img, rows = feature_rows(model, image, t, digit, seed, channels)
    return x_img, vstack([img for img, _ in rows], pad=6)
