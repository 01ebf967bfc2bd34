"""DDPM explainer: a Gradio 6 app that wires widgets to the backend views in explainer/ (and nothing more).

Run ``python app.py``: it serves on 127.0.0.1:7860 (or GRADIO_SERVER_NAME / GRADIO_SERVER_PORT) with the
checkpoint in checkpoints/mnist-ddpm, or the folder named by $DDPM_EXPLAINER_CHECKPOINT.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import gradio as gr
import torch

from explainer.views import arch as va
from explainer.views import forward as vf
from explainer.views import histogram as vh
from explainer.views import equations as vm
from explainer.views import noise as vn
from explainer.views import reverse as vr
from explainer.views import step as vs
from explainer.views import model_slot as views
from explainer.render.images import MAX_FILE_BYTES
from explainer.paths import ASSETS
from explainer.views.inputs import GUIDANCE_MAX, SEED_MAX, UNCONDITIONAL, digit_choices
from explainer.views.model_slot import ModelUnavailable

PHOTOS = [str(ASSETS / n) for n in ("astronaut.jpg", "camera.png", "coffee.jpg", "chelsea.jpg")]
DIGITS = [str(ASSETS / f"digit_{d}.png") for d in range(10)]
HEAVY = dict(concurrency_id="model", concurrency_limit=2)  # network work: queued, two at a time
CHEAP = dict(concurrency_limit=None, show_progress="hidden")  # instant handlers: run concurrently, no spinner
USER_ERRORS = (ValueError, ModelUnavailable)  # ImageError is a ValueError
# Gradio floats an image's label over the picture's top-left corner, where it hid the first frames of the wide
# strips and the top of x_t; this moves every labelled picture down by the label's height instead.
CSS = ".block:has(> label.float) > .image-container { padding-top: 28px; box-sizing: border-box; }"
# Output formats: JPEG for photos and noise that change on every slider move (it encodes a noisy picture far
# faster than Gradio's default WebP; README's Speed section has the numbers), PNG for crisp digits and plots.


class UploadImage(gr.Image):
    """gr.Image that hands the uploaded file's path to the backend unopened; explainer.render.images validates it."""

    is_template = True  # render with gr.Image's frontend

    def preprocess(self, payload):
        if payload is None or payload.path is None:
            return super().preprocess(payload)
        return str(payload.path)


