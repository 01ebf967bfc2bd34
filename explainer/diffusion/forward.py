"""The forward (noising) process q, in closed form and as the step-by-step Markov chain.

Images live in [-1, 1]. Noise ``eps`` is standard normal with the shape of the image.
"""
from __future__ import annotations

import numpy as np
import torch

from .schedules import Schedule


def _coef(values: np.ndarray, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Gather a per-step float64 coefficient at paper steps t (shape [B]) and broadcast to ``like``."""
    idx = t.detach().cpu().long().numpy()
    out = torch.from_numpy(np.asarray(values)[idx]).to(device=like.device, dtype=like.dtype)
    return out.reshape(-1, *([1] * (like.dim() - 1)))


def as_timesteps(t, batch: int, schedule: Schedule, allow_zero: bool = True) -> torch.Tensor:
    """Turn an int or a sequence of paper steps into a LongTensor [B], validating the range."""
    t = torch.as_tensor(t, dtype=torch.long)
    if t.dim() == 0:
        t = t.expand(batch)
    schedule.check_t(t.numpy(), allow_zero=allow_zero)
    return t


def q_sample(x0: torch.Tensor, t, eps: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps   (Ho et al. 2020, eq. 4).

    t: paper steps in 0..T (int, or one per batch item); t = 0 returns x_0.
    """
    t = as_timesteps(t, x0.shape[0], schedule)
    ab = np.concatenate([[1.0], schedule.alpha_bars])  # index by paper t, alpha_bar_0 = 1
    return _coef(np.sqrt(ab), t, x0) * x0 + _coef(np.sqrt(1.0 - ab), t, x0) * eps


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


def x0_from_eps(x_t: torch.Tensor, t, eps: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)   (Ho et al. 2020, eq. 15)."""
    t = as_timesteps(t, x_t.shape[0], schedule, allow_zero=False)
    ab = np.concatenate([[1.0], schedule.alpha_bars])
    return (x_t - _coef(np.sqrt(1.0 - ab), t, x_t) * eps) / _coef(np.sqrt(ab), t, x_t)
