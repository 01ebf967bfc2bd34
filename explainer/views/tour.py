"""The guided tour: short steps that tell the story of a diffusion model and drive the live widgets.

Each ``TourStep`` names the tab to open and the widget values that put the telling picture on screen
("Show me"), and asks one question to answer before revealing it. Every answer is computed from the
live objects the tabs use (the schedules, the sampling chain, the loaded network), never typed in.
Widget keys are ``"<tab>.<widget>"``; the app maps them to its components.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..diffusion import exact
from ..diffusion.forward import q_sample
from ..diffusion.respacing import make_chain, training_timesteps
from ..diffusion.samplers import DEFAULT_SPACING, network_calls, run
from ..diffusion.schedules import DDPM_T, make_schedule
from ..model.checkpoint import DiffusionModel
from ..paths import ASSETS
from ..render.display import strip
from .cache import LRU
from .inputs import check_int
from .model_slot import eps_fn_for
from .walk import inference_schedule, other_schedule_name

T = DDPM_T  # the article's number of steps (the forward tabs)


@dataclass(frozen=True)
class TourStep:
    """One step of the tour. ``answer(model)`` returns Markdown with the live number(s); ``model`` may be None."""

    title: str
    text: str
    tab: str  # the tab to open: forward, compare, reverse, noise, architecture, lab or math
    question: str
    answer: Callable[[DiffusionModel | None], str]
    settings: dict = field(default_factory=dict)  # "<tab>.<widget>" -> value set by "Show me"
    needs_model: bool = False  # the answer needs the loaded network
    run: bool = False  # "Show me" also presses the tab's run button (the picture needs the network)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _schedule(name: str, model: DiffusionModel | None = None):
    if model is not None and model.schedule.name == name:
        return model.schedule
    return make_schedule(name, model.schedule.T if model is not None else T)


# ---------------------------------------------------------------- the answers, from the live objects


def signal_left(t: int, names=("linear", "cosine")) -> dict[str, float]:
    """sqrt(alpha_bar_t): how much of x_0's amplitude is left at t (Ho et al. 2020, eq. 4)."""
    return {n: float(math.sqrt(make_schedule(n, T).alpha_bar_at(t))) for n in names}


def _answer_destroyed(_model) -> str:
    s = signal_left(T, ("linear",))["linear"]
    return (f"At t = {T} the linear schedule keeps √ᾱ_T = **{_fmt(s)}** of the amplitude: less than 1 %. "
            f"What is left is, for all practical purposes, pure noise N(0, I).")


def _answer_closed_form(_model) -> str:
    sch = make_schedule("linear", T)
    return (f"√(1 − ᾱ_500) = **{_fmt(float(sch.noise_std_at(500)))}**: one draw of ε scaled by that gives x_500 directly, "
            f"where the chain would add 500 small noises of sizes √β_1 = {_fmt(math.sqrt(sch.betas[0]))} up to "
            f"√β_500 = {_fmt(math.sqrt(sch.betas[499]))}.")


def _answer_signal_500(_model) -> str:
    s = signal_left(500)
    return (f"At t = 500: linear √ᾱ = **{_fmt(s['linear'])}**, cosine √ᾱ = **{_fmt(s['cosine'])}**. "
            "The cosine schedule destroys the picture more slowly in the middle of the process.")


def steps_near_noise(threshold: float = 0.01) -> dict[str, int]:
    """How many of the T steps have alpha_bar_t below ``threshold`` under each schedule."""
    return {n: make_schedule(n, T).steps_near_pure_noise(threshold) for n in ("linear", "cosine")}


def _answer_near_noise(_model) -> str:
    n = steps_near_noise()
    return (f"Linear: **{n['linear']}** of {T} steps have ᾱ_t < 0.01; cosine: **{n['cosine']}**. Steps spent on "
            "pictures that are already pure noise teach the network little.")


def predicted_noise_std(model: DiffusionModel, t: int = 500, seed: int = 0, num_t: int = 20) -> dict[str, float]:
    """At the computed timestep nearest ``t`` of the noise tab's real-image source: std of eps_hat, of the true eps,
    and sqrt(beta_t), the size of the noise added by the last forward step alone."""
    from .noise import noise_removal  # the same computation the noise tab shows

    res = noise_removal(model, "real digit", str(ASSETS / "digit_3.png"), "unconditional", 1.0, num_t, seed)
    i = int(np.argmin([abs(s - t) for s in res.ts]))
    t_i = int(res.ts[i])
    return {"t": t_i, "eps_hat": float(res.eps_hat[i].std()), "eps": float(res.eps.std()),
            "sqrt_beta": float(math.sqrt(model.schedule.betas[t_i - 1]))}