def clear_errors(fn):
    """Show backend errors (bad input, missing model) as a gr.Error message instead of a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as e:
            raise gr.Error(str(e)) from None
    return wrapper


@dataclass
class AppContext:
    """What every tab builder needs: the model slot and the class choices it offers."""

    slot: views.ModelSlot
    classes: list
    default_class: str

    @property
    def model(self):
        return self.slot.model

    @property
    def T(self) -> int:
        return self.model.schedule.T if self.model is not None else vf.T

    def need_model(self):
        return self.slot.require()


def forward_tab(demo: gr.Blocks) -> None:
    """Forward diffusion: x_t from the closed form, numbers, curves, histogram and strips."""
    with gr.Tab("Forward diffusion", id="forward"):
        with gr.Row():
            with gr.Column():
                f_image = UploadImage(PHOTOS[0], type="filepath", label="x_0 (pick an example or upload)",
                                      sources=["upload", "clipboard"], height=300, elem_id="fwd-image")
                gr.Examples(PHOTOS + DIGITS[:3], inputs=f_image, examples_per_page=8)
                f_t = gr.Slider(0, vf.T, value=500, step=1, label="t", elem_id="fwd-t")
                f_schedule = gr.Radio(list(vf.SCHEDULE_NAMES), value="linear", label="schedule",
                                      elem_id="fwd-schedule")
                f_seed = gr.Number(0, precision=0, minimum=0, maximum=SEED_MAX, label="seed (noise eps)")
            with gr.Column():
                f_xt = gr.Image(label="x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε", height=300, interactive=False,
                                elem_id="fwd-xt", format="jpeg")
                f_numbers = gr.Markdown(elem_id="fwd-numbers")
        with gr.Row():
            f_curves = gr.Image(label="mean and variance of q(x_t | x_0), both schedules, cursor at t",
                                interactive=False, elem_id="fwd-curves", height=330, format="png")
            with gr.Column():
                f_hist = gr.Image(label="pixel values of x_t against pure noise N(0, 1)", interactive=False,
                                  elem_id="fwd-hist", height=330, format="png")
                f_hist_text = gr.Markdown(elem_id="fwd-hist-text")
        f_strip10 = gr.Image(label="10 frames from the closed form (one ε)", interactive=False,
                             elem_id="fwd-strip10", format="jpeg")
        f_strip1000 = gr.Image(label="the 1000-step Markov chain (fresh noise each step), every 100th step",
                               interactive=False, elem_id="fwd-strip1000", format="jpeg")

    # picture, numbers and curves follow the slider; strips when image/schedule/seed change
    f_inputs = [f_image, f_t, f_schedule, f_seed]
    gr.on([demo.load, f_t.change, f_schedule.change, f_seed.change, f_image.change], clear_errors(vf.forward_noise),
          f_inputs, [f_xt, f_numbers], api_name="forward_noise", trigger_mode="always_last", **CHEAP)
    gr.on([demo.load, f_t.change, f_schedule.change], clear_errors(vf.schedule_curves_image), [f_t, f_schedule],
          f_curves, api_name="forward_curves", trigger_mode="always_last", **CHEAP)
    gr.on([demo.load, f_t.change, f_schedule.change, f_seed.change, f_image.change],
          clear_errors(vh.pixel_histogram_view), f_inputs, [f_hist, f_hist_text], api_name="forward_histogram",
          trigger_mode="always_last", **CHEAP)
    gr.on([demo.load, f_image.change, f_schedule.change, f_seed.change], clear_errors(vf.forward_strips),
          [f_image, f_schedule, f_seed], [f_strip10, f_strip1000], api_name="forward_strips",
          concurrency_id="plots", concurrency_limit=2)


def compare_tab(demo: gr.Blocks) -> None:
    """Compare schedules: the same x_0 and eps under linear and cosine at one t."""
    with gr.Tab("Compare schedules", id="compare"):
        with gr.Row():
            c_image = UploadImage(PHOTOS[0], type="filepath", label="x_0", sources=["upload", "clipboard"],
                                  height=220)
            with gr.Column():
                gr.Examples(PHOTOS + DIGITS[:3], inputs=c_image, examples_per_page=8)
                c_t = gr.Slider(0, vf.T, value=300, step=1, label="t (same for both)", elem_id="cmp-t")
                c_seed = gr.Number(0, precision=0, minimum=0, maximum=SEED_MAX, label="seed (same noise)")
        with gr.Row():
            c_linear = gr.Image(label="linear", height=280, interactive=False, elem_id="cmp-linear", format="jpeg")
            c_cosine = gr.Image(label="cosine", height=280, interactive=False, elem_id="cmp-cosine", format="jpeg")
        c_text = gr.Markdown()
        c_curves = gr.Image(label="ᾱ_t and log SNR of both schedules (shaded: steps near pure noise)",
                            interactive=False, elem_id="cmp-curves", height=290, format="png")

    gr.on([demo.load, c_t.change, c_seed.change, c_image.change], clear_errors(vf.compare_schedules),
          [c_image, c_t, c_seed], [c_linear, c_cosine, c_text], api_name="compare_schedules",
          trigger_mode="always_last", **CHEAP)
    gr.on([demo.load, c_t.change], clear_errors(vf.compare_curves_image), [c_t], c_curves, api_name="compare_curves",
          trigger_mode="always_last", **CHEAP)


def stream_walk(ctx: AppContext, gifs: vr.GifStore):
    """The reverse walk handler: streams each walk's panel, then the recorded walks, scrubber, strip and GIF."""
    def reverse_walk(digit, guidance, sampler, steps, schedule, seed, compare_mode, steps_b, progress=gr.Progress()):
        try:
            for u in vr.reverse_walk(ctx.need_model(), digit, guidance, sampler, steps, schedule, seed, compare_mode,
                                     steps_b):
                progress((u.step, u.total), desc="sampling")
                panels = [p if p is not None else gr.skip() for p in u.panels]
                if len(panels) == 1:  # one walk: hide the second picture
                    panels.append(gr.Image(value=None, visible=False) if u.step == 0 else gr.skip())
                elif u.step == 0:
                    panels[1] = gr.Image(value=u.panels[1], visible=True)
                if not u.finished:
                    yield *panels, u.status, gr.skip(), gr.skip(), gr.skip(), gr.skip()
                    continue
                last = u.walks[0].done
                yield (*panels, u.status, u.walks, gr.Slider(maximum=last, value=last, interactive=True),
                       vr.walk_strip(u.walks), gifs.save(u.walks))
        except USER_ERRORS as e:
            raise gr.Error(str(e)) from None
    return reverse_walk


