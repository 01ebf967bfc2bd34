"""Subtract all the predicted noise at once: x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_bar_t).

The article's figure 10 shows, at each timestep, the triplet x0_hat | x_t | eps_hat (Ho et al. 2020,
eq. 15 gives x0_hat). Two sources:

- a reverse walk from pure noise (DDPM on the training schedule, respaced to ``num_t`` steps): x_t is
  the walk's state, and x0_hat is never fed back (it is what a one-shot denoiser would give);
- a real image x_0 (a digit, or an emoji for a colour model) noised with one known eps to ``num_t``
  timesteps t (closed form, eq. 4): all of them go through the network in one batched call, and the true
  eps and x_0 stand beside the predictions with the error per t.

The predicted and the true noise are shown on one shared scale (``NoiseRemoval.eps_scale``), named in
the captions.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from matplotlib.figure import Figure

from ..model.checkpoint import DiffusionModel
from ..diffusion.forward import predict_x0_from_eps, q_sample
from ..diffusion.respacing import spaced_timesteps
from ..diffusion.samplers import guided_eps, sample
from ..render.display import captioned, hstack, to_uint8, upscale, vstack
from .inputs import (GUIDANCE_MAX, SEED_MAX, UNCONDITIONAL, check_choice, check_float, check_int, class_labels,
                     digit_tensor, image_word, seeded_normal)
from .model_slot import eps_fn_for
from .walk import walk_chain

REAL_IMAGE = "real digit"  # the real-image source's published API value, for every model (its label names the pictures)
SOURCES = ("reverse walk", REAL_IMAGE)
SOURCE_ALIASES = {"real image": REAL_IMAGE}
EPS_QUANTILE = 0.999  # the shared noise scale covers this fraction of the noise values shown
MIN_T, MAX_T = 2, 200  # how many timesteps the grid may hold
GRID_COLUMNS = 5
TRIPLET_SCALE = 6


@dataclass
class NoiseRemoval:
    """Per timestep (noisiest first): x_t, eps_hat, x0_hat as float tensors [N,C,H,W] on the CPU.

    For the real-image source also the truth: x0 [1,C,H,W] and eps [1,C,H,W] (the same eps at every t).
    eps_scale: the one scale s that every noise picture of the result is shown with ([-s, s] -> 0..255).
    """

    source: str
    ts: list
    x_t: torch.Tensor
    eps_hat: torch.Tensor
    x0_hat: torch.Tensor
    x0: torch.Tensor | None = None
    eps: torch.Tensor | None = None
    label: str = UNCONDITIONAL
    errors: dict = field(default_factory=dict)
    eps_scale: float = 3.0
    clipped_walk: bool = False  # the reverse walk clipped x0_hat at each step (the x0_hat shown is the formula's)

    def __len__(self):
        return len(self.ts)


def noise_removal(model: DiffusionModel, source: str = REAL_IMAGE, image=None, label: str = UNCONDITIONAL,
                  guidance: float = 1.0, num_t: int = 50, seed: int = 0) -> NoiseRemoval:
    """Compute x_t, eps_hat and x0_hat at ``num_t`` timesteps spread evenly over 1..T (see module doc)."""
    source = check_choice("source", SOURCE_ALIASES.get(source, source), SOURCES)
    label = str(label)
    class_labels(model, label, 1)  # validates the class
    guidance = check_float("guidance scale", guidance, 0.0, GUIDANCE_MAX)
    num_t = check_int("number of timesteps", num_t, MIN_T, min(MAX_T, model.schedule.T))
    seed = check_int("seed", seed, 0, SEED_MAX)
    shape = (1, model.channels, model.image_size, model.image_size)
    eps_fn = eps_fn_for(model)
    if source == "reverse walk":  # sampled as the model's card recommends (clipped x0_hat for the emoji model)
        chain = walk_chain(model.schedule, num_t)
        recs = list(sample(eps_fn, chain, shape, method="ddpm", labels=class_labels(model, label, 1), guidance=guidance,
                           null_label=model.null_label, seed=seed, device=model.device,
                           clip_x0=model.recommended_clip_x0))
        x_t = torch.cat([r.x_t for r in recs]).cpu()
        eps_hat = torch.cat([r.eps for r in recs]).cpu()
        ts = torch.tensor([r.t for r in recs])
        levels = [r.coefs.alpha_bar for r in recs]
        x0_hat = predict_x0_from_eps(x_t, eps_hat, levels)  # the one-shot formula itself, never clipped
        result = NoiseRemoval(source, ts.tolist(), x_t, eps_hat, x0_hat, label=label,
                              eps_scale=shared_scale(eps_hat), clipped_walk=model.recommended_clip_x0)
        final = recs[-1].x_prev.cpu()
        result.errors["x0_hat vs the final sample"] = ((x0_hat - final) ** 2).mean(dim=(1, 2, 3)).numpy()
        return result
    x0 = digit_tensor(model, image)
    ts = spaced_timesteps(model.schedule.T, num_t)[::-1].copy()  # noisiest first, like the walk
    eps = seeded_normal(shape, seed)
    n = len(ts)
    t = torch.from_numpy(ts)
    levels = torch.from_numpy(model.schedule.alpha_bar_at(ts))  # each row's noise level, float64
    x_t = q_sample(x0.expand(n, -1, -1, -1), t, eps.expand(n, -1, -1, -1), model.schedule)
    with torch.inference_mode():  # one batched network call for every t (doubled batch under guidance)
        eps_hat = guided_eps(eps_fn, x_t.to(model.device), levels.to(model.device), class_labels(model, label, n),
                             guidance, model.null_label).float().cpu()
    x0_hat = predict_x0_from_eps(x_t, eps_hat, levels)
    result = NoiseRemoval(f"real {image_word(model)}", ts.tolist(), x_t, eps_hat, x0_hat, x0, eps, label=label,
                          eps_scale=shared_scale(eps_hat, eps))
    result.errors["eps_hat vs true eps"] = ((eps_hat - eps) ** 2).mean(dim=(1, 2, 3)).numpy()
    result.errors["x0_hat vs true x0"] = ((x0_hat - x0) ** 2).mean(dim=(1, 2, 3)).numpy()
    return result


def shared_scale(*noises: torch.Tensor) -> float:
    """One display scale s for all the given noise tensors: the EPS_QUANTILE quantile of |eps| over all of them,
    rounded up to 0.1 (so predicted and true noise are compared on the same grey or colour levels)."""
    values = torch.cat([n.detach().float().abs().flatten() for n in noises])
    if len(values) > 1_000_000:  # a large result: a fixed random sample of its values is enough
        values = values[torch.randperm(len(values), generator=torch.Generator().manual_seed(0))[:1_000_000]]
    q = float(torch.quantile(values, EPS_QUANTILE)) if len(values) else 1.0
    return max(0.1, float(np.ceil(q * 10) / 10))


def eps_image(eps: torch.Tensor, scale: float) -> np.ndarray:
    """Noise [C,H,W] as a picture on the scale ``scale``: -scale -> 0, 0 -> mid grey, +scale -> 255 (per channel)."""
    return to_uint8(eps / scale)


def _cell(result: NoiseRemoval, i: int, scale: int) -> list[np.ndarray]:
    return [upscale(to_uint8(result.x0_hat[i]), scale), upscale(to_uint8(result.x_t[i]), scale),
            upscale(eps_image(result.eps_hat[i], result.eps_scale), scale)]


def scale_note(result: NoiseRemoval) -> str:
    """The noise scale in words, for captions."""
    s = result.eps_scale
    both = "eps_hat and the true eps are" if result.eps is not None else "every eps_hat is"
    where = " (in each colour channel)" if result.eps_hat.shape[1] == 3 else ""
    return f"{both} shown on one scale: -{s:.1f} -> black, 0 -> grey, +{s:.1f} -> white{where}"


def noise_grid(result: NoiseRemoval, scale: int = 2) -> np.ndarray:
    """Every timestep's triplet x0_hat | x_t | eps_hat, captioned with t, in rows of GRID_COLUMNS.

    Every eps_hat is shown on the result's one scale (``scale_note``).
    """
    cells = [captioned(hstack(_cell(result, i, scale), pad=1), f"t={t}") for i, t in enumerate(result.ts)]
    rows = [hstack(cells[k:k + GRID_COLUMNS], pad=10) for k in range(0, len(cells), GRID_COLUMNS)]
    return vstack(rows, pad=6)


def noise_triplet(result: NoiseRemoval, index: int = 0) -> tuple[np.ndarray, str]:
    """One timestep large: x0_hat | x_t | eps_hat (| true x_0 | true eps), and its numbers as Markdown."""
    index = check_int("timestep index", index, 0, len(result) - 1)
    s = TRIPLET_SCALE
    sc = f"±{result.eps_scale:.1f}"
    names = ["x0_hat (all noise removed)", "x_t", f"eps_hat (predicted, {sc})"]
    tiles = [captioned(im, n) for im, n in zip(_cell(result, index, s), names)]
    t = result.ts[index]
    lines = [f"**t = {t}** (timestep {index + 1} of {len(result)}, source: {result.source})"]
    if result.x0 is not None:
        tiles += [captioned(upscale(to_uint8(result.x0[0]), s), "true x_0"),
                  captioned(upscale(eps_image(result.eps[0], result.eps_scale), s), f"true eps ({sc})")]
    for name, err in result.errors.items():
        lines.append(f"- mean squared error, {name}: {float(err[index]):.4f}")
    lines.append(f"- {scale_note(result)}")
    lines.append(f"- x0_hat before display clipping spans [{float(result.x0_hat[index].min()):.2f}, "
                 f"{float(result.x0_hat[index].max()):.2f}] (shown clipped to [-1, 1])")
    if result.clipped_walk:
        lines.append("- the walk itself clipped x0_hat to [-1, 1] before each step, as this model's card recommends; "
                     "the x0_hat above is the one-shot formula's")
    return hstack(tiles, pad=6), "\n".join(lines)


def noise_error_curve(result: NoiseRemoval, index: int | None = None) -> Figure:
    """The error per t as curves (log scale), with a cursor at the selected timestep."""
    fig = Figure(figsize=(6.4, 3.0), dpi=90, layout="constrained")
    ax = fig.add_subplot()
    for name, err in result.errors.items():
        ax.plot(result.ts, err, marker=".", label=name)
    if index is not None and 0 <= index < len(result):
        ax.axvline(result.ts[index], color="k", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.set_ylabel("mean squared error")
    title = ("how far the one-shot x0_hat is from the walk's final image" if result.x0 is None
             else "prediction error per t (one known eps for every t)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig
