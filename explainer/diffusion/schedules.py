"""Noise schedules: beta_t, alpha_t, alpha_bar_t and everything derived from them, in float64.

Indexing: the paper's t runs 1..T; array index t-1 holds step t. t = 0 is the clean image and has
alpha_bar_0 = 1 by definition (``alpha_bar_at(0) == 1``).

References
- DDPM, Ho et al. 2020 (arXiv:2006.11239): linear betas 1e-4..0.02 (sec. 4), alpha_t = 1 - beta_t,
  alpha_bar_t = prod_{s<=t} alpha_s (eq. 4 context). The per-step coefficients of sampling (beta_tilde,
  the posterior mean) belong to the sampling chain: ``respacing.SamplingChain.coefficients``.
- Improved DDPM, Nichol & Dhariwal 2021 (arXiv:2102.09672): cosine schedule (eq. 17), beta capped at
  0.999.
- Stable Diffusion's ``scaled_linear`` (Rombach et al. 2022): betas = linspace(sqrt(b0), sqrt(b1))^2.
- Zero terminal SNR, Lin et al. 2024 (arXiv:2305.08891, Algorithm 1): shift and scale sqrt(alpha_bar)
  so that sqrt(alpha_bar_T) = 0 while sqrt(alpha_bar_1) is unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

SCHEDULES = ("linear", "cosine", "scaled_linear", "sigmoid", "quadratic")
DDPM_T = 1000  # T of Ho et al. 2020 (sec. 4): the number of steps of every schedule here unless one is asked for


@dataclass(frozen=True)
class Schedule:
    """A diffusion noise schedule. Arrays are float64 and have length T (index t-1 is step t)."""

    name: str
    betas: np.ndarray
    alphas: np.ndarray = field(init=False)
    alpha_bars: np.ndarray = field(init=False)

    def __post_init__(self):
        betas = np.asarray(self.betas, dtype=np.float64)
        if betas.ndim != 1 or len(betas) == 0:
            raise ValueError("betas must be a non-empty 1-D array")
        if not np.all((betas > 0) & (betas <= 1)):
            raise ValueError("every beta_t must lie in (0, 1]")
        betas.setflags(write=False)
        alphas = 1.0 - betas  # alpha_t = 1 - beta_t
        alpha_bars = np.cumprod(alphas)  # alpha_bar_t = prod_{s=1}^t alpha_s
        for a in (alphas, alpha_bars):
            a.setflags(write=False)
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "alphas", alphas)
        object.__setattr__(self, "alpha_bars", alpha_bars)

    @property
    def T(self) -> int:
        return len(self.betas)

    def alpha_bar_at(self, t) -> np.ndarray:
        """alpha_bar_t for paper t in 0..T (vectorised); alpha_bar_0 = 1."""
        t = np.asarray(t)
        self.check_t(t, allow_zero=True)
        return np.where(t == 0, 1.0, self.alpha_bars[np.maximum(t, 1) - 1])

    def noise_std_at(self, t) -> np.ndarray:
        """sqrt(1 - alpha_bar_t), the standard deviation of q(x_t | x_0) (Ho et al. 2020, eq. 4), for t in 0..T."""
        return np.sqrt(1.0 - self.alpha_bar_at(t))

    def sigma_at(self, t) -> np.ndarray:
        """sigma_t = sqrt(1 - alpha_bar_t) / sqrt(alpha_bar_t), the noise-to-signal ratio, for t in 0..T.

        x_t / sqrt(alpha_bar_t) = x_0 + sigma_t eps: the noise level of DDIM's ODE (Song et al. 2021, eq. 14) and
        of Karras et al. 2022 (Table 1, VP: sigma = sqrt(1 / alpha_bar - 1)); also the factor by which x0_hat
        (Ho et al. eq. 15) magnifies an error in eps_hat. sigma_0 = 0; inf where alpha_bar_t = 0.
        """
        ab = self.alpha_bar_at(t)
        with np.errstate(divide="ignore"):
            return np.sqrt(1.0 - ab) / np.sqrt(ab)

    def check_t(self, t, allow_zero: bool = False) -> None:
        lo = 0 if allow_zero else 1
        t = np.asarray(t)
        if t.size and (t.min() < lo or t.max() > self.T):
            raise ValueError(f"t must be an integer in {lo}..{self.T}, got {t.min() if t.min() < lo else t.max()}")

    # ---- derived quantities (each as an array over t = 1..T) ----
    @property
    def snr(self) -> np.ndarray:
        """Signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t) (Kingma et al. 2021)."""
        with np.errstate(divide="ignore"):
            return self.alpha_bars / (1.0 - self.alpha_bars)

    @property
    def log_snr(self) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.log(self.alpha_bars) - np.log1p(-self.alpha_bars)

    def summary_at(self, t: int) -> dict:
        """The numbers at one step t in 0..T, as plain floats (for display)."""
        self.check_t(t, allow_zero=True)
        if t == 0:
            return {"t": 0, "beta_t": 0.0, "alpha_t": 1.0, "alpha_bar_t": 1.0, "sqrt_alpha_bar_t": 1.0,
                    "one_minus_alpha_bar_t": 0.0, "snr": math.inf}
        i = t - 1
        return {"t": t, "beta_t": float(self.betas[i]), "alpha_t": float(self.alphas[i]),
                "alpha_bar_t": float(self.alpha_bars[i]), "sqrt_alpha_bar_t": float(np.sqrt(self.alpha_bars[i])),
                "one_minus_alpha_bar_t": float(1 - self.alpha_bars[i]), "snr": float(self.snr[i])}

    def steps_near_pure_noise(self, threshold: float = 0.01) -> int:
        """How many of the T steps have alpha_bar_t < threshold (signal nearly gone)."""
        return int(np.sum(self.alpha_bars < threshold))


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """Ho et al. 2020: betas linear from 1e-4 to 0.02. Not rescaled for T != 1000 (as in diffusers)."""
    return np.linspace(beta_start, beta_end, T, dtype=np.float64)


def cosine_alpha_bar(t: np.ndarray, T: int, s: float = 0.008) -> np.ndarray:
    """Nichol & Dhariwal 2021 eq. 17: alpha_bar(t) = f(t)/f(0), f(t) = cos(((t/T + s)/(1 + s)) pi/2)^2."""
    f = lambda u: np.cos((u / T + s) / (1 + s) * np.pi / 2) ** 2
    return f(np.asarray(t, dtype=np.float64)) / f(0.0)


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """beta_t = min(1 - alpha_bar_t / alpha_bar_{t-1}, 0.999) (Nichol & Dhariwal 2021, sec. 3.2)."""
    t = np.arange(1, T + 1, dtype=np.float64)
    return np.minimum(1.0 - cosine_alpha_bar(t, T, s) / cosine_alpha_bar(t - 1, T, s), max_beta)


def sqrt_linear_betas(T: int, beta_start: float, beta_end: float) -> np.ndarray:
    """Betas linear in sqrt(beta): linspace(sqrt(beta_start), sqrt(beta_end), T)^2."""
    return np.linspace(math.sqrt(beta_start), math.sqrt(beta_end), T, dtype=np.float64) ** 2


def scaled_linear_betas(T: int, beta_start: float = 0.00085, beta_end: float = 0.012) -> np.ndarray:
    """Latent diffusion / Stable Diffusion (Rombach et al. 2022): linear in sqrt(beta) from 0.00085 to 0.012."""
    return sqrt_linear_betas(T, beta_start, beta_end)


def sigmoid_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """GeoDiff-style sigmoid betas (as diffusers' ``sigmoid``): sigmoid(linspace(-6, 6)) scaled to the range."""
    x = np.linspace(-6, 6, T, dtype=np.float64)
    return 1.0 / (1.0 + np.exp(-x)) * (beta_end - beta_start) + beta_start


def quadratic_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """Quadratic betas: linear in sqrt(beta) between the linear schedule's end points."""
    return sqrt_linear_betas(T, beta_start, beta_end)


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Lin et al. 2024, Algorithm 1: make alpha_bar_T = 0 (SNR 0) keeping alpha_bar_1 unchanged.

    The last beta becomes 1: eps-prediction cannot form x0_hat at t = T (division by zero); samplers
    here clip x0_hat there, and the UI warns.
    """
    sqrt_ab = np.sqrt(np.cumprod(1.0 - np.asarray(betas, dtype=np.float64)))
    first, last = sqrt_ab[0], sqrt_ab[-1]
    sqrt_ab = (sqrt_ab - last) * first / (first - last)
    ab = sqrt_ab ** 2
    alphas = np.concatenate([ab[:1], ab[1:] / ab[:-1]])
    return 1.0 - alphas


def make_schedule(name: str = "linear", num_steps: int = DDPM_T, zero_terminal_snr: bool = False) -> Schedule:
    """Build a named schedule with T = num_steps steps.

    name: one of ``SCHEDULES``; ``squaredcos_cap_v2`` (diffusers' name) is accepted for cosine.
    """
    if name == "squaredcos_cap_v2":
        name = "cosine"
    makers = {"linear": linear_betas, "cosine": cosine_betas, "scaled_linear": scaled_linear_betas,
              "sigmoid": sigmoid_betas, "quadratic": quadratic_betas}
    if name not in makers:
        raise ValueError(f"unknown schedule {name!r}; choose from {', '.join(SCHEDULES)}")
    if not isinstance(num_steps, (int, np.integer)) or num_steps < 2:
        raise ValueError(f"num_steps must be an integer >= 2, got {num_steps!r}")
    betas = makers[name](int(num_steps))
    if zero_terminal_snr:
        betas = rescale_zero_terminal_snr(betas)
        name = name + "+zsnr"
    return Schedule(name, betas)