def reverse_tab(ctx: AppContext) -> None:
    """Reverse diffusion: streamed walks, side by side, a scrubber and the step taken apart."""
    with gr.Tab("Reverse diffusion", id="reverse"):
        gr.Markdown(ctx.slot.notice(), elem_id="reverse-notice")
        with gr.Row():
            with gr.Column(scale=1):
                r_digit = gr.Dropdown(ctx.classes, value=ctx.default_class, label="digit class")
                r_guidance = gr.Slider(0, GUIDANCE_MAX, value=3.0, step=0.5,
                                       label="guidance scale w (1 = plain conditional, 0 = unconditional)")
                r_sampler = gr.Radio(list(vr.SAMPLERS), value="DDPM", label="sampler")
                r_steps = gr.Slider(vr.MIN_STEPS, ctx.T, value=100, step=1, label="inference steps",
                                    elem_id="rev-steps")
                r_schedule = gr.Radio(list(vr.INFERENCE_SCHEDULES), value="training",
                                      label="inference schedule (the training one or the other one)")
                r_seed = gr.Number(0, precision=0, minimum=0, maximum=SEED_MAX, label="seed")
                r_compare = gr.Dropdown(list(vr.COMPARE_MODES), value="off", label="side by side (same starting noise)")
                r_steps_b = gr.Slider(vr.MIN_STEPS, ctx.T, value=20, step=1,
                                      label="second walk's steps ('two step counts')")
                with gr.Row():
                    r_run = gr.Button("Sample", variant="primary", elem_id="rev-run")
                    r_stop = gr.Button("Stop", variant="stop", elem_id="rev-stop")
            with gr.Column(scale=2):
                with gr.Row():
                    r_panel_a = gr.Image(label="walk", interactive=False, elem_id="rev-a", format="png")
                    r_panel_b = gr.Image(label="second walk", interactive=False, elem_id="rev-b", format="png")
                r_status = gr.Markdown(elem_id="rev-status")
                r_scrub = gr.Slider(0, 1, value=0, step=1, label="scrub through the recorded walk",
                                    interactive=False, elem_id="rev-scrub")
                r_frame = gr.Image(label="recorded frame", interactive=False, elem_id="rev-frame", format="png")
                r_step = gr.Image(label="the step from this frame, taken apart: x_t' = (x_t without the "
                                  "scaled eps_hat) + sigma z", interactive=False, elem_id="rev-step", format="png")
                r_step_text = gr.Markdown(elem_id="rev-step-text")
                r_strip = gr.Image(label="10 frames of the walk (the article's figure 9)", interactive=False,
                                   format="png")
                r_gif = gr.File(label="the walk as a GIF", interactive=False)
        r_walks = gr.State(None)

    walk = r_run.click(stream_walk(ctx, vr.GifStore()),
                       [r_digit, r_guidance, r_sampler, r_steps, r_schedule, r_seed, r_compare, r_steps_b],
                       [r_panel_a, r_panel_b, r_status, r_walks, r_scrub, r_strip, r_gif],
                       api_name="reverse_walk", **HEAVY)
    r_stop.click(None, None, None, cancels=[walk])
    # endpoints that read a session's recorded result: callable, but not in the API docs
    r_scrub.change(clear_errors(vr.walk_frame), [r_walks, r_scrub], r_frame, api_name="reverse_scrub",
                   api_visibility="undocumented", **CHEAP)
    r_scrub.change(clear_errors(vs.step_anatomy), [r_walks, r_scrub], [r_step, r_step_text], api_name="reverse_step",
                   api_visibility="undocumented", **CHEAP)


