"""One reverse step taken apart: what the sampler did between two recorded frames of a walk.

DDPM (Ho et al. 2020, Algorithm 2; on a respaced chain alpha_t = alpha_bar_t / alpha_bar_t'):

    x_t' = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_hat) + sigma_t z

DDIM (Song et al. 2021, eq. 12):

    x_t' = sqrt(alpha_bar_t') x0_hat + sqrt(1 - alpha_bar_t' - sigma^2) eps_hat + sigma z

Both are "a deterministic part, plus sigma z". ``record_step`` keeps, per step, the predicted noise, the
deterministic part (x_t' - sigma z, from the sampler's own record), the fresh noise z and the step's row
of the chain's coefficient table (``SamplingChain.coefficients``): no step math is redone here, and
``step_anatomy`` shows them for the scrubbed frame.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..render.display import captioned, eps_to_uint8, hstack, to_uint8, upscale, vstack
from ..diffusion.respacing import StepCoefficients
from ..diffusion.samplers import StepRecord
from .inputs import check_int

TILE_SCALE = 4
NOISE_SCALE = 3  # eps_hat and z are shown as noise / 3 (render.display.eps_to_uint8): one scale for both


@dataclass
class StepParts:
    """One recorded step from t to t_prev (pictures uint8 [H,W] or [H,W,C])."""

    method: str  # "ddpm" or "ddim"
    t: int
    t_prev: int
    eps: np.ndarray  # eps_hat (after guidance), shown as eps / 3 (NOISE_SCALE)
    deterministic: np.ndarray  # x_t' - sigma z
    z: np.ndarray | None  # the fresh noise (None: none added), shown as z / 3, the same scale as eps
    coefs: StepCoefficients  # the step's row of the chain's table (sigma = 0 where no noise was added)
    clipped: bool = False  # x0_hat was clipped to [-1, 1] before the step's mean was formed


def record_step(rec: StepRecord, method: str, clip_x0: bool = False) -> StepParts:
    """The parts of one ``samplers.sample`` record (the first image of the batch); ``clip_x0`` as sampled."""
    sigma = rec.coefs.sigma
    noise = sigma * rec.z[0] if rec.z is not None and sigma > 0 else None
    det = rec.x_prev[0] - noise if noise is not None else rec.x_prev[0]
    return StepParts(method, rec.t, rec.t_prev, eps_to_uint8(rec.eps[0]), to_uint8(det),
                     None if noise is None else eps_to_uint8(rec.z[0]), rec.coefs, bool(clip_x0))


def step_formula(parts: StepParts) -> str:
    """The step's update rule with this step's numbers, as Markdown."""
    c = parts.coefs
    noise = "σ z" if parts.z is not None else "0 (no noise at the last step)" if parts.method == "ddpm" else "0 (η = 0)"
    sigma_name = "√β̃_t" if c.variance == "beta_tilde" else "√β_t"
    if parts.clipped and parts.method == "ddpm":  # samplers.ddpm_step: the posterior mean of the clipped x0_hat
        return (f"x̂_0 clipped to [−1, 1], then x_t' = c_0 · x̂_0 + c_t · x_t + σ_t z, the posterior mean "
                f"μ̃_t (Ho et al. 2020, eq. 7): c_0 = {c.posterior_mean_coef1:.6f}, "
                f"c_t = {c.posterior_mean_coef2:.6f}, σ_t = {sigma_name} = {c.sigma:.6f}; noise term: {noise}")
    if parts.clipped:  # samplers.ddim_step: eps re-derived from the clipped x0_hat
        return (f"x̂_0 clipped to [−1, 1] and ε̂ re-derived from it, ε' = (x_t − √ᾱ_t · x̂_0)/√(1 − ᾱ_t); then "
                f"x_t' = √ᾱ_t' · x̂_0 + √(1 − ᾱ_t' − σ²) · ε' + σ z: √ᾱ_t' = {c.x0_coef:.6f}, "
                f"√(1 − ᾱ_t' − σ²) = {c.eps_coef:.6f}, σ = {c.sigma:.6f}; noise term: {noise}")
    if parts.method == "ddpm":
        return (f"x_t' = 1/√α_t · (x_t − β_t/√(1 − ᾱ_t) · ε̂) + σ_t z, with α_t = ᾱ_t/ᾱ_t' = {c.alpha:.6f}: "
                f"1/√α_t = {c.inv_sqrt_alpha:.6f}, β_t/√(1 − ᾱ_t) = {c.eps_coef:.6f}, "
                f"σ_t = {sigma_name} = {c.sigma:.6f}; noise term: {noise}")
    return (f"x_t' = √ᾱ_t' · x̂_0 + √(1 − ᾱ_t' − σ²) · ε̂ + σ z: √ᾱ_t' = {c.x0_coef:.6f}, "
            f"√(1 − ᾱ_t' − σ²) = {c.eps_coef:.6f}, σ = {c.sigma:.6f}; noise term: {noise}")


def _row(frames: list, parts: StepParts, s: int, total: int, name: str, scale: int) -> np.ndarray:
    blank = np.full_like(parts.eps, 255)
    z_caption = f"z (x sigma = {parts.coefs.sigma:.4f})" if parts.z is not None else "no noise added"
    tiles = [(frames[s], f"x_t, t = {parts.t}"), (parts.eps, "eps_hat (predicted)"),
             (parts.deterministic, "without noise"), (parts.z if parts.z is not None else blank, z_caption),
             (frames[s + 1], f"x_t', t' = {parts.t_prev}")]
    row = hstack([captioned(upscale(img, scale), text) for img, text in tiles], pad=6)
    return captioned(row, f"{name}: step {s + 1} of {total}; eps_hat and z shown on one scale, ±{NOISE_SCALE:g}",
                     height=16)


def step_anatomy(walks: list, index: int = 0, scale: int = TILE_SCALE) -> tuple[np.ndarray, str]:
    """The step taken from frame ``index`` (the last step at the last frame), for each walk: pictures and numbers.

    walks: ``reverse.Walk`` records (side by side: the same fraction of the way, as the scrubber shows).
    """
    if not walks:
        raise ValueError("no walk recorded yet: run a reverse walk first")
    index = check_int("frame", index, 0, walks[0].done)
    frac = index / max(1, walks[0].done)
    rows, lines = [], []
    for w in walks:
        if not w.steps:
            raise ValueError("this walk recorded no steps yet")
        s = min(int(round(frac * w.done)), len(w.steps) - 1)
        parts = w.steps[s]
        rows.append(_row(w.frames, parts, s, w.total, w.name, scale))
        lines.append(f"- **{w.name}**, step {s + 1} of {w.total} (t = {parts.t} → t' = {parts.t_prev}): "
                     + step_formula(parts))
    return vstack(rows, pad=8), "\n".join(lines)
