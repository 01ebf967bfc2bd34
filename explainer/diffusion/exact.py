"""The exact denoiser of a finite point set: E[x_0 | x_t] in closed form, and the eps it implies.

For the empirical data distribution p(x_0) = (1/N) sum_i delta(x_0 - x_i), the forward marginal is a Gaussian
mixture, q(x_t) = (1/N) sum_i N(x_t; sqrt(abar_t) x_i, (1 - abar_t) I), and Bayes' rule gives the posterior mean

    E[x_0 | x_t] = sum_i w_i x_i,   w = softmax_i( -||x_t - sqrt(abar_t) x_i||^2 / (2 (1 - abar_t)) ).

Its noise prediction follows from x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (Ho et al. 2020, *Denoising
Diffusion Probabilistic Models*, eq. 4):

    eps*(x_t, t) = (x_t - sqrt(abar_t) E[x_0 | x_t]) / sqrt(1 - abar_t),

which is the minimiser of the training loss L_simple over all functions for this data set. Run through a sampler
it takes every particle back onto one of the x_i: it has memorised the data. With class labels, class y's
mixture uses only the points of class y and the null label all of them, which gives the exact pair of
conditional and unconditional predictions that classifier-free guidance combines.

``ExactDenoiser`` is a denoiser ``eps_fn(x_t, alpha_bar, labels)`` as the samplers take it (samplers.py): it uses
the noise level it is given, of any schedule and between any two steps, so a walk along another inference schedule,
or a sampler that evaluates it twice per step, gets the exact eps at each level. The weights are
normalised with log-sum-exp (at small t the logits are of order 1/(1 - abar_t), about 10^4), batched in chunks
of rows, in float64 wherever float32 could round them visibly (``posterior_mean``). The data may have any
dimension D; x_t is [B, D].
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from .forward import predict_eps_from_x0
from .schedules import Schedule

CHUNK_ELEMENTS = 1 << 17  # rows x points per chunk of logits (small enough to stay in the cache)
FLOAT32_EPS = 2.0 ** -24  # float32 rounding, relative
LOGIT_TOLERANCE = 1e-4  # largest rounding error of a logit allowed in float32 (the weights then move by < 0.01 %)
# Shifted logits are floored here before exp: exp takes a scalar slow path, 20 to 60 times slower, wherever its result
# is not a normal number (below e^-87.3 in float32, e^-708.4 in float64), and where the posterior is sharp most
# logits are that low. A floored weight is 1.6e-38 (float32) or 1e-304 (float64) of the largest one instead of 0:
# 2,000 of them add less than float32's (float64's) rounding to the weights' sum, so the mean does not change.
EXP_FLOOR = {torch.float32: -87.0, torch.float64: -700.0}


def _as_data(points, dtype=torch.float64) -> torch.Tensor:
    data = torch.as_tensor(np.asarray(points) if not torch.is_tensor(points) else points).to(dtype)
    if data.dim() != 2 or data.shape[0] == 0:
        raise ValueError(f"the data must be a non-empty [N, D] array, got shape {tuple(data.shape)}")
    return data.contiguous()


@contextmanager
def flush_denormals():
    """Treat subnormal floats as 0 in this thread while inside (x86's FTZ/DAZ flags; restored to off after).

    Where the posterior is sharp, most softmax weights fall below float32's smallest normal number (1.2e-38 of the
    largest weight), and arithmetic on such subnormal numbers is several times slower on x86 CPUs. Flushing them to 0
    changes the posterior mean by less than 1e-38 relative: nothing float32 or float64 can show.
    """
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def posterior_mean(x_t: torch.Tensor, alpha_bar: float, data: torch.Tensor,
                   sq_norms: torch.Tensor | None = None, share=None) -> torch.Tensor:
    """E[x_0 | x_t] = softmax_i(-||x_t - sqrt(abar) x_i||^2 / (2 (1 - abar))) . x_i for x_t [B, D]; float64 result.

    The row-constant -||x_t||^2 / (2 (1 - abar)) is dropped (softmax ignores it, and subtracts the row maximum:
    log-sum-exp), leaving (sqrt(abar) x_t . x_i - abar ||x_i||^2 / 2) / (1 - abar), one matrix product per chunk of
    rows. The logits are formed in float64 when float32 could round them by more than ``LOGIT_TOLERANCE`` (their
    size grows like 1/(1 - abar): at small t), else in float32, which is faster and loses nothing visible.
    ``share``: a ``TaskShare`` (``accel.share``) whose helper thread may compute some of the chunks; the result is
    the same.
    """
    alpha_bar = float(alpha_bar)
    if not 0.0 < alpha_bar < 1.0:
        raise ValueError(f"alpha_bar must lie in (0, 1) for the posterior mean, got {alpha_bar}")
    var = 1.0 - alpha_bar
    scale = alpha_bar ** 0.5 / var
    sq_norms = (data * data).sum(1) if sq_norms is None else sq_norms
    x = x_t.detach().to(torch.float64)
    bound = (scale * float(x.abs().max()) * float(data.abs().max()) * data.shape[1]
             + alpha_bar / (2.0 * var) * float(sq_norms.max()))  # largest |logit| term
    dtype = torch.float32 if bound * FLOAT32_EPS <= LOGIT_TOLERANCE else torch.float64
    xd, dd = x.to(dtype), data.to(dtype)
    centre = data.mean(0)
    # the mean is formed as centre + sum_i w_i (x_i - centre) (exact for N = 1); a column of ones beside the offsets
    # gives the weights' sum in the same product, so the weights need not be normalised first
    D = data.shape[1]
    offsets = torch.cat([data - centre, torch.ones_like(data[:, :1])], 1).to(dtype)
    bias = (sq_norms * (-alpha_bar / (2.0 * var))).to(dtype)
    out = torch.empty_like(x)
    rows = max(1, CHUNK_ELEMENTS // data.shape[0])
    inference = torch.is_inference_mode_enabled()  # a helper thread writes into ``out`` under the caller's mode

    def chunk(s: int) -> None:
        with torch.inference_mode(inference), flush_denormals():
            logits = torch.addmm(bias, xd[s:s + rows], dd.T, alpha=scale)
            # w_i / max_j w_j (log-sum-exp's shift), the exponents floored where exp has no normal result
            weights = logits.sub_(logits.amax(1, keepdim=True)).clamp_(min=EXP_FLOOR[dtype]).exp_()
            sums = weights @ offsets
            out[s:s + rows] = sums[:, :D] / sums[:, D:]
    tasks = [lambda s=s: chunk(s) for s in range(0, x.shape[0], rows)]
    if share is None:
        for task in tasks:
            task()
    else:
        share.run(tasks)
    return out + centre


def posterior_weights(x_t: torch.Tensor, alpha_bar: float, data) -> torch.Tensor:
    """The posterior q(x_0 = x_i | x_t) of every point: w = softmax_i(-||x_t - sqrt(abar) x_i||^2 / (2 (1 - abar))),
    [B, N] in float64 (the weights ``posterior_mean`` averages with; for a few rows, not chunked)."""
    alpha_bar = float(alpha_bar)
    if not 0.0 < alpha_bar < 1.0:
        raise ValueError(f"alpha_bar must lie in (0, 1) for the posterior weights, got {alpha_bar}")
    data = _as_data(data)
    x = x_t.detach().to(torch.float64).reshape(-1, data.shape[1])
    d2 = torch.cdist(x, alpha_bar ** 0.5 * data) ** 2
    return torch.softmax(-d2 / (2.0 * (1.0 - alpha_bar)), dim=1)


def effective_points(weights: torch.Tensor) -> torch.Tensor:
    """How many points a weighted mean really averages over: 1 / sum_i w_i^2 (Kish's effective sample size), [B]."""
    return 1.0 / (weights * weights).sum(-1)


class ExactDenoiser:
    """The exact denoiser of ``points``: ``eps_fn(x_t, alpha_bar, labels)`` at any noise level alpha_bar in (0, 1).

    alpha_bar: one float, or a tensor of one level per row. labels: None (all points), or [B] class ids where
    ``null_label`` (= the number of classes) means all points; ``point_labels`` [N] give each point's class.
    ``schedule``: the training schedule a walk of it is made on by default (``lab_training.evaluate``); the eps
    itself does not depend on it.
    """

    def __init__(self, points, schedule: Schedule, point_labels=None, num_classes: int | None = None):
        self.data = _as_data(points)
        self.schedule = schedule
        self.sq_norms = (self.data * self.data).sum(1)
        self.point_labels = None
        self.groups: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        if point_labels is not None:
            self.point_labels = torch.as_tensor(np.asarray(point_labels), dtype=torch.long)
            if self.point_labels.shape != (self.data.shape[0],):
                raise ValueError("point_labels must hold one class id per point")
            n = int(self.point_labels.max()) + 1 if num_classes is None else int(num_classes)
            for c in range(n):
                idx = (self.point_labels == c).nonzero().flatten()
                if len(idx):
                    self.groups[c] = (self.data[idx].contiguous(), self.sq_norms[idx].contiguous())
            self.num_classes = n
        else:
            self.num_classes = 0

    @property
    def null_label(self) -> int | None:
        return self.num_classes if self.num_classes else None

    def _points(self, label: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        if label is None or label == self.null_label or self.point_labels is None:
            return self.data, self.sq_norms
        if label not in self.groups:
            raise ValueError(f"class {label} has no points (classes 0..{self.num_classes - 1}, null {self.null_label})")
        return self.groups[label]

    def eps64(self, x_t: torch.Tensor, alpha_bar, labels=None, share=None) -> torch.Tensor:
        """eps*(x_t) at noise level(s) ``alpha_bar``, float64 on the CPU: ``posterior_mean`` of each group of rows
        with one (level, label), then eq. 4 solved for eps (``forward.predict_eps_from_x0``). ``share``: see
        ``posterior_mean``."""
        x = x_t.detach().to("cpu", torch.float64)
        levels = torch.as_tensor(alpha_bar, dtype=torch.float64).reshape(-1).cpu()
        lab = None if labels is None else torch.as_tensor(labels, dtype=torch.long).reshape(-1).cpu()
        if levels.numel() == 1 and (lab is None or bool((lab == lab[0]).all())):  # one group: the sampler's case
            ab = float(levels[0])
            data, sq = self._points(None if lab is None else int(lab[0]))
            return predict_eps_from_x0(x, posterior_mean(x, ab, data, sq, share), ab)
        B = x.shape[0]
        label_keys = torch.zeros(B, dtype=torch.float64) if lab is None else lab.double().expand(B)
        groups, inverse = torch.unique(torch.stack([levels.expand(B), label_keys], 1), dim=0, return_inverse=True)
        out = torch.empty_like(x)
        for g, (ab, label) in enumerate(groups.tolist()):
            rows = (inverse == g).nonzero().flatten()
            data, sq = self._points(None if lab is None else int(label))
            out[rows] = predict_eps_from_x0(x[rows], posterior_mean(x[rows], ab, data, sq, share), ab)
        return out

    def __call__(self, x_t: torch.Tensor, alpha_bar, labels=None, share=None) -> torch.Tensor:
        """eps*(x_t) at noise level ``alpha_bar``, in x_t's dtype and on its device (the samplers' denoiser).
        ``share``: a ``TaskShare`` (``accel.share``) whose helper thread may compute part of the call (bind it with
        ``functools.partial`` for a walk)."""
        return self.eps64(x_t, alpha_bar, labels, share).to(device=x_t.device, dtype=x_t.dtype)


def marginal_density(xs: np.ndarray, ys: np.ndarray, points, alpha_bar: float, min_var: float = 0.0) -> np.ndarray:
    """q(x_t) = (1/N) sum_i N(x_t; sqrt(abar) x_i, (1 - abar) I) of 2-D points on the grid ys x xs: [len(ys), len(xs)].

    The Gaussian factorises over the two axes, so the sum is one matrix product:
    q[j, k] = (1/N) sum_i phi(ys[j] - s y_i) phi(xs[k] - s x_i) with s = sqrt(abar). ``min_var`` floors the
    variance (at t = 0 the mixture is a sum of point masses). Far from every point a factor is floored at e^-340 of
    its peak, so exp and the product stay on fast, normal floats (results below float64's normal range take slow
    paths on x86); q is then off by at most 1e-147 of its largest possible value.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"marginal_density needs 2-D points [N, 2], got shape {pts.shape}")
    s = float(alpha_bar) ** 0.5
    var = max(1.0 - float(alpha_bar), float(min_var))
    if var <= 0.0:
        raise ValueError("the variance is 0 (t = 0): pass min_var > 0")
    norm = 1.0 / np.sqrt(2.0 * np.pi * var)

    def phi(grid, centres):  # exponents floored at -340: a factor >= 1e-148 * norm, and a product of two is normal
        return norm * np.exp(np.maximum(-(np.asarray(grid, dtype=np.float64)[:, None] - s * centres[None]) ** 2
                                        / (2.0 * var), -340.0))
    return (phi(ys, pts[:, 1]) @ phi(xs, pts[:, 0]).T) / len(pts)
