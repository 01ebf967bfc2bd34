"""Which timesteps a sampler visits: respacing (fewer steps) and sampling with another schedule.

A ``SamplingChain`` lists the inference steps from noisiest to cleanest. For each it holds the
inference schedule's alpha_bar at that step and at the next kept step (alpha_bar_prev, 1 after the
last), and ``model_t``: the *training* timestep the network is called with.

Respacing (Nichol & Dhariwal 2021, sec. 4; improved-diffusion ``respace.py``): keep a subset
S = {s_1 < ... < s_n} of the steps. The respaced process has alpha_bar'_i = alpha_bar_{s_i} and
beta'_i = 1 - alpha_bar_{s_i} / alpha_bar_{s_{i-1}}; the network is still called with the original
t = s_i. (Keeping the original beta_t while skipping steps is a classic bug: it adds far too little
noise per step.)

Spacings (as diffusers names them), for T steps and n kept ones, in paper steps 1..T:
- ``linspace``: round(linspace(0, T-1, n)) + 1, includes both t = 1 and t = T (improved-diffusion's even
  spacing); for n = 1 the single step is t = T (diffusers would use t = 1).
- ``leading``: 1, 1 + T//n, 1 + 2 T//n, ...; never visits t = T when n < T.
- ``trailing``: round(arange(T, 0, -T/n)); starts at t = T.
- ``karras``: not steps but noise levels, sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) -
  sigma_max^(1/rho)))^rho with rho = 7 between the schedule's sigma at t = T and at t = 1 (Karras et al. 2022,
  eq. 5): dense where the picture forms. Its steps are fractional (``training_timesteps`` of the inference
  schedule), as diffusers' ``use_karras_sigmas``.

Noise levels and network steps: a sampler hands every denoiser the noise level alpha_bar itself (samplers.py,
``Denoiser``). A network knows only the noise levels of its training schedule, so it is evaluated at the
(fractional) training step whose sigma matches, interpolated in log sigma between the two training steps around
it (``training_timesteps``, the one map, which every network denoiser calls through ``network_timesteps``; the
rule is stated in the UI). On the training schedule's own steps that is the step itself; another inference
schedule, or a Karras level, falls between two steps. ``SamplingChain.model_t`` lists the same steps, for display.

Each step's coefficients (beta', beta_tilde', sigma, and the coefficients of the posterior mean, the DDPM and
DDIM updates and eq. 15) are formed once per chain and sampler by ``SamplingChain.coefficients``, in float64:
the step functions in samplers.py, the step-anatomy view and the graphed walk read these rows. The relations
between x_0, x_t and eps at one noise level are forward.py's.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field, fields, replace

import numpy as np
import torch

from .schedules import Schedule

STEP_SPACINGS = ("linspace", "leading", "trailing")  # kept training steps, as diffusers names them
SPACINGS = STEP_SPACINGS + ("karras",)  # and Karras et al. 2022's noise levels
METHODS = ("ddpm", "ddim")
VARIANCES = ("beta", "beta_tilde")  # sigma_t^2 of DDPM: "fixed large" and "fixed small" (Ho et al. 2020, sec. 3.2)
AFFINE_COLUMNS = ("sqrt_recip_alpha_bar", "sqrt_recipm1_alpha_bar", "posterior_mean_coef1", "posterior_mean_coef2",
                  "sigma")


def spaced_timesteps(T: int, n: int, spacing: str = "linspace") -> np.ndarray:
    """Kept paper steps (ascending, unique) when sampling a T-step schedule in n steps."""
    if not 1 <= n <= T:
        raise ValueError(f"number of inference steps must be in 1..{T}, got {n}")
    if spacing == "linspace":
        # round on the 0-based grid, then shift: np.round rounds halves to even, so round(x + 1) can differ
        # from round(x) + 1; this keeps the kept steps identical to diffusers' (0-based index + 1).
        t = np.round(np.linspace(0, T - 1, n)).astype(np.int64) + 1 if n > 1 else np.array([T])
    elif spacing == "leading":
        t = np.arange(n, dtype=np.int64) * (T // n) + 1
    elif spacing == "trailing":
        t = np.round(np.arange(T, 0, -T / n)).astype(np.int64)[::-1]
    else:
        raise ValueError(f"unknown spacing {spacing!r}; choose from {', '.join(SPACINGS)}")
    return np.unique(t)


@functools.lru_cache(maxsize=32)
def _log_sigmas(alpha_bars: bytes, device: torch.device) -> torch.Tensor:
    """A schedule's log sigma, log sqrt((1 - abar) / abar), ascending (t = 1 first), float64 on ``device``."""
    ab = torch.from_numpy(np.frombuffer(alpha_bars, dtype=np.float64).copy())
    return (0.5 * (torch.log1p(-ab) - torch.log(ab))).to(device)