def computed(result):
    """The tab's recorded result, or a clear message when nothing was computed yet."""
    if result is None:
        raise ValueError("nothing computed yet: press 'Compute' first")
    return result


def noise_tab(ctx: AppContext) -> None:
    """Subtract all predicted noise: x0_hat | x_t | eps_hat at every timestep."""
    @clear_errors
    def noise_removal(source, image, digit, guidance, num_t, seed):
        res = vn.noise_removal(ctx.need_model(), source, image, digit, guidance, num_t, seed)
        triplet, text = vn.noise_triplet(res, 0)
        return (vn.noise_grid(res), res, gr.Slider(maximum=len(res) - 1, value=0, interactive=True), triplet, text,
                vn.noise_error_curve(res, 0))

    with gr.Tab("Subtract all predicted noise", id="noise"):
        gr.Markdown(ctx.slot.notice())
        with gr.Row():
            with gr.Column(scale=1):
                n_source = gr.Radio(list(vn.SOURCES), value="real digit", label="source")
                n_image = UploadImage(DIGITS[3], type="filepath", label="real digit (28x28 after conversion)",
                                      sources=["upload", "clipboard"], height=160)
                gr.Examples(DIGITS, inputs=n_image, label="held-out digits", examples_per_page=10)
                n_digit = gr.Dropdown(ctx.classes, value=UNCONDITIONAL, label="condition on class")
                n_guidance = gr.Slider(0, GUIDANCE_MAX, value=1.0, step=0.5, label="guidance scale")
                n_num_t = gr.Slider(vn.MIN_T, min(vn.MAX_T, ctx.T), value=50, step=1, label="timesteps")
                n_seed = gr.Number(0, precision=0, minimum=0, maximum=SEED_MAX, label="seed")
                n_run = gr.Button("Compute", variant="primary", elem_id="noise-run")
            with gr.Column(scale=2):
                n_index = gr.Slider(0, 1, value=0, step=1, label="timestep (index, noisiest first)",
                                    interactive=False, elem_id="noise-index")
                n_triplet = gr.Image(label="x0_hat | x_t | eps_hat", interactive=False, elem_id="noise-triplet",
                                     format="png")
                n_text = gr.Markdown()
                n_curve = gr.Plot(label="error per t")
        n_grid = gr.Image(label="every timestep: x0_hat | x_t | eps_hat", interactive=False, elem_id="noise-grid",
                          format="png")
        n_result = gr.State(None)

    n_run.click(noise_removal, [n_source, n_image, n_digit, n_guidance, n_num_t, n_seed],
                [n_grid, n_result, n_index, n_triplet, n_text, n_curve], api_name="noise_removal", **HEAVY)
    n_index.change(clear_errors(lambda result, index: vn.noise_triplet(computed(result), index)), [n_result, n_index],
                   [n_triplet, n_text], api_name="noise_removal_at", api_visibility="undocumented", **CHEAP)
    n_index.release(clear_errors(lambda result, index: vn.noise_error_curve(computed(result), int(index))),
                    [n_result, n_index], n_curve, api_name="noise_removal_curve", api_visibility="undocumented",
                    concurrency_id="plots", concurrency_limit=2, show_progress="hidden")


