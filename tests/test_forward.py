"""Forward process: closed form vs the Markov chain (Monte Carlo), inversion, and diffusers' add_noise."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from explainer.diffusion.forward import predict_eps_from_x0, predict_x0_from_eps, q_chain, q_sample, q_step
from explainer.diffusion.schedules import make_schedule


@pytest.fixture(scope="module", params=["linear", "cosine"])
def schedule(request):
    return make_schedule(request.param, 1000)


def test_t0_returns_x0(schedule):
    x0 = torch.rand(3, 1, 4, 4) * 2 - 1
    eps = torch.randn_like(x0)
    assert torch.equal(q_sample(x0, 0, eps, schedule), x0)


def test_closed_form_by_hand(schedule):
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 1, 5, 5, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(4, 1, 5, 5, generator=g, dtype=torch.float64)
    t = [1, 250, 600, 1000]
    xt = q_sample(x0, t, eps, schedule)
    for i, ti in enumerate(t):
        ab = np.prod(1 - schedule.betas[:ti])
        ref = math.sqrt(ab) * x0[i] + math.sqrt(1 - ab) * eps[i]
        torch.testing.assert_close(xt[i], ref, rtol=1e-12, atol=1e-12)


def test_matches_diffusers_add_noise():
    sch = make_schedule("linear", 1000)
    ref_sched = DDPMScheduler(num_train_timesteps=1000)
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(5, 1, 6, 6, generator=g) * 2 - 1
    eps = torch.randn(5, 1, 6, 6, generator=g)
    t = torch.tensor([1, 10, 488, 900, 1000])
    ref = ref_sched.add_noise(x0, eps, t - 1)  # diffusers' index = paper t - 1
    torch.testing.assert_close(q_sample(x0, t, eps, sch), ref, rtol=1e-5, atol=2e-6)


def test_both_inversions_undo_q_sample(schedule):
    """eq. 15 gives x_0 back from eps, eq. 4 solved for eps gives eps back from x_0, in float64, at a level per row
    (given as a float64 tensor, a numpy array or a list) and at one level for the batch."""
    g = torch.Generator().manual_seed(2)
    x0 = torch.rand(6, 1, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(6, 1, 4, 4, generator=g, dtype=torch.float64)
    t = np.array([1, 2, 100, 500, 900, 999])
    xt = q_sample(x0, torch.from_numpy(t), eps, schedule)
    ab = schedule.alpha_bars[t - 1]
    for levels in (torch.from_numpy(ab), ab, ab.tolist()):
        # float64 exact inversion; the error grows only with 1/sqrt(alpha_bar_t) and 1/sqrt(1 - alpha_bar_t)
        torch.testing.assert_close(predict_x0_from_eps(xt, eps, levels), x0, rtol=0, atol=1e-9)
        torch.testing.assert_close(predict_eps_from_x0(xt, x0, levels), eps, rtol=0, atol=1e-9)
    one = q_sample(x0, 250, eps, schedule)
    level = float(schedule.alpha_bars[249])
    torch.testing.assert_close(predict_x0_from_eps(one, eps, level), x0, rtol=0, atol=1e-12)
    torch.testing.assert_close(predict_eps_from_x0(one, x0, level), eps, rtol=0, atol=1e-12)


def test_inversions_keep_the_batch_dtype_and_match_the_closed_form():
    """A float32 batch with float64 levels per row stays float32, and equals eq. 15 / eq. 4 written out."""
    x_t, other = torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2)
    levels = np.array([0.9, 0.3, 1e-3])
    x0, eps = predict_x0_from_eps(x_t, other, levels), predict_eps_from_x0(x_t, other, levels)
    assert x0.dtype == eps.dtype == torch.float32
    for i, ab in enumerate(levels):
        torch.testing.assert_close(x0[i], (x_t[i] - math.sqrt(1 - ab) * other[i]) / math.sqrt(ab))
        torch.testing.assert_close(eps[i], (x_t[i] - math.sqrt(ab) * other[i]) / math.sqrt(1 - ab))


def test_q_step_is_one_markov_step(schedule):
    x = torch.randn(2, 1, 3, 3, dtype=torch.float64)
    eps = torch.randn_like(x)
    t = 17
    ref = math.sqrt(1 - schedule.betas[t - 1]) * x + math.sqrt(schedule.betas[t - 1]) * eps
    torch.testing.assert_close(q_step(x, t, eps, schedule), ref)
    # one step from x_0 is the closed form at t = 1
    torch.testing.assert_close(q_step(x, 1, eps, schedule), q_sample(x, 1, eps, schedule))


@pytest.mark.parametrize("upto", [5, 300, 1000])
def test_chain_agrees_with_closed_form_in_distribution(schedule, upto):
    """Monte Carlo: N chains from a fixed x_0; per-pixel mean sqrt(abar) x0 and variance 1 - abar."""
    n, pixels = 4000, 8
    x0 = torch.linspace(-1, 1, pixels, dtype=torch.float64).reshape(1, 1, 1, pixels).expand(n, 1, 1, pixels)
    g = torch.Generator().manual_seed(upto)
    records = dict(q_chain(x0, schedule, upto=upto, generator=g, record_every=max(1, upto // 3)))
    x = records[upto]
    ab = schedule.alpha_bar_at(upto)
    mean, var = x.mean(0), x.var(0)
    exp_mean, exp_var = math.sqrt(ab) * x0[0], 1 - ab
    # standard error of the mean is sqrt(var / n); of the variance about var * sqrt(2 / n)
    se_mean = math.sqrt(exp_var / n)
    assert torch.all((mean - exp_mean).abs() < 5 * se_mean), (mean - exp_mean).abs().max()
    assert torch.all((var - exp_var).abs() < 5 * exp_var * math.sqrt(2 / n)), (var - exp_var).abs().max()
    # the recorded steps: 0, every record_every-th step, and the last
    assert sorted(records) == sorted({0, upto, *range(max(1, upto // 3), upto + 1, max(1, upto // 3))})


def test_chain_recording_and_generator():
    sch = make_schedule("linear", 50)
    x0 = torch.zeros(2, 1, 2, 2)
    a = [t for t, _ in q_chain(x0, sch, upto=20, record_every=6)]
    assert a == [0, 6, 12, 18, 20]
    r1 = list(q_chain(x0, sch, upto=10, generator=torch.Generator().manual_seed(5)))
    r2 = list(q_chain(x0, sch, upto=10, generator=torch.Generator().manual_seed(5)))
    assert all(torch.equal(p[1], q[1]) for p, q in zip(r1, r2))
    assert len(list(q_chain(x0, sch))) == 51


@pytest.mark.parametrize("bad", [-1, 1001, [0, 1001]])
def test_out_of_range_t(bad):
    sch = make_schedule("linear", 1000)
    x0 = torch.zeros(2, 1, 2, 2)
    with pytest.raises(ValueError):
        q_sample(x0, bad, torch.zeros_like(x0), sch)


def test_q_step_and_q_chain_reject_bad_steps():
    sch = make_schedule("linear", 100)
    x = torch.zeros(1, 1, 2, 2)
    for t in (0, 101):
        with pytest.raises(ValueError):
            q_step(x, t, x, sch)
    with pytest.raises(ValueError):
        list(q_chain(x, sch, upto=101))