def training_timesteps(alpha_bar, training: Schedule) -> torch.Tensor:
    """The (fractional) training step t in [1, T] at which a network trained on ``training`` meets each noise level
    ``alpha_bar`` (elementwise, float64): interpolated linearly in log sigma between the two training steps whose
    sigma = sqrt((1 - abar) / abar) brackets it, as diffusers' ``_sigma_to_t`` does (Karras et al. 2022, app. C.3.1
    treat a discrete-time network the same way); levels beyond the ends go to t = 1 or T.

    alpha_bar: floats in [0, 1], of any schedule; a tensor keeps its device (a GPU walk needs no host sync, and a
    captured CUDA graph can hold this). On the training schedule's own levels it is the step itself (snapped to the
    integer within 1e-9, so float64 round trips through sigma do not move it). The one map from a noise level to a
    network's timestep: the chains' ``model_t`` and every network denoiser (``network_timesteps``) use it.
    """
    return _interpolated(alpha_bar, training.alpha_bars.tobytes())


def _interpolated(alpha_bar, alpha_bars: bytes) -> torch.Tensor:
    """``training_timesteps`` against a schedule's float64 alpha_bar bytes."""
    ab = alpha_bar if torch.is_tensor(alpha_bar) else torch.as_tensor(np.asarray(alpha_bar, dtype=np.float64))
    if not ab.is_floating_point():
        raise TypeError(f"a noise level is alpha_bar, a float in [0, 1], not a step: got a {ab.dtype} tensor")
    ab = ab.to(torch.float64)
    if ab.device.type == "cpu" and not bool(((ab >= 0.0) & (ab <= 1.0)).all()):
        raise ValueError(f"alpha_bar must lie in [0, 1], got {ab.min().item() if (ab < 0).any() else ab.max().item()}")
    table = _log_sigmas(alpha_bars, ab.device)
    if len(table) == 1:
        return torch.ones(ab.shape, dtype=torch.float64, device=ab.device)
    target = 0.5 * (torch.log1p(-ab) - torch.log(ab))  # -inf at abar = 1, +inf at abar = 0
    low = (torch.searchsorted(table, target, right=True) - 1).clamp_(0, len(table) - 2)
    w = ((target - table[low]) / (table[low + 1] - table[low])).nan_to_num(0.0).clamp_(0.0, 1.0)
    t = low.to(torch.float64) + w + 1.0  # 0-based position + 1: paper steps
    t = torch.where(target >= table[-1], float(len(table)), t)  # beyond the noisiest step (+inf at zero SNR too)
    nearest = torch.round(t)
    return torch.where((t - nearest).abs() < 1e-9, nearest, t)


@functools.lru_cache(maxsize=4096)
def _step_of(alpha_bar: float, alpha_bars: bytes) -> float:
    """``_interpolated`` of one level, remembered: a walk asks for the same few levels again and again."""
    return float(_interpolated(alpha_bar, alpha_bars))