def _answer_predicts_noise(model) -> str:
    s = predicted_noise_std(model)
    return (f"At t = {s['t']} the predicted noise has standard deviation **{_fmt(s['eps_hat'])}** (the true ε: "
            f"{_fmt(s['eps'])}), not √β_t = {_fmt(s['sqrt_beta'])}: the network predicts the whole noise in x_t, "
            "not the small piece added at the last step.")


def first_step_sigma(steps: int = 100, schedule: str = "linear") -> dict[str, float]:
    """The first step of a respaced DDPM walk: beta', the posterior variance's sigma and 1/sqrt(alpha')."""
    c = make_chain(make_schedule(schedule, T), steps).coefficients("ddpm", "beta_tilde").row(0)
    return {"beta": c.beta, "sigma": c.sigma, "inv_sqrt_alpha": c.inv_sqrt_alpha, "eps_coef": c.eps_coef}


def _answer_step(model) -> str:
    name = model.schedule.name if model is not None else "linear"
    c = first_step_sigma(100, name)
    return (f"On 100 respaced steps of the {name} schedule, the first step has β' = {_fmt(c['beta'])}, "
            f"1/√α' = {_fmt(c['inv_sqrt_alpha'])}, β'/√(1 − ᾱ) = {_fmt(c['eps_coef'])} and σ = √β̃ = "
            f"**{_fmt(c['sigma'])}**: a large step, and a lot of fresh noise.")


def x0_amplification(t: int, schedule: str = "linear") -> float:
    """sigma_t = sqrt(1 - alpha_bar_t) / sqrt(alpha_bar_t): how much x0_hat magnifies an error in eps_hat (eq. 15)."""
    return float(make_schedule(schedule, T).sigma_at(t))


def _answer_blurry(_model) -> str:
    return (f"√(1 − ᾱ_t)/√ᾱ_t is **{_fmt(x0_amplification(T))}** at t = {T} and {_fmt(x0_amplification(100))} at "
            "t = 100 (linear schedule). Any error in ε̂ is multiplied by that; the network hedges and predicts an "
            "average, so x̂_0 is a blurry mean of plausible pictures at large t and sharpens as t falls.")


def respaced_betas(steps: int = 10, schedule: str = "linear") -> np.ndarray:
    """beta' of every step of a respaced chain, noisiest first (Nichol & Dhariwal 2021, sec. 4)."""
    return make_chain(make_schedule(schedule, T), steps).coefficients().beta


def _answer_respacing(model) -> str:
    name = model.schedule.name if model is not None else "linear"
    b = respaced_betas(10, name)
    return (f"With 10 kept steps of the {name} schedule, β' runs from **{_fmt(b[-1])}** (last step) to "
            f"**{_fmt(b[0])}** (first step), against 0.0001 to 0.02 for the 1000 original steps: fewer steps, "
            "each one much larger, computed from ᾱ at the kept steps.")


def other_schedule_step(t: int = 500, training: str = "linear") -> float:
    """The (fractional) training step the network is called with at the other schedule's step t (same sigma)."""
    training_schedule = make_schedule(training, T)
    other = inference_schedule(training_schedule, "other")
    return round(float(training_timesteps(other.alpha_bar_at(t), training_schedule)), 1)


def _answer_other_schedule(model) -> str:
    name = model.schedule.name if model is not None else "linear"
    other = other_schedule_name(name)
    m = other_schedule_step(500, "linear" if name.startswith("linear") else "cosine")
    return (f"At the {other} schedule's t = 500 the network, trained on {name}, is called at its training step "
            f"**t = {m:g}**: the one with the same noise level, interpolated in log sigma between two of its steps.")


def ddim_noise(steps: int = 100, eta: float = 0.0) -> float:
    """The largest fresh-noise scale sigma of any DDIM step on a respaced linear chain (Song et al. 2021, eq. 16)."""
    return float(make_chain(make_schedule("linear", T), steps).coefficients("ddim", eta=eta).sigma.max())


