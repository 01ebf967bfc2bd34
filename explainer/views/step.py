"""One reverse step taken apart: what the sampler did between two recorded frames of a walk.

DDPM (Ho et al. 2020, Algorithm 2; on a respaced chain alpha_t = alpha_bar_t / alpha_bar_t'):

    x_t' = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_hat) + sigma_t z

DDIM (Song et al. 2021, eq. 12):

    x_t' = sqrt(alpha_bar_t') x0_hat + sqrt(1 - alpha_bar_t' - sigma^2) eps_hat + sigma z

Both are "a deterministic part, plus sigma z". ``record_step`` keeps, per step, the predicted noise, the
deterministic part (x_t' - sigma z, from the sampler's own record), the fresh noise z and the step's row
of the chain's coefficient table (``SamplingChain.coefficients``): no step math is redone here, and
``step_anatomy`` shows them for the scrubbed frame.

The other samplers (samplers.py) keep their own parts in the record, and these are shown the same way: Euler's
slope d = (x - x0_hat) / sigma and the step along it (Karras et al. 2022, Algorithm 1), Euler ancestral's
fresh noise, Heun's predictor, second slope and their average, and the two x0_hat that DPM-Solver++(2M) combines
with their weights (Lu et al. 2022, Algorithm 2).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..render.display import captioned, eps_to_uint8, hstack, to_uint8, upscale, vstack
from ..diffusion.respacing import StepCoefficients
from ..diffusion.samplers import StepRecord
from .inputs import check_int, step_text

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
    x0_hat: np.ndarray | None = None  # the step's x0_hat (uint8)
    pictures: dict = field(default_factory=dict)  # the sampler's own parts as uint8 pictures (slopes on eps's scale)
    numbers: dict = field(default_factory=dict)  # and its own coefficients (sigma, sigma_next, weights, ...)
    nfe: int = 1  # network calls of this step


SLOPES = ("slope", "slope_2", "slope_avg")  # sampler parts in noise units, shown as eps is


def record_step(rec: StepRecord, method: str, clip_x0: bool = False) -> StepParts:
    """The parts of one ``samplers.sample`` record (the first image of the batch); ``clip_x0`` as sampled."""
    sigma = rec.coefs.sigma
    noise = sigma * rec.z[0] if rec.z is not None and sigma > 0 else None
    det = rec.x_prev[0] - noise if noise is not None else rec.x_prev[0]
    pictures, numbers = {}, {}
    for key, value in rec.parts.items():
        if torch.is_tensor(value):
            pictures[key] = eps_to_uint8(value[0]) if key in SLOPES else to_uint8(value[0])
        elif value is not None:
            numbers[key] = value
    return StepParts(method, rec.t, rec.t_prev, eps_to_uint8(rec.eps[0]), to_uint8(det),
                     None if noise is None else eps_to_uint8(rec.z[0]), rec.coefs, bool(clip_x0),
                     to_uint8(rec.x0_hat[0]), pictures, numbers, rec.nfe)


def sigma_step_formula(parts: StepParts) -> str:
    """Euler, Euler ancestral or Heun's update with this step's numbers (Karras et al. 2022, Algorithm 1)."""
    n, c = parts.numbers, parts.coefs
    clip = "x̂_0 clipped to [−1, 1]; " if parts.clipped else ""
    head = (f"{clip}in x = x_t/√ᾱ_t = x_0 + σ ε, with σ = √((1 − ᾱ)/ᾱ) = {n['sigma']:.4f} → σ' = {n['sigma_next']:.4f}: "
            f"the slope d = (x − x̂_0)/σ (Karras et al. 2022, eq. 4)")
    back = f"; then x_t' = √ᾱ_t' · x' with √ᾱ_t' = {c.x0_coef:.6f}"
    if parts.method == "euler":
        return (head + ", and x' = x + (σ' − σ) · d (Algorithm 1, lines 5–7)" + back
                + ". The same update as DDIM with η = 0: Euler's method on DDIM's ODE (Song et al. 2021, eq. 14).")
    if parts.method == "euler-a":
        return (head + f"; down to σ_down = {n['sigma_down']:.4f} along it, x' = x + (σ_down − σ) · d + σ_up z with "
                f"σ_up = {n['sigma_up']:.4f} (σ_down² + σ_up² = σ'²: the fresh noise restores the level σ')" + back
                + ". The same update as DDIM with η = 1, that is DDPM's posterior: the noise corrects what the "
                  "network got wrong so far (Karras et al. 2022, sec. 4).")
    if parts.nfe == 1:
        return head + ", and x' = x + (σ' − σ) · d: into σ' = 0 Heun takes Euler's step alone (line 8)" + back + "."
    return (head + "; the predictor x_pred = x + (σ' − σ) · d (Euler), a second network call there for "
            "d' = (x_pred − x̂_0(x_pred; σ'))/σ', and x' = x + (σ' − σ) · (d + d')/2 (Algorithm 1, lines 8–11)"
            + back + ". Two network calls buy a second-order step: its error falls 4x when the steps double.")


def dpm_formula(parts: StepParts) -> str:
    """DPM-Solver++(2M)'s update with this step's numbers (Lu et al. 2022, Algorithm 2)."""
    n = parts.numbers
    clip = "x̂_0 clipped to [−1, 1]; " if parts.clipped else ""
    if not n["second_order"]:
        what = "the first step has no earlier x̂_0" if parts.x0_hat is not None and n["c_x"] > 0 else \
            "into σ = 0 the step is x̂_0 itself"
        return (f"{clip}x_t' = c_x · x_t + w_0 · x̂_0 with c_x = σ_t'/σ_t = {n['c_x']:.6f}, w_0 = α_t'(1 − e^(−h)) = "
                f"{n['w0']:.6f}, first order ({what}; Lu et al. 2022, eq. 9 with α = √ᾱ, σ = √(1 − ᾱ), "
                "λ = log(α/σ), h = λ_t' − λ_t).")
    return (f"{clip}x_t' = c_x · x_t + w_0 · x̂_0 + w_1 · x̂_0 (last step) with c_x = {n['c_x']:.6f}, w_0 = "
            f"{n['w0']:.6f}, w_1 = {n['w1']:.6f}: the two predictions extrapolated, D = (1 + 1/2r) x̂_0 − 1/2r x̂_0 "
            "(last), r = h_last/h (DPM-Solver++(2M), Lu et al. 2022, Algorithm 2). One network call a step, "
            "second order from the x̂_0 it already has.")


def step_formula(parts: StepParts) -> str:
    """The step's update rule with this step's numbers, as Markdown."""
    if parts.method in ("euler", "euler-a", "heun"):
        return sigma_step_formula(parts)
    if parts.method == "dpmpp-2m":
        return dpm_formula(parts)
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


def _middle_tiles(parts: StepParts) -> list[tuple[np.ndarray, str]]:
    """The pictures between x_t and x_t' that show what this sampler did."""
    p, blank = parts.pictures, np.full_like(parts.eps, 255)
    z_caption = f"z (x sigma = {parts.coefs.sigma:.4f})" if parts.z is not None else "no noise added"
    noise = (parts.z if parts.z is not None else blank, z_caption)
    if parts.method in ("ddpm", "ddim"):
        return [(parts.eps, "eps_hat (predicted)"), (parts.deterministic, "without noise"), noise]
    if parts.method == "dpmpp-2m":
        last = p.get("x0_hat_last")
        return [(parts.x0_hat, f"x0_hat (weight {parts.numbers['w0']:.3f})"),
                (last if last is not None else blank, f"last x0_hat (weight {parts.numbers['w1']:.3f})"
                 if last is not None else "no last x0_hat: first order")]
    tiles = [(parts.x0_hat, "x0_hat (all noise removed)"), (p["slope"], "slope d = (x - x0_hat)/sigma")]
    if parts.method == "euler-a":
        tiles.append(noise)
    if "predictor" in p:
        tiles += [(p["predictor"], "predictor (Euler's step)"), (p["slope_2"], "slope d' there"),
                  (p["slope_avg"], "average (d + d')/2")]
    return tiles


def _row(frames: list, parts: StepParts, s: int, total: int, name: str, scale: int) -> np.ndarray:
    tiles = [(frames[s], f"x_t, t = {step_text(parts.t)}"), *_middle_tiles(parts),
             (frames[s + 1], f"x_t', t' = {step_text(parts.t_prev)}")]
    row = hstack([captioned(upscale(img, scale), text) for img, text in tiles], pad=6)
    return captioned(row, f"{name}: step {s + 1} of {total}; noise-like parts (eps_hat, slopes, z) shown on one scale, ±{NOISE_SCALE:g}",
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
        calls = f", {parts.nfe} network calls" if parts.nfe > 1 else ""
        lines.append(f"- **{w.name}**, step {s + 1} of {w.total}{calls} (t = {step_text(parts.t)} → "
                     f"t' = {step_text(parts.t_prev)}): "
                     + step_formula(parts))
    return vstack(rows, pad=8), "\n".join(lines)