def network_timesteps(alpha_bar, training: Schedule, x_t: torch.Tensor) -> torch.Tensor:
    """The [B] float32 timesteps, on x_t's device, at which a network trained on ``training`` evaluates x_t [B, ...]
    at noise level ``alpha_bar`` (one float, or a tensor of one or B levels): ``training_timesteps``.

    One float is mapped on the host and filled in on the device (no transfer); a tensor is mapped where it lives.
    Float32 holds every step 1..T exactly and a fraction to ~1e-4 of a step; the networks embed t sinusoidally.
    """
    batch = x_t.shape[0]
    if not torch.is_tensor(alpha_bar):
        t = _step_of(float(alpha_bar), training.alpha_bars.tobytes())
        return torch.full((batch,), t, dtype=torch.float32, device=x_t.device)
    t = training_timesteps(alpha_bar, training).reshape(-1).to(x_t.device, torch.float32)
    return t.expand(batch) if t.numel() == 1 else t


def check_step_args(method: str = "ddpm", variance: str = "beta_tilde", eta: float = 0.0) -> None:
    """ValueError with a clear message for an unknown sampler or variance, or eta outside [0, 1]."""
    if method not in METHODS:
        raise ValueError(f"unknown sampler {method!r}; choose from {', '.join(METHODS)}")
    if variance not in VARIANCES:
        raise ValueError(f"unknown variance {variance!r}; choose from {', '.join(VARIANCES)}")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")


@dataclass(frozen=True)
class StepCoefficients:
    """Every coefficient of one sampler's steps, float64, one entry per step (noisiest first); a row is floats.

    With alpha'_i = abar_i / abar_prev_i and beta'_i = 1 - alpha'_i on the (possibly respaced) chain:

        beta_tilde = beta' (1 - abar_prev) / (1 - abar)                   posterior variance (Ho et al. 2020, eq. 7)
        x0_hat     = sqrt_recip_alpha_bar x_t - sqrt_recipm1_alpha_bar eps                                  (eq. 15)
        x_prev     = posterior_mean_coef1 x0_hat + posterior_mean_coef2 x_t + sigma z    every step, in affine form

    with sqrt_recip_alpha_bar = 1/sqrt(abar) and sqrt_recipm1_alpha_bar = sqrt(1/abar - 1), the names (and the
    coefficient of x0_hat first, of x_t second) of improved-diffusion's ``GaussianDiffusion``.
    DDPM: sigma^2 = beta' or beta_tilde; the posterior mean mu_tilde (eq. 7) has coef1 = beta' sqrt(abar_prev)
    / (1 - abar) and coef2 = (1 - abar_prev) sqrt(alpha') / (1 - abar); its eps form is Algorithm 2's
    x_prev = inv_sqrt_alpha (x_t - eps_coef eps) + sigma z with eps_coef = beta' / sqrt(1 - abar).
    DDIM (Song et al. 2021): sigma = eta sqrt(beta_tilde) (eq. 16); x_prev = x0_coef x0_hat + eps_coef eps
    + sigma z with x0_coef = sqrt(abar_prev), eps_coef = sqrt(1 - abar_prev - sigma^2) (eq. 12), so the mean of
    q_sigma(x_prev | x_t, x0_hat) (eq. 7 there) has coef1 = x0_coef - eps_coef sqrt(abar) / sqrt(1 - abar) and
    coef2 = eps_coef / sqrt(1 - abar). ``sigma`` is the noise actually added: 0 at the last step.
    sqrt_recip_alpha_bar and sqrt_recipm1_alpha_bar are inf where abar = 0.
    """

    method: str
    variance: str
    eta: float
    alpha_bar: np.ndarray
    alpha_bar_prev: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    beta_tilde: np.ndarray
    sigma: np.ndarray
    sqrt_recip_alpha_bar: np.ndarray  # multiplies x_t in x0_hat (eq. 15)
    sqrt_recipm1_alpha_bar: np.ndarray  # multiplies -eps in x0_hat (eq. 15)
    posterior_mean_coef1: np.ndarray  # multiplies x0_hat in the mean of x_prev
    posterior_mean_coef2: np.ndarray  # multiplies x_t in the mean of x_prev
    inv_sqrt_alpha: np.ndarray  # DDPM's eps form
    x0_coef: np.ndarray  # DDIM's eps form
    eps_coef: np.ndarray  # DDPM: beta'/sqrt(1 - abar); DDIM: sqrt(1 - abar_prev - sigma^2)

    def row(self, i: int) -> "StepCoefficients":
        """Step ``i`` with every coefficient as a Python float."""
        return replace(self, **{f.name: float(getattr(self, f.name)[i]) for f in fields(self)
                                if isinstance(getattr(self, f.name), np.ndarray)})

    def affine(self) -> np.ndarray:
        """[len, 5] with columns ``AFFINE_COLUMNS``: the whole walk as tensor arithmetic (accel/walk_graph.py)."""
        if not (np.asarray(self.alpha_bar) > 0).all():
            raise ValueError("the affine form needs alpha_bar > 0 at every step (zero terminal SNR has no x0_hat from eps)")
        return np.stack([np.atleast_1d(getattr(self, c)) for c in AFFINE_COLUMNS], axis=1)