def architecture_tab(ctx: AppContext) -> None:
    """Architecture: the U-Net's stages, how t and the class enter, and feature maps of an x_t."""
    with gr.Tab("Architecture", id="architecture"):
        gr.Markdown(ctx.slot.notice())
        arch_ok = ctx.model is not None and isinstance(ctx.model.net, va.UNet)
        gr.Dataframe(va.architecture_table(ctx.model) if arch_ok else None, label="the U-Net's stages",
                     interactive=False)
        gr.Markdown(va.conditioning_markdown(ctx.model) if arch_ok else "", elem_id="arch-cond")
        with gr.Row():
            with gr.Column(scale=1):
                a_image = UploadImage(DIGITS[3], type="filepath", label="digit", height=160,
                                      sources=["upload", "clipboard"])
                gr.Examples(DIGITS, inputs=a_image, examples_per_page=10)
                a_t = gr.Slider(1, ctx.T, value=300, step=1, label="t")
                a_digit = gr.Dropdown(ctx.classes, value=ctx.default_class, label="class given to the network")
                a_seed = gr.Number(0, precision=0, minimum=0, maximum=SEED_MAX, label="seed")
                a_run = gr.Button("Show feature maps", variant="primary", elem_id="arch-run")
            with gr.Column(scale=2):
                a_xt = gr.Image(label="x_t", interactive=False, height=200, elem_id="arch-xt", format="png")
                a_maps = gr.Image(label="feature maps after each stage (first 8 channels, each scaled to "
                                  "its own range)", interactive=False, elem_id="arch-maps", format="png")

    a_run.click(clear_errors(lambda image, t, digit, seed: va.feature_maps(ctx.need_model(), image, t, digit, seed)),
                [a_image, a_t, a_digit, a_seed], [a_xt, a_maps], api_name="feature_maps", **HEAVY)


def math_tab() -> None:
    """Math: the equations each tab uses, with their sources."""
    with gr.Tab("Math", id="math"):
        gr.Markdown(vm.ALL, latex_delimiters=vm.LATEX_DELIMITERS, elem_id="math")


def build_app(slot: views.ModelSlot | None = None) -> gr.Blocks:
    """The whole UI. ``slot``: the model (default: load $DDPM_EXPLAINER_CHECKPOINT or the shipped one)."""
    slot = slot if slot is not None else views.load_slot()
    classes = digit_choices(slot.model)
    ctx = AppContext(slot, classes, "3" if "3" in classes else classes[0])
    with gr.Blocks(title="DDPM explainer", delete_cache=(900, 3600)) as demo:
        gr.Markdown("# Denoising diffusion, step by step\nThe article's figures, live: the forward process in closed "
                    "form, the reverse process with a real trained U-Net, and what the network sees.")
        with gr.Tabs():
            forward_tab(demo)
            compare_tab(demo)
            reverse_tab(ctx)
            noise_tab(ctx)
            architecture_tab(ctx)
            math_tab()
    return demo


def launch(demo: gr.Blocks, **kwargs):
    """Serve ``demo`` as ``python app.py`` does (tests pass host, port and prevent_thread_lock in ``kwargs``)."""
    kwargs = dict(show_error=True, max_file_size=MAX_FILE_BYTES, css=CSS) | kwargs
    return demo.queue(default_concurrency_limit=1).launch(**kwargs)


def configure_threads() -> None:
    """Two heavy events may run at once: give each half of the cores (at least one).

    Call it before ``build_app``: the fast eps path that ``views.load_slot`` builds in the background takes
    the same thread count (one on a 2-core machine, so two walks at once run on two cores, without a lock).
    """
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))


if __name__ == "__main__":
    configure_threads()
    demo = build_app()
    # Host and port: Gradio's own GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, else 127.0.0.1:7860.
    launch(demo)
