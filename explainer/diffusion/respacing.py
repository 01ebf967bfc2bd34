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

Another schedule at inference: the network only knows the noise levels of its training schedule.
Each inference step with alpha_bar' is mapped to the training step whose log-SNR,
log(alpha_bar / (1 - alpha_bar)), is nearest (the rule is stated in the UI); the update itself uses
the inference schedule's alpha_bar'.

Each step's coefficients (beta', beta_tilde', sigma, the posterior-mean and DDIM coefficients) are
computed once per chain and sampler by ``SamplingChain.coefficients``, the one home of those
formulas: the step functions in samplers.py, the step-anatomy view and the graphed walk read them.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import numpy as np

from .schedules import Schedule

SPACINGS = ("linspace", "leading", "trailing")
METHODS = ("ddpm", "ddim")
VARIANCES = ("beta", "beta_tilde")  # sigma_t^2 of DDPM: "fixed large" and "fixed small" (Ho et al. 2020, sec. 3.2)
AFFINE_COLUMNS = ("p", "q", "c0", "ct", "sigma")


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


def map_to_training_steps(inference: Schedule, steps: np.ndarray, training: Schedule) -> np.ndarray:
    """Training step whose log-SNR is nearest to the inference schedule's at each of ``steps``."""
    if inference is training or (inference.T == training.T and np.array_equal(inference.betas, training.betas)):
        return np.asarray(steps, dtype=np.int64)
    target = inference.log_snr[np.asarray(steps) - 1]
    train = training.log_snr  # decreasing in t
    # searchsorted on the increasing reversed array, then compare the two neighbours
    rev = train[::-1]
    pos = np.clip(np.searchsorted(rev, target), 1, len(rev) - 1)
    left, right = rev[pos - 1], rev[pos]
    idx_rev = np.where(np.abs(target - left) <= np.abs(right - target), pos - 1, pos)
    return (len(train) - idx_rev).astype(np.int64)  # back to paper t


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
        x0_hat     = p x_t + q eps,  p = 1/sqrt(abar), q = -sqrt(1 - abar)/sqrt(abar)                   (eq. 15)
        x_prev     = c0 x0_hat + ct x_t + sigma z                          every step, in affine form

    DDPM: sigma^2 = beta' or beta_tilde; (c0, ct) = (beta' sqrt(abar_prev), (1 - abar_prev) sqrt(alpha'))
    / (1 - abar), the posterior mean mu_tilde (eq. 7); its eps form is Algorithm 2's
    x_prev = inv_sqrt_alpha (x_t - eps_coef eps) + sigma z with eps_coef = beta' / sqrt(1 - abar).
    DDIM (Song et al. 2021): sigma = eta sqrt(beta_tilde) (eq. 16); x_prev = x0_coef x0_hat + eps_coef eps
    + sigma z with x0_coef = sqrt(abar_prev), eps_coef = sqrt(1 - abar_prev - sigma^2) (eq. 12), so
    c0 = x0_coef - eps_coef sqrt(abar) / sqrt(1 - abar) and ct = eps_coef / sqrt(1 - abar).
    ``sigma`` is the noise actually added: 0 at the last step. p and q are inf where abar = 0.
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
    p: np.ndarray
    q: np.ndarray
    c0: np.ndarray
    ct: np.ndarray
    inv_sqrt_alpha: np.ndarray  # DDPM's eps form
    x0_coef: np.ndarray  # DDIM's eps form
    eps_coef: np.ndarray  # DDPM: beta'/sqrt(1 - abar); DDIM: sqrt(1 - abar_prev - sigma^2)

    def __len__(self):
        return len(np.atleast_1d(self.alpha_bar))

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
                      eta: float = 0.0, noise_at_last: bool = False) -> StepCoefficients:
    """The ``StepCoefficients`` of steps from alpha_bar to alpha_bar_prev (arrays, noisiest first, or scalars).

    noise_at_last: keep sigma at the last entry (a single step taken on its own); a chain adds none there.
    """
    check_step_args(method, variance, eta)
    ab = np.atleast_1d(np.asarray(alpha_bar, dtype=np.float64))
    ab_prev = np.atleast_1d(np.asarray(alpha_bar_prev, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = ab / ab_prev
        beta = 1.0 - alpha
        beta_tilde = beta * (1.0 - ab_prev) / (1.0 - ab)
        p, q = 1.0 / np.sqrt(ab), -np.sqrt(1.0 - ab) / np.sqrt(ab)
        inv_sqrt_alpha = 1.0 / np.sqrt(alpha)
        if method == "ddpm":
            sigma = np.sqrt(beta if variance == "beta" else beta_tilde)
            x0_coef = np.sqrt(ab_prev)
            eps_coef = beta / np.sqrt(1.0 - ab)
            c0 = beta * np.sqrt(ab_prev) / (1.0 - ab)
            ct = (1.0 - ab_prev) * np.sqrt(alpha) / (1.0 - ab)
        else:
            sigma = eta * np.sqrt(beta_tilde)
            x0_coef = np.sqrt(ab_prev)
            eps_coef = np.sqrt(np.maximum(1.0 - ab_prev - sigma ** 2, 0.0))
            c0 = x0_coef - eps_coef * np.sqrt(ab) / np.sqrt(1.0 - ab)
            ct = eps_coef / np.sqrt(1.0 - ab)
    if not noise_at_last:
        sigma = sigma.copy()
        sigma[-1] = 0.0
    return StepCoefficients(method, variance, float(eta), ab, ab_prev, alpha, beta, beta_tilde, sigma, p, q, c0, ct,
                            inv_sqrt_alpha, x0_coef, eps_coef)


@dataclass(frozen=True, eq=False)
class SamplingChain:
    """The steps a sampler takes, noisiest first. All arrays have one entry per inference step."""

    timesteps: np.ndarray  # paper t in the inference schedule
    model_t: np.ndarray  # training t given to the network
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

    @property
    def alpha(self) -> np.ndarray:
        """Respaced alpha'_i = alpha_bar'_i / alpha_bar'_{i-1}."""
        return self.coefficients().alpha

    @property
    def beta(self) -> np.ndarray:
        """Respaced beta'_i = 1 - alpha_bar'_i / alpha_bar'_{i-1} (Nichol & Dhariwal 2021, sec. 4)."""
        return self.coefficients().beta

    @property
    def beta_tilde(self) -> np.ndarray:
        """Posterior variance on the respaced chain (Ho et al. 2020, eq. 7)."""
        return self.coefficients().beta_tilde


def make_chain(training: Schedule, num_steps: int | None = None, spacing: str = "linspace",
               inference: Schedule | None = None) -> SamplingChain:
    """The chain for sampling a model trained on ``training`` in ``num_steps`` steps (default: all).

    ``inference``: another schedule to sample with (default: the training one).
    """
    inference = training if inference is None else inference
    n = inference.T if num_steps is None else int(num_steps)
    kept = spaced_timesteps(inference.T, n, spacing)
    ab = inference.alpha_bars[kept - 1]
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    model_t = map_to_training_steps(inference, kept, training)
    desc = f"{len(kept)} of {inference.T} steps ({spacing}) of the {inference.name} schedule"
    if not np.array_equal(model_t, kept):
        desc += f"; network called at the {training.name} training step with the nearest log-SNR"

    rev = slice(None, None, -1)
    return SamplingChain(kept[rev].copy(), model_t[rev].copy(), ab[rev].copy(), ab_prev[rev].copy(), desc)
