"""The training objective: L_simple, optionally weighted per timestep by min-SNR-gamma.

L_simple (Ho et al. 2020, eq. 14): E_{t, x_0, eps} || eps - eps_theta(x_t, t) ||^2, the mean over the batch
of the per-example mean squared error. Min-SNR-gamma (Hang et al. 2023, *Efficient Diffusion Training via
Min-SNR Weighting Strategy*, sec. 3.4): for an eps-predicting network the loss of step t is weighted by
min(SNR_t, gamma) / SNR_t, with SNR_t = alpha_bar_t / (1 - alpha_bar_t). The weight is 1 wherever
SNR_t <= gamma (the noisy steps) and shrinks the nearly clean steps, whose gradients otherwise conflict with
the rest. Both trainers (the U-Net's and the 2D lab's) call ``simple_loss``.
"""
from __future__ import annotations

import numpy as np
import torch

from .schedules import Schedule


def min_snr_weights(schedule: Schedule, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """min(SNR_t, gamma) / SNR_t for paper steps t [B] (float64 schedule math, float32 result on t's device)."""
    if not gamma > 0:
        raise ValueError(f"min-SNR gamma must be positive, got {gamma}")
    snr = schedule.snr
    table = torch.from_numpy(np.minimum(snr, gamma) / snr).to(torch.float32).to(t.device)
    return table.index_select(0, t.long() - 1)


def simple_loss(pred: torch.Tensor, eps: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """L_simple: the mean squared error of the predicted noise, each example weighted by ``weights`` [B] if given.

    With no weights this is exactly ``F.mse_loss(pred, eps)``; the prediction is compared in float32.
    """
    err = (pred.float() - eps.float()).pow(2)
    if weights is None:
        return err.mean()
    per_example = err.reshape(err.shape[0], -1).mean(dim=1)
    return (weights * per_example).mean()
