"""The forward (noising) process q, in closed form and as the step-by-step Markov chain, and its two inversions.

Images live in [-1, 1]. Noise ``eps`` is standard normal with the shape of the image. As in improved-diffusion
(``q_sample``, ``_predict_xstart_from_eps``, ``_predict_eps_from_xstart``), the formulas that relate x_0, x_t and
eps live here once: ``q_sample`` (Ho et al. 2020, eq. 4) at a schedule's step, and ``predict_x0_from_eps`` (eq. 15)
and ``predict_eps_from_x0`` (eq. 4 solved for eps) at any noise level alpha_bar, as samplers and denoisers use them.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from .schedules import Schedule


@functools.lru_cache(maxsize=64)
def _tables(alpha_bars: bytes, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t) for paper t = 0..T (alpha_bar_0 = 1) on ``device``.

    Keyed by the schedule's float64 alpha_bar bytes (a schedule's arrays are read-only), so each table is
    computed in float64, rounded to ``dtype`` on the CPU and copied to the device once.
    """
    ab = np.concatenate([[1.0], np.frombuffer(alpha_bars, dtype=np.float64)])
    return tuple(torch.from_numpy(np.sqrt(v)).to(dtype).to(device) for v in (ab, 1.0 - ab))


def _coefs(schedule: Schedule, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t) at paper steps t [B], gathered on ``like``'s device.

    The gather is an index_select on the device: no copy to the host, so no synchronisation on a GPU.
    """
    shape = (-1,) + (1,) * (like.dim() - 1)
    tables = _tables(schedule.alpha_bars.tobytes(), like.device, like.dtype)
    t = t.to(like.device)
    return tuple(c.index_select(0, t).reshape(shape) for c in tables)


def as_timesteps(t, batch: int, schedule: Schedule, allow_zero: bool = True) -> torch.Tensor:
    """Turn an int or a sequence of paper steps into a LongTensor [B], validating the range.

    A tensor on an accelerator stays there and is not validated (that would wait for the device); an
    out-of-range step then fails in the device-side gather instead.
    """
    t = torch.as_tensor(t, dtype=torch.long)
    if t.dim() == 0:
        t = t.expand(batch)
    if t.device.type == "cpu":
        schedule.check_t(t.numpy(), allow_zero=allow_zero)
    return t


def q_sample(x0: torch.Tensor, t, eps: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps   (Ho et al. 2020, eq. 4).

    t: paper steps in 0..T (int, or one per batch item, on any device); t = 0 returns x_0. The
    coefficients are float64 values rounded to x0's dtype and gathered on x0's device.
    """
    sqrt_ab, sqrt_1m_ab = _coefs(schedule, as_timesteps(t, x0.shape[0], schedule), x0)
    return sqrt_ab * x0 + sqrt_1m_ab * eps


def q_step(x_prev: torch.Tensor, t: int, eps: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """One forward step x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) eps   (Ho et al. 2020, eq. 2)."""
    schedule.check_t(t)
    return float(np.sqrt(schedule.alphas[t - 1])) * x_prev + float(np.sqrt(schedule.betas[t - 1])) * eps


def q_chain(x0: torch.Tensor, schedule: Schedule, upto: int | None = None, generator: torch.Generator | None = None,
            record_every: int = 1):
    """Run the Markov chain x_0 -> x_1 -> ... -> x_upto with fresh noise each step.

    Yields (t, x_t) for t = 0, record_every, 2*record_every, ... and always the last step. Agrees with
    ``q_sample`` in distribution (same mean and variance), not sample by sample.
    """
    upto = schedule.T if upto is None else upto
    schedule.check_t(upto, allow_zero=True)
    x = x0
    yield 0, x
    for t in range(1, upto + 1):
        eps = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        x = q_step(x, t, eps, schedule)
        if t % record_every == 0 or t == upto:
            yield t, x


def _sqrt_levels(alpha_bar, like: torch.Tensor):
    """sqrt(abar) and sqrt(1 - abar): floats for one level, else one per row of ``like`` (shaped [B, 1, ...]), formed in
    float64 and rounded to like's dtype on its device, so a per-row level does not promote a float32 batch."""
    if not torch.is_tensor(alpha_bar) and np.ndim(alpha_bar) == 0:
        ab = float(alpha_bar)
        return ab ** 0.5, (1.0 - ab) ** 0.5
    ab = torch.as_tensor(alpha_bar, dtype=torch.float64).to(like.device)
    ab = ab.reshape((-1,) + (1,) * (like.dim() - 1))
    return ab.sqrt().to(like.dtype), (1.0 - ab).sqrt().to(like.dtype)


def predict_x0_from_eps(x_t: torch.Tensor, eps: torch.Tensor, alpha_bar) -> torch.Tensor:
    """x0_hat = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar)   (Ho et al. 2020, eq. 15).

    alpha_bar: the noise level of x_t, one float or one per row (any schedule's: not tied to a training step).
    Computed in x_t's dtype (float64 inputs stay float64). Undefined at alpha_bar = 0 (zero terminal SNR).
    """
    sqrt_ab, sqrt_1m_ab = _sqrt_levels(alpha_bar, x_t)
    return (x_t - sqrt_1m_ab * eps) / sqrt_ab


def predict_eps_from_x0(x_t: torch.Tensor, x0: torch.Tensor, alpha_bar) -> torch.Tensor:
    """eps = (x_t - sqrt(alpha_bar) x0) / sqrt(1 - alpha_bar)   (Ho et al. 2020, eq. 4 solved for eps).

    alpha_bar: one float or one per row, as in ``predict_x0_from_eps``; computed in x_t's dtype. Undefined at
    alpha_bar = 1 (no noise).
    """
    sqrt_ab, sqrt_1m_ab = _sqrt_levels(alpha_bar, x_t)
    return (x_t - sqrt_ab * x0) / sqrt_1m_ab