def step_coefficients(alpha_bar, alpha_bar_prev, method: str = "ddpm", variance: str = "beta_tilde",
                      eta: float = 0.0) -> StepCoefficients:
    """The ``StepCoefficients`` of a chain's steps from alpha_bar to alpha_bar_prev (arrays, noisiest first); the
    last step adds no noise (Ho et al. 2020, Algorithm 2)."""
    check_step_args(method, variance, eta)
    ab = np.atleast_1d(np.asarray(alpha_bar, dtype=np.float64))
    ab_prev = np.atleast_1d(np.asarray(alpha_bar_prev, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = ab / ab_prev
        beta = 1.0 - alpha
        beta_tilde = beta * (1.0 - ab_prev) / (1.0 - ab)
        sqrt_recip, sqrt_recipm1 = 1.0 / np.sqrt(ab), np.sqrt(1.0 - ab) / np.sqrt(ab)
        inv_sqrt_alpha = 1.0 / np.sqrt(alpha)
        if method == "ddpm":
            sigma = np.sqrt(beta if variance == "beta" else beta_tilde)
            x0_coef = np.sqrt(ab_prev)
            eps_coef = beta / np.sqrt(1.0 - ab)
            coef1 = beta * np.sqrt(ab_prev) / (1.0 - ab)
            coef2 = (1.0 - ab_prev) * np.sqrt(alpha) / (1.0 - ab)
        else:
            sigma = eta * np.sqrt(beta_tilde)
            x0_coef = np.sqrt(ab_prev)
            eps_coef = np.sqrt(np.maximum(1.0 - ab_prev - sigma ** 2, 0.0))
            coef1 = x0_coef - eps_coef * np.sqrt(ab) / np.sqrt(1.0 - ab)
            coef2 = eps_coef / np.sqrt(1.0 - ab)
    sigma = sigma.copy()
    sigma[-1] = 0.0
    return StepCoefficients(method, variance, float(eta), ab, ab_prev, alpha, beta, beta_tilde, sigma, sqrt_recip,
                            sqrt_recipm1, coef1, coef2, inv_sqrt_alpha, x0_coef, eps_coef)


@dataclass(frozen=True, eq=False)
class SamplingChain:
    """The steps a sampler takes, noisiest first. All arrays have one entry per inference step."""

    timesteps: np.ndarray  # paper t in the inference schedule (int; float for Karras levels between steps)
    model_t: np.ndarray  # training t given to the network (int; float where interpolated)
    alpha_bar: np.ndarray  # alpha_bar' at t
    alpha_bar_prev: np.ndarray  # alpha_bar' at the next kept step (1 after the last)
    description: str
    _tables: dict = field(default_factory=dict, init=False, repr=False)  # (method, variance, eta) -> StepCoefficients

    def __len__(self):
        return len(self.timesteps)

    @property
    def timesteps_prev(self) -> np.ndarray:
        return np.concatenate([self.timesteps[1:], [0]])

    def coefficients(self, method: str = "ddpm", variance: str = "beta_tilde", eta: float = 0.0) -> StepCoefficients:
        """Every step's coefficients for this sampler, computed once per chain and sampler."""
        key = (method, variance if method == "ddpm" else "beta_tilde", float(eta) if method == "ddim" else 0.0)
        if key not in self._tables:
            self._tables[key] = step_coefficients(self.alpha_bar, self.alpha_bar_prev, *key)
        return self._tables[key]


KARRAS_RHO = 7.0  # Karras et al. 2022, eq. 5: the spacing of their Table 1


def karras_sigmas(sigma_min: float, sigma_max: float, n: int, rho: float = KARRAS_RHO) -> np.ndarray:
    """n noise levels from sigma_max down to sigma_min, evenly spaced in sigma^(1/rho) (Karras et al. 2022, eq. 5)."""
    if not (0.0 < sigma_min < sigma_max < np.inf):
        raise ValueError("the Karras spacing needs 0 < sigma at t = 1 < sigma at t = T < infinity (a zero-terminal-SNR "
                         "schedule has sigma = infinity at t = T: use linspace, leading or trailing)")
    ramp = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
    hi, lo = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def _kept_levels(inference: Schedule, n: int, spacing: str) -> tuple[np.ndarray, np.ndarray]:
    """(paper steps of the inference schedule, their alpha_bar), noisiest last: ``spaced_timesteps`` or Karras."""
    if spacing != "karras":
        kept = spaced_timesteps(inference.T, n, spacing)
        return kept, inference.alpha_bars[kept - 1]
    if not 1 <= n <= inference.T:
        raise ValueError(f"number of inference steps must be in 1..{inference.T}, got {n}")
    sigmas = karras_sigmas(float(inference.sigma_at(1)), float(inference.sigma_at(inference.T)), n)[::-1]
    ab = 1.0 / (1.0 + sigmas ** 2)  # sigma^2 = (1 - abar) / abar
    return training_timesteps(torch.from_numpy(ab.copy()), inference).numpy(), ab


def make_chain(training: Schedule, num_steps: int | None = None, spacing: str = "linspace",
               inference: Schedule | None = None) -> SamplingChain:
    """The chain for sampling a model trained on ``training`` in ``num_steps`` steps (default: all).

    ``inference``: another schedule to sample with (default: the training one).
    """
    inference = training if inference is None else inference
    n = inference.T if num_steps is None else int(num_steps)
    kept, ab = _kept_levels(inference, n, spacing)
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    model_t = training_timesteps(torch.from_numpy(np.ascontiguousarray(ab)), training).numpy()
    desc = f"{len(kept)} of {inference.T} steps ({spacing}) of the {inference.name} schedule"
    if spacing == "karras":
        desc = f"{len(kept)} Karras noise levels (rho = {KARRAS_RHO:g}) of the {inference.name} schedule"
    if not np.array_equal(model_t, kept):
        desc += f"; network called at the {training.name} training step of the same sigma (interpolated in log sigma)"
    if np.array_equal(kept, np.round(kept)):
        kept = np.round(kept).astype(np.int64)
    model_t = np.round(model_t).astype(np.int64) if np.array_equal(model_t, np.round(model_t)) else model_t

    rev = slice(None, None, -1)
    return SamplingChain(kept[rev].copy(), model_t[rev].copy(), ab[rev].copy(), ab_prev[rev].copy(), desc)