def _answer_ddim(_model) -> str:
    return (f"DDIM with η = 0 adds σ = **{_fmt(ddim_noise(100, 0.0))}** fresh noise at every step: the walk is "
            f"deterministic, so the same x_T always gives the same picture. With η = 1 the largest σ is "
            f"{_fmt(ddim_noise(100, 1.0))}, exactly DDPM's √β̃.")


_ode_errors = LRU(8)


def ode_error(model: DiffusionModel, method: str, steps: int, seed: int = 0, batch: int = 1) -> float:
    """RMS distance ([-1, 1] units) between the picture ``method`` ends on in ``steps`` steps (its own spacing) and
    the same ODE solved finely (Heun, 50 Karras levels, 99 network calls), from the same seeded noise: how far a
    few-step sampler is from the path it follows (for the loaded model, a digit 3 or the first class, card's w).
    Remembered per model: the reference walk is the cost."""
    eps_fn = eps_fn_for(model)

    def measure() -> float:
        shape = (batch, model.channels, model.image_size, model.image_size)
        labels = None if not model.num_classes else torch.zeros(batch, dtype=torch.long) + (3 if model.num_classes
                                                                                              == 10 else 0)
        kw = dict(labels=labels, guidance=model.recommended_guidance, null_label=model.null_label,
                  clip_x0=model.recommended_clip_x0, device=model.device)

        def final(m: str, n: int) -> torch.Tensor:
            chain = make_chain(model.schedule, n, DEFAULT_SPACING[m])
            return run(eps_fn, chain, shape, method=m, seed=seed, **kw).float().cpu()
        ref = _ode_errors.get((model.path, id(model.net), "reference", seed, batch), lambda: final("heun", 50))
        return float(((final(method, steps) - ref) ** 2).mean().sqrt())
    return _ode_errors.get((model.path, id(model.net), method, steps, seed, batch), measure)


def _answer_few_steps(model) -> str:
    dpm, ddim, ddpm = (ode_error(model, m, 10) for m in ("dpmpp-2m", "ddim", "ddpm"))
    return (f"After 10 steps from the same noise, DPM-Solver++(2M) ends **{dpm:.3f}** and DDIM **{ddim:.3f}** (RMS, "
            f"pixels in [−1, 1]) from the picture the finely solved ODE ends on; DDPM, which adds fresh noise at "
            f"every step and so follows no single path, ends **{ddpm:.3f}** from it. The ODE's path from noise to "
            "picture bends slowly, so 10 well-placed steps already land close to its end; DDPM's noise needs many "
            "small steps to be removed again.")


def _answer_heun(model) -> str:
    heun, euler_same_calls, euler_same_steps = ode_error(model, "heun", 10), ode_error(model, "euler", 19), \
        ode_error(model, "euler", 10)
    verdict = ("so at the same cost Heun still lands closer" if heun < euler_same_calls else
               "so at the same cost Euler's smaller steps do as well here: the second call pays off when steps are "
               "coarse")
    return (f"Heun's 10 steps cost **{network_calls('heun', 10)}** network calls (two a step, one into σ = 0). They "
            f"end {heun:.3f} from the finely solved path; Euler ends {euler_same_steps:.3f} from it with 10 calls "
            f"and {euler_same_calls:.3f} with the same 19, {verdict}. Heun's second call corrects the slope: its "
            "error falls about 4x when the steps double, Euler's 2x.")


def guidance_weights(w: float) -> tuple[float, float]:
    """Weights of (eps_cond, eps_uncond) in eps_u + w (eps_c - eps_u) (Ho & Salimans 2022, eq. 6)."""
    return w, 1.0 - w


def _answer_guidance(_model) -> str:
    c, u = guidance_weights(3.0)
    return (f"ε̂ = {_fmt(c)} · ε_cond {'−' if u < 0 else '+'} {_fmt(abs(u))} · ε_uncond: with w = 3 the walk is "
            "pushed away from the unconditional prediction, so the class shows clearly and the pictures vary less.")


def _answer_inputs(model) -> str:
    if model is None:
        return "No model is loaded: the architecture tab needs a checkpoint."
    params = sum(p.numel() for p in model.net.parameters())
    classes = f"{model.num_classes} classes and a null class" if model.num_classes else "no class label"
    return (f"Three inputs: x_t ({model.channels}x{model.image_size}x{model.image_size}), t (as a sinusoidal "
            f"embedding) and the class ({classes}); **{params:,}** parameters in all.")


