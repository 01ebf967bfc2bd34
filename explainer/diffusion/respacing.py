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
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .schedules import Schedule

SPACINGS = ("linspace", "leading", "trailing")


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


@dataclass(frozen=True)
class SamplingChain:
    """The steps a sampler takes, noisiest first. All arrays have one entry per inference step."""

    timesteps: np.ndarray  # paper t in the inference schedule
    model_t: np.ndarray  # training t given to the network
    alpha_bar: np.ndarray  # alpha_bar' at t
    alpha_bar_prev: np.ndarray  # alpha_bar' at the next kept step (1 after the last)
    description: str

    def __len__(self):
        return len(self.timesteps)

    @property
    def timesteps_prev(self) -> np.ndarray:
        return np.concatenate([self.timesteps[1:], [0]])

    @property
    def alpha(self) -> np.ndarray:
        """Respaced alpha'_i = alpha_bar'_i / alpha_bar'_{i-1}."""
        return self.alpha_bar / self.alpha_bar_prev

    @property
    def beta(self) -> np.ndarray:
        """Respaced beta'_i = 1 - alpha_bar'_i / alpha_bar'_{i-1} (Nichol & Dhariwal 2021, sec. 4)."""
        return 1.0 - self.alpha

    @property
    def beta_tilde(self) -> np.ndarray:
        """Posterior variance on the respaced chain (Ho et al. 2020, eq. 7)."""
        return self.beta * (1.0 - self.alpha_bar_prev) / (1.0 - self.alpha_bar)


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
