"""The guided tour's content: every answer equals the number computed independently, with numpy written out here."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

from explainer.views import tour

T = 1000
TABS = {"forward", "compare", "reverse", "noise", "architecture", "lab", "math"}
WIDGETS = {"forward": {"t", "schedule", "seed"}, "compare": {"t", "seed"},
           "reverse": {"digit", "guidance", "sampler", "steps", "schedule", "seed", "compare", "steps_b", "where"},
           "noise": {"source", "digit", "guidance", "num_t", "seed"}, "architecture": {"t", "digit", "seed"},
           "lab": {"data", "t", "sampler", "seed"}}


def linear_abar() -> np.ndarray:
    return np.cumprod(1 - np.linspace(1e-4, 0.02, T))


def cosine_abar() -> np.ndarray:
    f = lambda t: np.cos((t / T + 0.008) / 1.008 * np.pi / 2) ** 2  # Nichol & Dhariwal 2021, eq. 17
    t = np.arange(1, T + 1)
    betas = np.minimum(1 - f(t) / f(t - 1), 0.999)
    return np.cumprod(1 - betas)


def bold_numbers(md: str) -> list[float]:
    """The numbers set in bold in an answer (what the learner is asked for)."""
    return [float(m.replace(",", "")) for m in re.findall(r"\*\*(?:t = )?([-\d.,e]+)\*\*", md)]


def test_steps_are_well_formed():
    assert 10 <= len(tour.STEPS) <= 16
    for s in tour.STEPS:
        sentences = [x for x in re.split(r"(?<=[.!?:])\s+(?=[A-Z])", s.text) if x.strip()]
        assert 2 <= len(sentences) <= 5, s.title
        assert s.tab in TABS and s.question.endswith("?")
        for key in s.settings:
            tab, widget = key.split(".")
            assert tab == s.tab and widget in WIDGETS[tab], key


def test_signal_left_and_noise_size():
    lin, cos = linear_abar(), cosine_abar()
    assert bold_numbers(tour.reveal(0, None)) == [pytest.approx(math.sqrt(lin[-1]), rel=1e-3)]
    assert bold_numbers(tour.reveal(1, None)) == [pytest.approx(math.sqrt(1 - lin[499]), rel=1e-3)]
    assert bold_numbers(tour.reveal(2, None)) == [pytest.approx(math.sqrt(lin[499]), rel=1e-3),
                                                  pytest.approx(math.sqrt(cos[499]), rel=1e-3)]


def test_steps_near_pure_noise():
    assert bold_numbers(tour.reveal(3, None)) == [int(np.sum(linear_abar() < 0.01)), int(np.sum(cosine_abar() < 0.01))]
    assert bold_numbers(tour.reveal(3, None)) == [327, 65]  # the literature's sanity values


def test_first_reverse_step_sigma():
    """The first of 100 linspace-respaced steps: beta' and the posterior variance written out (Ho et al. eq. 7)."""
    abar = linear_abar()
    kept = np.round(np.linspace(0, T - 1, 100)).astype(int) + 1  # improved-diffusion's even spacing, paper t
    a, a_prev = abar[kept[-1] - 1], abar[kept[-2] - 1]
    beta = 1 - a / a_prev
    sigma = math.sqrt(beta * (1 - a_prev) / (1 - a))
    assert bold_numbers(tour.reveal(5, FakeModel())) == [pytest.approx(sigma, rel=1e-3)]
    assert tour.first_step_sigma()["beta"] == pytest.approx(beta, rel=1e-12)


class FakeModel:
    """Only what the schedule-only answers read."""

    class schedule:
        name = "linear"
        T = 1000


def test_x0_amplification_and_respacing():
    abar = linear_abar()
    assert bold_numbers(tour.reveal(6, FakeModel()))[0] == pytest.approx(math.sqrt((1 - abar[-1]) / abar[-1]), rel=1e-3)
    kept = np.round(np.linspace(0, T - 1, 10)).astype(int) + 1
    ab = abar[kept - 1]
    betas = 1 - ab / np.concatenate([[1.0], ab[:-1]])  # respaced beta' (Nichol & Dhariwal 2021, sec. 4)
    assert bold_numbers(tour.reveal(7, FakeModel())) == [pytest.approx(betas[0], rel=1e-3),
                                                         pytest.approx(betas[-1], rel=1e-3)]