def exact_average_size(ts=(1000, 100, 10), dataset: str = "two moons", seed: int = 0) -> dict[int, float]:
    """Over how many training points the exact denoiser's x0_hat effectively averages (1 / sum w_i^2) at each t,
    for the first training point noised with one seeded eps (the 2D lab's data and training schedule)."""
    from .lab import TRAINING_SCHEDULE, lab_data

    points = lab_data(dataset).points
    sch = make_schedule(TRAINING_SCHEDULE, T)
    x0 = torch.as_tensor(points[:1], dtype=torch.float64)
    eps = torch.randn(1, points.shape[1], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    out = {}
    for t in ts:
        w = exact.posterior_weights(q_sample(x0, t, eps, sch), float(sch.alpha_bar_at(t)), points)
        out[int(t)] = float(exact.effective_points(w)[0])
    return out


def _answer_lab(_model) -> str:
    n = exact_average_size()
    return (f"About **{n[1000]:.0f}** of the 2,000 points at t = 1000 (x̂_0 is the data's mean), **{n[100]:.0f}** at "
            f"t = 100 and **{n[10]:.0f}** at t = 10: the exact denoiser narrows down to the nearest training points "
            "and copies them, while the network's smoother field also lands between them.")


# ---------------------------------------------------------------- the story


STEPS: tuple[TourStep, ...] = (
    TourStep(
        "1. What the forward process destroys",
        "A diffusion model learns by watching pictures being destroyed. The forward process adds Gaussian noise "
        "in T = 1000 small steps until nothing of the picture is left. Drag t and watch the photo dissolve; the "
        "numbers below it show how much of the original survives.",
        "forward", "How much of the picture's amplitude is left at t = 1000 under the linear schedule?",
        _answer_destroyed, {"forward.t": 1000, "forward.schedule": "linear", "forward.seed": 0}),
    TourStep(
        "2. One step, or all at once",
        "Adding noise step by step is a Markov chain, but the sum of Gaussians is again a Gaussian, so x_t can be "
        "drawn in one go from x_0: x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε. The two strips below the picture show both "
        "ways; they agree in distribution, not pixel by pixel.",
        "forward", "Jumping straight to t = 500: what is the standard deviation of the noise that is added?",
        _answer_closed_form, {"forward.t": 500, "forward.schedule": "linear"}),
    TourStep(
        "3. Two schedules",
        "The schedule decides how fast the picture fades. The linear schedule of the DDPM paper removes most of "
        "the signal early; the cosine schedule keeps it longer. Compare the same photo and the same noise under "
        "both at one t.",
        "compare", "At t = 500, how much of the signal's amplitude is left under each schedule?",
        _answer_signal_500, {"compare.t": 500, "compare.seed": 0}),
    TourStep(
        "4. Steps spent on pure noise",
        "Near the end of the linear schedule the picture is gone long before t = T: many steps show nothing but "
        "noise. The shaded part of the curves marks them.",
        "compare", "How many of the 1000 steps have ᾱ_t below 0.01 under each schedule?",
        _answer_near_noise, {"compare.t": 900}),
    TourStep(
        "5. What the network is trained to predict",
        "The network ε_θ(x_t, t) is shown a noised picture and asked for the noise in it: the whole ε that the "
        "closed form added, not the difference between x_t and x_{t−1}. This is the point learners most often get "
        "wrong. Here a real digit is noised with a known ε, and the prediction stands beside the truth.",
        "noise", "At t = 500, is the predicted noise's standard deviation close to 1 or close to √β_500?",
        _answer_predicts_noise, {"noise.source": "real digit", "noise.num_t": 20, "noise.seed": 0}, True, run=True),
    TourStep(
        "6. One reverse step, taken apart",
        "Sampling runs the process backwards: from x_t, take away the scaled predicted noise, rescale, and add a "
        "little fresh noise σ z. Run a walk, then scrub through it: each frame shows the step taken from it, with "
        "its coefficients.",
        "reverse", "At the first step of a 100-step DDPM walk, how large is σ, the scale of the fresh noise?",
        _answer_step, {"reverse.sampler": "ddpm", "reverse.steps": 100, "reverse.compare": "off",
                       "reverse.schedule": "training", "reverse.seed": 0, "reverse.where": "on the server"}, run=True),
    TourStep(
        "7. Subtract all the predicted noise",
        "What if we removed all of ε̂ at once? x̂_0 = (x_t − √(1 − ᾱ_t) ε̂)/√ᾱ_t is the network's one-shot guess of "
        "the clean picture. At large t it is a blur; it sharpens as t falls. That is why sampling takes many small "
        "steps instead of one.",
        "noise", "By what factor does x̂_0 magnify an error in ε̂ at t = 1000, and at t = 100?",
        _answer_blurry, {"noise.source": "reverse walk", "noise.num_t": 50, "noise.seed": 0}, run=True),
    TourStep(
        "8. Fewer steps at inference",
        "The network was trained on 1000 steps, but it can sample in far fewer: keep a subset of the timesteps "
        "and recompute each step's β' from ᾱ at the kept steps (respacing). Compare 10 and 100 steps from the same "
        "starting noise.",
        "reverse", "With 10 steps, how large are the steps' β' compared with the original 0.0001 to 0.02?",
        _answer_respacing, {"reverse.compare": "two step counts", "reverse.steps": 100, "reverse.steps_b": 10,
                            "reverse.sampler": "ddpm", "reverse.schedule": "training", "reverse.seed": 0, "reverse.where": "on the server"}, run=True),
    TourStep(
        "9. Another schedule at inference",
        "The update can use another schedule than the one the network was trained on; the network is then called "
        "at the training step with the same noise level. Compare the training schedule and the other one from "
        "the same noise.",
        "reverse", "At the other schedule's t = 500, which training step is the network called with?",
        _answer_other_schedule, {"reverse.compare": "training vs other schedule", "reverse.steps": 100,
                                 "reverse.sampler": "ddpm", "reverse.seed": 0, "reverse.where": "on the server"}, run=True),
    TourStep(
        "10. DDPM and DDIM",
        "DDIM takes the same network and the same x̂_0 but moves along a different path: with η = 0 it adds no "
        "fresh noise, so a starting noise always gives the same picture, and it works well with few steps. Run "
        "both side by side from one x_T.",
        "reverse", "How much fresh noise does DDIM with η = 0 add per step?",
        _answer_ddim, {"reverse.compare": "DDPM vs DDIM", "reverse.steps": 50, "reverse.seed": 0, "reverse.where": "on the server"}, run=True),
    TourStep(
        "11. Why a few ODE steps can be enough",
        "DDIM, Euler, Heun and DPM-Solver++ follow one deterministic path from x_T to a picture: the probability-flow "
        "ODE. A smooth path can be followed in few large steps, if the steps are placed well and the solver is "
        "accurate. Run DPM++ 2M with 10 steps beside 100 from the same noise.",
        "reverse", "How far are 10 steps of DPM++ 2M, DDIM and DDPM from the ODE path solved finely?",
        _answer_few_steps, {"reverse.compare": "two step counts", "reverse.sampler": "dpmpp-2m", "reverse.steps": 10,
                            "reverse.steps_b": 100, "reverse.schedule": "training", "reverse.seed": 0, "reverse.where": "on the server"},
        True, run=True),
    TourStep(
        "12. What Heun pays for its accuracy",
        "Heun takes Euler's step, asks the network again at the end of it, and averages the two slopes: a "
        "second-order step for a second network call. The status line counts network calls, not steps. Scrub a "
        "step to see the predictor, the second slope and their average.",
        "reverse", "Heun with 10 steps: how many network calls, and does it beat Euler given the same number?",
        _answer_heun, {"reverse.compare": "off", "reverse.sampler": "heun", "reverse.steps": 10,
                       "reverse.schedule": "training", "reverse.seed": 0, "reverse.where": "on the server"}, True, run=True),
    TourStep(
        "13. Guidance",
        "The network was also trained without labels (a null class), so it can predict noise with and without the "
        "class. Classifier-free guidance mixes the two and pushes away from the unconditional prediction. Try "
        "w = 0, 1 and 3 for one class.",
        "reverse", "With w = 3, what weights do the conditional and unconditional predictions get?",
        _answer_guidance, {"reverse.guidance": 3.0, "reverse.compare": "off", "reverse.steps": 100,
                           "reverse.sampler": "ddpm", "reverse.seed": 0, "reverse.where": "on the server"}, run=True),
    TourStep(
        "14. What goes into the U-Net",
        "The network sees x_t at full size, the timestep as a sinusoidal embedding and the class as a learned "
        "vector; both are added inside every residual block. The feature maps show what each stage computes from "
        "an x_t.",
        "architecture", "What are the network's inputs, and how many parameters does it have?",
        _answer_inputs, {"architecture.t": 600, "architecture.seed": 0}, True, run=True),
    TourStep(
        "15. What the network has learned about the distribution",
        "In two dimensions the whole data set fits on screen. The exact denoiser of the training points, "
        "E[x_0 | x_t] in closed form, is a weighted average of those points; the network only approximates it. "
        "Run both from the same noise and compare where the particles land and the arrows at t.",
        "lab", "Over how many of the 2,000 training points does the exact x̂_0 effectively average at t = 1000, "
        "t = 100 and t = 10?",
        _answer_lab, {"lab.data": "two moons", "lab.t": 100, "lab.sampler": "DDPM", "lab.seed": 0}, run=True),
)

# One or two sentences at the top of every tab: what it shows and what to try first.
WHAT_IT_IS = ("**An interactive explainer of diffusion models:** watch a picture turn into noise, and a trained "
              "network turn noise back into a picture, step by step.")
OPENING_TS = (0, 100, 200, 350, 500, 1000)


def opening_strip(side: int = 64) -> np.ndarray:
    """The tour's first picture: the bundled photo noised by the forward process (linear schedule, closed form,
    one eps) at a few t, so a visitor sees at once that the app is about pictures and noise."""
    from .forward import ARTICLE_SCHEDULES, closed_form_uint8, noise_like, prepare_image

    x0 = prepare_image(str(ASSETS / "astronaut.jpg"), max_side=side)
    eps = noise_like(x0, 0)
    frames = [closed_form_uint8(x0, eps, float(ARTICLE_SCHEDULES["linear"].alpha_bar_at(t))) for t in OPENING_TS]
    return strip(frames, [f"t={t}" for t in OPENING_TS])


TAB_INTROS = {
    "tour": "Fifteen short steps through the ideas behind a diffusion model. Read a step, press **Show me** to "
            "open the tab that makes its point with the right settings, guess the answer to its question, then "
            "press **Reveal** to check your guess against the live numbers.",
    "forward": "The forward process q(x_t | x_0) turns a picture into noise. Drag **t** from 0 to 1000 and flip "
               "the schedule: the picture, the numbers and the histogram follow at once, computed in your browser.",
    "compare": "The same picture and the same noise ε under the linear and the cosine schedule at one t. Move "
               "**t** to around 500 and see which schedule keeps more of the picture.",
    "reverse": "A trained network turns pure noise x_T into a picture, one step at a time. Press **Sample**, "
               "then drag the scrubber to see any step taken apart; try fewer steps, another sampler or another schedule.",
    "noise": "At every t the network's predicted noise ε̂ gives a one-shot guess of the clean picture, x̂_0. "
             "Press **Compute** and move the timestep slider: x̂_0 is blurry at large t and sharp at small t.",
    "architecture": "What the U-Net is made of and what it computes: its stages, how t and the class enter, and "
                    "the feature maps of one x_t. Press **Show feature maps**, then try a small and a large t.",
    "lab": "",  # the lab tab has its own longer introduction
    "math": "Every formula the tabs use, with the paper and equation it comes from. Symbols: x_0 the clean "
            "picture, x_t the noised one, ε the noise, ε̂ = ε_θ(x_t, t) the network's prediction, β_t, α_t = 1 − β_t "
            "and ᾱ_t their products.",
}


def step(index) -> TourStep:
    """Tour step ``index`` (0-based), checked."""
    return STEPS[check_int("tour step", index, 0, len(STEPS) - 1)]


def step_markdown(index) -> str:
    """The step's title, text and question, as Markdown (the answer stays hidden until revealed)."""
    s = step(index)
    return f"### {s.title}\n\n{s.text}\n\n**Before you look:** {s.question}"


def show_me(index) -> tuple[str, dict, bool]:
    """What "Show me" does: the tab to open, the widget values to set and whether to press the tab's run button."""
    s = step(index)
    return s.tab, dict(s.settings), s.run


def setting_keys() -> list[str]:
    """Every "<tab>.<widget>" some step sets, in a fixed order (the app's outputs of "Show me")."""
    return sorted({k for s in STEPS for k in s.settings})


def reveal(index, model: DiffusionModel | None) -> str:
    """The answer to the step's question, computed from the live objects."""
    s = step(index)
    if s.needs_model and model is None:
        return "This step needs the model, which is not loaded (see the model tabs for why)."
    return "**Answer:** " + s.answer(model)
