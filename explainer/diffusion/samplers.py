"""Reverse-process samplers as generators: one ``StepRecord`` per step, so a UI can stream any step.

A sampler needs three independent pieces: a ``Denoiser``, a ``SamplingChain`` (which steps, which alpha_bars; see
respacing.py), and a noise source (a seeded ``torch.Generator``). Nothing here knows about the U-Net.

A denoiser is told the noise level it works at, as k-diffusion's ``model(x, sigma)`` is:
``eps_fn(x_t, alpha_bar, labels) -> eps_hat``, with alpha_bar the level of x_t (one float for the batch, or a
tensor of one per row) and labels [B] class ids or None. The samplers pass the chain's own alpha_bar, the
inference schedule's; a sampler that evaluates twice per step passes each evaluation its own level. A network
trained on discrete steps maps a level to its (fractional) training step itself (``respacing.network_timesteps``: the
U-Net's ``DiffusionModel``, the 2D ``LabModel``, the fast paths of accel/fast.py), and the exact denoiser
(exact.py) is exact at any level: a denoiser never needs to know which call of a walk it is answering.

Noise is drawn in diffusers' order (x_T first, then z for every step that adds noise), on the
generator's device (CPU by default) and then moved, so a seed gives the same picture on CPU and GPU.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Iterator, Protocol

import torch

from .forward import predict_eps_from_x0, predict_x0_from_eps
from .respacing import SamplingChain, StepCoefficients, check_step_args

SAMPLERS = ("ddpm", "ddim", "euler", "euler-a", "heun", "dpmpp-2m")  # the names of the CLI, the app and the API
SAMPLER_TITLES = {"ddpm": "DDPM", "ddim": "DDIM", "euler": "Euler", "euler-a": "Euler a", "heun": "Heun",
                  "dpmpp-2m": "DPM++ 2M"}  # as libraries and UIs name them
# each sampler's step spacing as its authors recommend it: the DDPM and DDIM papers' even steps, Karras et al. 2022's
# sigma spacing for the ODE samplers (their Table 1; Lu et al. 2022 use it for DPM-Solver++ in diffusers' "Karras")
DEFAULT_SPACING = {"ddpm": "linspace", "ddim": "linspace", "euler": "karras", "euler-a": "karras", "heun": "karras",
                   "dpmpp-2m": "karras"}
MIN_SAMPLER_STEPS = {"heun": 2, "dpmpp-2m": 2}  # Heun's last step is Euler's; a second-order multistep needs 2 steps
# the samplers whose every step is x_prev = coef1 x0_hat + coef2 x_t + sigma z on the chain's table (method, eta):
# Euler is DDIM with eta = 0 and Euler ancestral DDIM with eta = 1 (tests/test_samplers_karras.py proves both)
AFFINE_FORM = {"euler": ("ddim", 0.0), "euler-a": ("ddim", 1.0)}


class Denoiser(Protocol):
    """eps_hat(x_t) at noise level ``alpha_bar`` (a float, or a tensor of one level per row); labels [B] or None."""

    def __call__(self, x_t: torch.Tensor, alpha_bar, labels: torch.Tensor | None = None) -> torch.Tensor: ...


@dataclass
class StepRecord:
    """What happened at one reverse step from t to t_prev."""

    index: int  # 0-based position in the chain
    t: int  # paper step of x_t (inference schedule)
    t_prev: int  # paper step of x_prev (0 = clean image)
    model_t: int  # training step the network is evaluated at (respacing.training_timesteps), for display
    x_t: torch.Tensor
    eps: torch.Tensor  # eps_hat (after guidance)
    x0_hat: torch.Tensor  # forward.predict_x0_from_eps (Ho et al. 2020, eq. 15), clipped if asked
    x_prev: torch.Tensor
    coefs: StepCoefficients  # this step's row of the chain's table (floats); see ``step_table``
    z: torch.Tensor | None = None  # the fresh noise of this step (x_prev = deterministic part + coefs.sigma z)
    nfe: int = 1  # network calls this step made (Heun: 2, except its last step); guidance doubles the batch only
    parts: dict = field(default_factory=dict)  # the sampler's own intermediate tensors and numbers (``karras_walk``,
    # ``dpmpp_2m_walk``), for the step anatomy


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
                       guidance: float = 1.0, chain: SamplingChain | None = None) -> None:
    """ValueError with a clear message for an unknown sampler or variance, eta outside [0, 1], w < 0, or a chain
    the sampler cannot take (too few steps for Heun or DPM-Solver++, zero terminal SNR for the sigma samplers)."""
    if method not in SAMPLERS:
        raise ValueError(f"unknown sampler {method!r}; choose from {', '.join(SAMPLERS)}")
    check_step_args("ddpm" if method not in ("ddpm", "ddim") else method, variance, eta)
    if guidance < 0:
        raise ValueError(f"guidance scale must be >= 0, got {guidance}")
    if chain is None or method in ("ddpm", "ddim"):
        return
    least = MIN_SAMPLER_STEPS.get(method, 1)
    if len(chain) < least:
        why = "its last step is an Euler step" if method == "heun" else "it combines this step's x0_hat with the last one's"
        raise ValueError(f"{SAMPLER_TITLES[method]} needs at least {least} steps ({why}); got {len(chain)}")
    if not (chain.alpha_bar > 0).all():
        raise ValueError(f"{SAMPLER_TITLES[method]} works in sigma = sqrt((1 - alpha_bar) / alpha_bar), which is "
                         "infinite at zero terminal SNR: use DDPM or DDIM with this schedule")


def network_calls(method: str, steps: int) -> int:
    """How many times ``sample`` calls the network for ``steps`` steps (NFE): Heun twice a step but at the last."""
    return 2 * steps - 1 if method == "heun" else steps


def draws_noise(method: str, eta: float, index: int, num_steps: int) -> bool:
    """Whether ``sample`` draws z at step ``index`` (noise order: x_T, then z of each such step)."""
    last = index == num_steps - 1
    return not last and (method in ("ddpm", "euler-a") or (method == "ddim" and eta > 0))


def affine_table(chain: SamplingChain, method: str, variance: str = "beta_tilde", eta: float = 0.0) -> StepCoefficients:
    """The chain's table that runs ``method`` as x_prev = coef1 x0_hat + coef2 x_t + sigma z (``StepCoefficients``
    .affine()): DDPM, DDIM, and Euler and Euler ancestral as DDIM with eta 0 and 1. A ValueError for Heun and
    DPM-Solver++, whose steps need a second call or the last step's x0_hat."""
    if method in ("ddpm", "ddim"):
        return chain.coefficients(method, variance, eta)
    if method not in AFFINE_FORM:
        raise ValueError(f"{SAMPLER_TITLES.get(method, method)} is not one affine step per network call")
    table_method, table_eta = AFFINE_FORM[method]
    return chain.coefficients(table_method, eta=table_eta)


