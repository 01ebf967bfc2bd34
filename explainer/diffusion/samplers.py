"""Reverse-process samplers as generators: one ``StepRecord`` per step, so a UI can stream any step.

A sampler needs three independent pieces: a ``Denoiser``, a ``SamplingChain`` (which steps, which alpha_bars; see
respacing.py), and a noise source (a seeded ``torch.Generator``). Nothing here knows about the U-Net.

A denoiser is told the noise level it works at, as k-diffusion's ``model(x, sigma)`` is:
``eps_fn(x_t, alpha_bar, labels) -> eps_hat``, with alpha_bar the level of x_t (one float for the batch, or a
tensor of one per row) and labels [B] class ids or None. The samplers pass the chain's own alpha_bar, the
inference schedule's; a sampler that evaluates twice per step passes each evaluation its own level. A network
trained on discrete steps maps a level to its nearest training step itself (``respacing.network_timesteps``: the
U-Net's ``DiffusionModel``, the 2D ``LabModel``, the fast paths of accel/fast.py), and the exact denoiser
(exact.py) is exact at any level: a denoiser never needs to know which call of a walk it is answering.

Noise is drawn in diffusers' order (x_T first, then z for every step that adds noise), on the
generator's device (CPU by default) and then moved, so a seed gives the same picture on CPU and GPU.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator, Protocol

import torch

from .forward import predict_eps_from_x0, predict_x0_from_eps
from .respacing import SamplingChain, StepCoefficients, check_step_args


class Denoiser(Protocol):
    """eps_hat(x_t) at noise level ``alpha_bar`` (a float, or a tensor of one level per row); labels [B] or None."""

    def __call__(self, x_t: torch.Tensor, alpha_bar, labels: torch.Tensor | None = None) -> torch.Tensor: ...


@dataclass
class StepRecord:
    """What happened at one reverse step from t to t_prev."""

    index: int  # 0-based position in the chain
    t: int  # paper step of x_t (inference schedule)
    t_prev: int  # paper step of x_prev (0 = clean image)
    model_t: int  # training step the network is evaluated at (respacing.nearest_training_steps), for display
    x_t: torch.Tensor
    eps: torch.Tensor  # eps_hat (after guidance)
    x0_hat: torch.Tensor  # forward.predict_x0_from_eps (Ho et al. 2020, eq. 15), clipped if asked
    x_prev: torch.Tensor
    coefs: StepCoefficients  # this step's row of the chain's table (floats)
    z: torch.Tensor | None = None  # the fresh noise of this step (x_prev = deterministic part + coefs.sigma z)


def guidance_labels(labels: torch.Tensor | None, guidance: float, null_label: int | None):
    """The labels of the one network call that classifier-free guidance needs, and whether it doubles the batch.

    w = 1 is the plain conditional model (labels as given), w = 0 the unconditional one (all null labels);
    any other w calls the network once on [conditional; unconditional] (Ho & Salimans 2022).
    """
    if labels is None or null_label is None or guidance == 1.0:
        return labels, False
    null = torch.full_like(labels, null_label)
    if guidance == 0.0:
        return null, False
    return torch.cat([labels, null]), True


def combine_guided(eps: torch.Tensor, guidance: float) -> torch.Tensor:
    """eps_u + w (eps_c - eps_u) from the doubled batch [eps_c; eps_u] (Ho & Salimans 2022, eq. 6)."""
    eps_c, eps_u = eps.chunk(2)
    return eps_u + guidance * (eps_c - eps_u)


def guided_eps(eps_fn: Denoiser, x: torch.Tensor, alpha_bar, labels: torch.Tensor | None,
               guidance: float, null_label: int | None) -> torch.Tensor:
    """Classifier-free guided eps_hat at noise level ``alpha_bar`` from one denoiser call (``guidance_labels``,
    ``combine_guided``); a level per row is doubled with the batch."""
    call_labels, doubled = guidance_labels(labels, guidance, null_label)
    if not doubled:
        return eps_fn(x, alpha_bar, call_labels)
    if torch.is_tensor(alpha_bar) and alpha_bar.numel() > 1:
        alpha_bar = torch.cat([alpha_bar.reshape(-1), alpha_bar.reshape(-1)])
    return combine_guided(eps_fn(torch.cat([x, x]), alpha_bar, call_labels), guidance)


def _x0_hat(x_t, eps, alpha_bar: float, clip: bool = False):
    """x0_hat from eps (``forward.predict_x0_from_eps``, Ho et al. 2020, eq. 15), clipped to the data range [-1, 1]
    if asked. Where alpha_bar = 0 (zero terminal SNR) eq. 15 divides by 0: the clipped limit is returned."""
    if alpha_bar <= 0.0:
        return torch.clamp(torch.nan_to_num((x_t - eps) * 1e12), -1.0, 1.0)
    x0 = predict_x0_from_eps(x_t, eps, alpha_bar)
    return x0.clamp(-1.0, 1.0) if clip else x0


def ddpm_step(x_t, eps, c: StepCoefficients, *, clip_x0: bool = False, z: torch.Tensor | None = None):
    """One ancestral DDPM step on a (possibly respaced) chain. Returns (x_prev, x0_hat, coefficients).

    c: the step's row of ``chain.coefficients("ddpm", variance)``. Without clipping: x_prev = 1/sqrt(alpha_t)
    (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) + sigma_t z (Ho et al. 2020, Algorithm 2 / eq. 11). With
    clipping, the posterior mean mu_tilde(x_t, x0_hat) (eq. 7) is used so the clipped x0_hat matters. z = None
    adds no noise (the last step).
    """
    x0_hat = _x0_hat(x_t, eps, c.alpha_bar, clip_x0)
    if clip_x0 or c.alpha_bar <= 0.0:
        mean = c.posterior_mean_coef1 * x0_hat + c.posterior_mean_coef2 * x_t
    else:
        mean = c.inv_sqrt_alpha * (x_t - c.eps_coef * eps)
    x_prev, c = _add_noise(mean, c, z)
    return x_prev, x0_hat, c


def ddim_step(x_t, eps, c: StepCoefficients, *, clip_x0: bool = False, z: torch.Tensor | None = None):
    """One DDIM step (Song et al. 2021, eq. 12). Returns (x_prev, x0_hat, coefficients).

    c: the step's row of ``chain.coefficients("ddim", eta=eta)``. x_prev = sqrt(abar_prev) x0_hat
    + sqrt(1 - abar_prev - sigma^2) eps + sigma z. With clipping, eps is re-derived from the clipped x0_hat
    (``forward.predict_eps_from_x0``, as improved-diffusion does) so the step stays consistent.
    """
    x0_hat = _x0_hat(x_t, eps, c.alpha_bar, clip_x0)
    if clip_x0 and c.alpha_bar < 1.0:
        eps = predict_eps_from_x0(x_t, x0_hat, c.alpha_bar)
    x_prev, c = _add_noise(c.x0_coef * x0_hat + c.eps_coef * eps, c, z)
    return x_prev, x0_hat, c


def _add_noise(mean, c: StepCoefficients, z) -> tuple:
    """(mean + sigma z, c), with sigma = 0 in c where no noise is added."""
    if z is None or c.sigma == 0.0:
        return mean, replace(c, sigma=0.0)
    return mean + c.sigma * z, c


def check_sampler_args(method: str = "ddpm", variance: str = "beta_tilde", eta: float = 0.0,
                       guidance: float = 1.0) -> None:
    """ValueError with a clear message for an unknown sampler or variance, eta outside [0, 1], or w < 0."""
    check_step_args(method, variance, eta)
    if guidance < 0:
        raise ValueError(f"guidance scale must be >= 0, got {guidance}")


def draws_noise(method: str, eta: float, index: int, num_steps: int) -> bool:
    """Whether ``sample`` draws z at step ``index`` (noise order: x_T, then z of each such step)."""
    last = index == num_steps - 1
    return not last and (method == "ddpm" or eta > 0)


def batch_labels(labels, batch: int, device) -> torch.Tensor | None:
    """``labels`` as a long tensor [batch] on ``device`` (one label is repeated); None stays None."""
    if labels is None:
        return None
    labels = torch.as_tensor(labels, dtype=torch.long, device=device).reshape(-1)
    if labels.shape[0] == 1 and batch > 1:
        labels = labels.expand(batch)
    if labels.shape[0] != batch:
        raise ValueError(f"{labels.shape[0]} labels for a batch of {batch}")
    return labels


def draw_normal(shape, generator: torch.Generator | None, device, dtype) -> torch.Tensor:
    gdev = generator.device if generator is not None else "cpu"
    z = torch.randn(shape, generator=generator, device=gdev, dtype=torch.float32)
    if z.device.type == "cpu" and torch.device(device).type == "cuda":
        # a blocking host-to-GPU copy waits for all queued GPU work: pinned + non_blocking avoids a sync per step
        return z.pin_memory().to(device=device, dtype=dtype, non_blocking=True)
    return z.to(device=device, dtype=dtype)


def sample(eps_fn: Denoiser, chain: SamplingChain, shape, *, method: str = "ddpm", labels=None, guidance: float = 1.0,
           null_label: int | None = None, variance: str = "beta_tilde", eta: float = 0.0, clip_x0: bool = False,
           generator: torch.Generator | None = None, seed: int | None = None, x_T: torch.Tensor | None = None,
           device=None, dtype=torch.float32) -> Iterator[StepRecord]:
    """Run the reverse process from x_T ~ N(0, I) along ``chain``, yielding a StepRecord per step.

    eps_fn is called once per step (twice the batch under guidance) at the chain's noise level alpha_bar[i].

    method: "ddpm" (ancestral; ``variance`` "beta_tilde", the posterior variance or "fixed small" and
    diffusers' default, or "beta", the DDPM paper's "fixed large") or "ddim" (``eta`` in [0, 1]). Each
    step's coefficients come from ``chain.coefficients(method, variance, eta)``.
    labels: [B] class ids, or None for unconditional; guidance: classifier-free guidance scale w.
    seed / generator: reproducible noise; x_T: start from given noise instead of drawing it.
    The final image x_0 is the last record's ``x_prev``.
    """
    check_sampler_args(method, variance, eta, guidance)
    if generator is None and seed is not None:
        generator = torch.Generator().manual_seed(int(seed))
    shape = tuple(shape)
    device = torch.device(device) if device is not None else (x_T.device if x_T is not None else torch.device("cpu"))
    x = draw_normal(shape, generator, device, dtype) if x_T is None else x_T.to(device=device, dtype=dtype)
    labels = batch_labels(labels, shape[0], device)
    n = len(chain)
    table = chain.coefficients(method, variance, eta)
    step = ddpm_step if method == "ddpm" else ddim_step
    for i in range(n):
        with torch.inference_mode():
            eps = guided_eps(eps_fn, x, float(chain.alpha_bar[i]), labels, guidance, null_label).to(dtype)
            z = draw_normal(shape, generator, device, dtype) if draws_noise(method, eta, i, n) else None
            x_prev, x0_hat, coefs = step(x, eps, table.row(i), clip_x0=clip_x0, z=z)
        yield StepRecord(i, int(chain.timesteps[i]), int(chain.timesteps_prev[i]), int(chain.model_t[i]),
                         x, eps, x0_hat, x_prev, coefs, z)
        x = x_prev


def run(eps_fn: Denoiser, chain: SamplingChain, shape, **kwargs) -> torch.Tensor:
    """Run ``sample`` to the end and return x_0 only."""
    rec = None
    for rec in sample(eps_fn, chain, shape, **kwargs):
        pass
    return rec.x_prev