def test_other_schedule_training_step():
    """The linear training step of the cosine schedule's sigma at t = 500, interpolated in log sigma (brute force)."""
    lin, cos = linear_abar(), cosine_abar()
    log_sigma = 0.5 * np.log((1 - lin) / lin)
    target = 0.5 * np.log((1 - cos[499]) / cos[499])
    k = int(np.flatnonzero(log_sigma <= target)[-1])  # the step below; k + 1 the one above
    step = k + 1 + (target - log_sigma[k]) / (log_sigma[k + 1] - log_sigma[k])
    assert bold_numbers(tour.reveal(8, FakeModel())) == [round(step, 1)]


def test_ddim_and_guidance():
    assert bold_numbers(tour.reveal(9, None)) == [0.0]
    assert tour.guidance_weights(3.0) == (3.0, -2.0)
    assert "3 · ε_cond − 2 · ε_uncond" in tour.reveal(12, None)


def test_few_ode_steps_and_what_heun_pays(tiny_model):
    """The two sampler steps' numbers against the samplers run here with the eager network and the same noise."""
    from explainer.diffusion.respacing import make_chain
    from explainer.diffusion.samplers import run
    import torch
    kw = dict(labels=torch.tensor([3]), guidance=tiny_model.recommended_guidance, null_label=tiny_model.null_label,
              clip_x0=tiny_model.recommended_clip_x0, seed=0)
    final = lambda m, n, spacing: run(tiny_model.eps, make_chain(tiny_model.schedule, n, spacing), (1, 1, 28, 28),
                                      method=m, **kw)
    ref = final("heun", 50, "karras")
    rms = lambda x: float(((x - ref) ** 2).mean().sqrt())
    expected = [rms(final("dpmpp-2m", 10, "karras")), rms(final("ddim", 10, "linspace")), rms(final("ddpm", 10, "linspace"))]
    assert bold_numbers(tour.reveal(10, tiny_model)) == [pytest.approx(e, abs=6e-4) for e in expected]
    md = tour.reveal(11, tiny_model)
    assert bold_numbers(md) == [19] and f"{rms(final('heun', 10, 'karras')):.3f} from the finely solved" in md


def test_model_answers(tiny_model):
    md = tour.reveal(13, tiny_model)
    assert bold_numbers(md) == [sum(p.numel() for p in tiny_model.net.parameters())]
    s = tour.predicted_noise_std(tiny_model)
    assert s["sqrt_beta"] == pytest.approx(math.sqrt(np.linspace(1e-4, 0.02, T)[s["t"] - 1]), rel=1e-12)
    md = tour.reveal(4, tiny_model)
    assert bold_numbers(md) == [pytest.approx(s["eps_hat"], rel=1e-3)] and f"t = {s['t']}" in md


def test_steps_that_need_a_model_say_so_without_one():
    needing = [i for i, s in enumerate(tour.STEPS) if s.needs_model]
    assert needing == [4, 10, 11, 13]  # the network's prediction, the samplers against its ODE, its parameters
    for i in needing:
        assert "not loaded" in tour.reveal(i, None)


@pytest.mark.parametrize("bad", [-1, len(tour.STEPS), "x", None, 1.5])
def test_bad_step_index(bad):
    with pytest.raises(ValueError, match="tour step"):
        tour.step_markdown(bad)


def test_show_me_names_the_tab_the_settings_and_the_run():
    keys = tour.setting_keys()
    assert keys == sorted(set(keys))
    for i, s in enumerate(tour.STEPS):
        tab, settings, run = tour.show_me(i)
        assert tab == s.tab and settings == s.settings and set(settings) <= set(keys)
        assert run == (tab in {"reverse", "noise", "architecture", "lab"})  # the tabs whose picture needs a press
    assert set(tour.TAB_INTROS) >= {"tour"} | TABS


def test_exact_average_size_written_out():
    """1 / sum w_i^2 of the posterior over the two moons points, with the softmax written out in numpy."""
    from explainer.views.lab import lab_data
    import torch

    pts = lab_data("two moons").points.astype(np.float64)
    eps = torch.randn(1, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64).numpy()
    abar = linear_abar()
    got = tour.exact_average_size()
    for t in (1000, 100, 10):
        x_t = math.sqrt(abar[t - 1]) * pts[0] + math.sqrt(1 - abar[t - 1]) * eps[0]
        logits = -((x_t - math.sqrt(abar[t - 1]) * pts) ** 2).sum(1) / (2 * (1 - abar[t - 1]))
        w = np.exp(logits - logits.max())
        w /= w.sum()
        assert got[t] == pytest.approx(1 / (w ** 2).sum(), rel=1e-9)
    assert got[1000] > 1900 > got[100] > got[10]  # the whole data set at t = T, a neighbourhood at small t
    assert bold_numbers(tour.reveal(14, None)) == [round(got[1000]), round(got[100]), round(got[10])]