def step_table(chain: SamplingChain, method: str, variance: str = "beta_tilde", eta: float = 0.0) -> StepCoefficients:
    """The chain's coefficient table a sampler's records carry: its own for DDPM and DDIM, the DDIM table that is
    the same update in affine form for Euler (eta 0) and Euler ancestral (eta 1) (``AFFINE_FORM``), and for Heun and
    DPM-Solver++, which are not affine in one network call, the DDIM eta = 0 table for its levels (sigma = 0)."""
    if method in ("ddpm", "ddim"):
        return chain.coefficients(method, variance, eta)
    table_method, table_eta = AFFINE_FORM.get(method, ("ddim", 0.0))
    return chain.coefficients(table_method, eta=table_eta)


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


@dataclass
class _Walk:
    """What every sampler's loop shares: the denoiser with its guidance, the noise stream and the records."""

    eps_fn: Denoiser
    chain: SamplingChain
    shape: tuple
    labels: torch.Tensor | None
    guidance: float
    null_label: int | None
    clip_x0: bool
    generator: torch.Generator | None
    device: torch.device
    dtype: torch.dtype

    def eps(self, x, alpha_bar: float) -> torch.Tensor:
        return guided_eps(self.eps_fn, x, alpha_bar, self.labels, self.guidance, self.null_label).to(self.dtype)

    def x0_hat(self, x, alpha_bar: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(eps_hat, x0_hat) of one network call at ``alpha_bar``."""
        eps = self.eps(x, alpha_bar)
        return eps, _x0_hat(x, eps, alpha_bar, self.clip_x0)

    def noise(self, method: str, eta: float, i: int) -> torch.Tensor | None:
        if not draws_noise(method, eta, i, len(self.chain)):
            return None
        return draw_normal(self.shape, self.generator, self.device, self.dtype)

    def record(self, i: int, x, eps, x0_hat, x_prev, coefs, z=None, nfe: int = 1, parts=None) -> StepRecord:
        c = self.chain
        return StepRecord(i, paper_t(c.timesteps[i]), paper_t(c.timesteps_prev[i]), paper_t(c.model_t[i]), x, eps,
                          x0_hat, x_prev, coefs, z, nfe, parts or {})


def paper_t(t) -> int | float:
    """A chain's step as an int, or as a float where it falls between two steps (Karras levels)."""
    return int(t) if float(t).is_integer() else float(t)


def sample(eps_fn: Denoiser, chain: SamplingChain, shape, *, method: str = "ddpm", labels=None, guidance: float = 1.0,
           null_label: int | None = None, variance: str = "beta_tilde", eta: float = 0.0, clip_x0: bool = False,
           generator: torch.Generator | None = None, seed: int | None = None, x_T: torch.Tensor | None = None,
           device=None, dtype=torch.float32) -> Iterator[StepRecord]:
    """Run the reverse process from x_T ~ N(0, I) along ``chain``, yielding a StepRecord per step.

    method: one of ``SAMPLERS``. "ddpm" (ancestral; ``variance`` "beta_tilde", the posterior variance or "fixed
    small" and diffusers' default, or "beta", the DDPM paper's "fixed large") and "ddim" (``eta`` in [0, 1]) take
    each step's coefficients from ``chain.coefficients(method, variance, eta)``; "euler", "euler-a" and "heun" are
    Karras et al. 2022's (``karras_walk``), "dpmpp-2m" Lu et al. 2022's (``dpmpp_2m_walk``). eps_fn is called at
    the chain's noise levels: once per step (twice the batch under guidance), Heun twice (``network_calls``).
    labels: [B] class ids, or None for unconditional; guidance: classifier-free guidance scale w.
    clip_x0: clip x0_hat to [-1, 1] at every call; every update then uses the clipped x0_hat.
    seed / generator: reproducible noise; x_T: start from given noise instead of drawing it.
    The final image x_0 is the last record's ``x_prev``.
    """
    check_sampler_args(method, variance, eta, guidance, chain)
    if generator is None and seed is not None:
        generator = torch.Generator().manual_seed(int(seed))
    shape = tuple(shape)
    device = torch.device(device) if device is not None else (x_T.device if x_T is not None else torch.device("cpu"))
    x = draw_normal(shape, generator, device, dtype) if x_T is None else x_T.to(device=device, dtype=dtype)
    walk = _Walk(eps_fn, chain, shape, batch_labels(labels, shape[0], device), guidance, null_label, clip_x0,
                 generator, device, dtype)
    if method == "dpmpp-2m":
        return dpmpp_2m_walk(walk, x)
    if method in ("euler", "euler-a", "heun"):
        return karras_walk(walk, x, method)
    return _affine_walk(walk, x, method, variance, eta)


def _affine_walk(walk: _Walk, x, method: str, variance: str, eta: float) -> Iterator[StepRecord]:
    """DDPM or DDIM: one network call and one row of the chain's table per step."""
    table = walk.chain.coefficients(method, variance, eta)
    step = ddpm_step if method == "ddpm" else ddim_step
    for i in range(len(walk.chain)):
        with torch.inference_mode():
            eps = walk.eps(x, float(walk.chain.alpha_bar[i]))
            z = walk.noise(method, eta, i)
            x_prev, x0_hat, coefs = step(x, eps, table.row(i), clip_x0=walk.clip_x0, z=z)
        yield walk.record(i, x, eps, x0_hat, x_prev, coefs, z)
        x = x_prev


def noise_sigma(alpha_bar: float) -> float:
    """sigma = sqrt((1 - abar) / abar), the noise level of x / sqrt(abar) = x_0 + sigma eps (Karras et al. 2022,
    Table 1, VP); 0 at abar = 1."""
    return math.sqrt((1.0 - alpha_bar) / alpha_bar)


def ancestral_sigmas(sigma: float, sigma_next: float) -> tuple[float, float]:
    """(sigma_down, sigma_up) of an ancestral step from sigma to sigma_next: go deterministically down to
    sigma_down, then add sigma_up fresh noise, sigma_down^2 + sigma_up^2 = sigma_next^2 (k-diffusion's
    ``get_ancestral_step`` with eta = 1; the DDPM posterior's variance, Ho et al. 2020 eq. 7)."""
    up = min(sigma_next, math.sqrt(sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2))
    return math.sqrt(sigma_next ** 2 - up ** 2), up


def euler_step(x: torch.Tensor, x0_hat: torch.Tensor, sigma: float, sigma_to: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One Euler step of the probability-flow ODE dx/dsigma = (x - D(x; sigma)) / sigma (Karras et al. 2022, eq. 4
    with sigma(t) = t; Algorithm 1, lines 5-7), in the scaled variable x = x_t / sqrt(abar). Returns (x_next, d)."""
    d = (x - x0_hat) / sigma
    return x + (sigma_to - sigma) * d, d


def karras_walk(walk: _Walk, x_t, method: str) -> Iterator[StepRecord]:
    """Euler, Euler ancestral and Heun (Karras et al. 2022, Algorithm 1, S_churn = 0) along the chain's levels.

    Each step works in x = x_t / sqrt(abar) = x_0 + sigma eps and hands the next x_t = x sqrt(abar_next) on, so the
    records, the pictures and the denoiser stay in the chain's own (variance-preserving) terms. Heun corrects each
    Euler step with the slope at its end, d' = (x_pred - D(x_pred; sigma_next)) / sigma_next, and takes the average
    (lines 8-11), except into sigma = 0, where d' is undefined and the Euler step stands (line 8's condition).
    """
    chain, n = walk.chain, len(walk.chain)
    table = step_table(chain, method)
    for i in range(n):
        ab, ab_next = float(chain.alpha_bar[i]), float(chain.alpha_bar_prev[i])
        sigma, sigma_next = noise_sigma(ab), noise_sigma(ab_next)
        with torch.inference_mode():
            eps, x0_hat = walk.x0_hat(x_t, ab)
            x = x_t / math.sqrt(ab)
            parts = {"sigma": sigma, "sigma_next": sigma_next}
            sigma_to, z, nfe = sigma_next, walk.noise(method, 0.0, i), 1
            if method == "euler-a":
                sigma_to, sigma_up = ancestral_sigmas(sigma, sigma_next)
                parts.update(sigma_down=sigma_to, sigma_up=sigma_up)
            x_next, d = euler_step(x, x0_hat, sigma, sigma_to)
            parts["slope"] = d
            if method == "heun" and sigma_next > 0:
                x_pred_t = x_next * math.sqrt(ab_next)
                eps_2, x0_hat_2 = walk.x0_hat(x_pred_t, ab_next)
                d_2 = (x_next - x0_hat_2) / sigma_next
                parts.update(predictor=x_pred_t, x0_hat_2=x0_hat_2, slope_2=d_2, slope_avg=(d + d_2) / 2)
                x_next, nfe = x + (sigma_next - sigma) * parts["slope_avg"], 2
            if z is not None and method == "euler-a":
                x_next = x_next + parts["sigma_up"] * z
            x_prev = x_next * math.sqrt(ab_next)
        yield walk.record(i, x_t, eps, x0_hat, x_prev, table.row(i), z, nfe, parts)
        x_t = x_prev


def dpmpp_2m_weights(alpha_bar: float, alpha_bar_next: float, alpha_bar_last: float | None,
                     second_order: bool) -> tuple[float, float, float]:
    """(c_x, w0, w1): x_next = c_x x + w0 D_i + w1 D_(i-1), DPM-Solver++(2M)'s update (Lu et al. 2022, Algorithm 2).

    With alpha = sqrt(abar), sigma = sqrt(1 - abar), lambda = log(alpha / sigma) and h = lambda_next - lambda:
    first order, x_next = (sigma_next / sigma) x - alpha_next (e^-h - 1) D_i (their eq. 9); second order, D_i is
    replaced by (1 + 1/(2r)) D_i - 1/(2r) D_(i-1) with r = h_last / h. e^-h = (sigma_next alpha) / (alpha_next
    sigma) is formed directly, so sigma_next = 0 (the last step: x_next = D_i) needs no infinity.
    """
    alpha, sig = math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
    alpha_n, sig_n = math.sqrt(alpha_bar_next), math.sqrt(1.0 - alpha_bar_next)
    exp_neg_h = (sig_n * alpha) / (alpha_n * sig)
    c_x, c_d = sig_n / sig, alpha_n * (1.0 - exp_neg_h)
    if not second_order:
        return c_x, c_d, 0.0
    lam = lambda ab: 0.5 * (math.log(ab) - math.log1p(-ab))
    r = (lam(alpha_bar) - lam(alpha_bar_last)) / (lam(alpha_bar_next) - lam(alpha_bar))
    return c_x, c_d * (1.0 + 0.5 / r), -c_d * 0.5 / r


def dpmpp_2m_walk(walk: _Walk, x) -> Iterator[StepRecord]:
    """DPM-Solver++(2M) in data prediction (x0_hat), one network call a step (Lu et al. 2022, Algorithm 2).

    The first step is first order (there is no earlier x0_hat), and so is the last, into sigma = 0, where the
    update is x0_hat itself (as the authors' code and diffusers' ``lower_order_final`` do).
    """
    chain, n = walk.chain, len(walk.chain)
    table = step_table(chain, "dpmpp-2m")
    last = None  # (alpha_bar, x0_hat) of the previous step
    for i in range(n):
        ab, ab_next = float(chain.alpha_bar[i]), float(chain.alpha_bar_prev[i])
        second = last is not None and i < n - 1
        with torch.inference_mode():
            eps, x0_hat = walk.x0_hat(x, ab)
            c_x, w0, w1 = dpmpp_2m_weights(ab, ab_next, last[0] if second else None, second)
            x_prev = c_x * x + w0 * x0_hat + (w1 * last[1] if second else 0.0)
            parts = {"c_x": c_x, "w0": w0, "w1": w1, "x0_hat_last": last[1] if second else None,
                     "second_order": second}
        yield walk.record(i, x, eps, x0_hat, x_prev, table.row(i), None, 1, parts)
        last, x = (ab, x0_hat), x_prev


def run(eps_fn: Denoiser, chain: SamplingChain, shape, **kwargs) -> torch.Tensor:
    """Run ``sample`` to the end and return x_0 only."""
    rec = None
    for rec in sample(eps_fn, chain, shape, **kwargs):
        pass
    return rec.x_prev
