"""DDPM explainer: a Gradio 6 app that wires widgets to the backend views in explainer/ (and nothing more).

Run ``python app.py``: it serves on 127.0.0.1:7860 (or GRADIO_SERVER_NAME / GRADIO_SERVER_PORT) with the
checkpoint in checkpoints/mnist-ddpm, or the folder named by $DDPM_EXPLAINER_CHECKPOINT.
"""
from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import weakref
from dataclasses import dataclass, field

import gradio as gr
import torch
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.middleware import Middleware

from explainer.views import arch as va
from explainer.views import client as vc
from explainer.views import forward as vf
from explainer.views import histogram as vh
from explainer.views import equations as vm
from explainer.views import noise as vn
from explainer.views import reverse as vr
from explainer.views import step as vs
from explainer.views import tour as vt
from explainer.views import model_slot as views
from explainer.server import guard, memory
from explainer.server import sessions as vsess
from explainer.render.images import MAX_FILE_BYTES
from explainer.paths import ASSETS
from explainer.views.inputs import (DIGIT_EXAMPLES, EMOJI_EXAMPLES, GUIDANCE_MAX, SEED_MAX, UNCONDITIONAL, class_word,
                                    default_class, default_example, class_choices, example_images, image_word)
from explainer.views.model_slot import ModelUnavailable

PHOTOS = [str(ASSETS / n) for n in ("astronaut.jpg", "camera.png", "coffee.jpg", "chelsea.jpg")]
DIGITS = [str(ASSETS / f"digit_{d}.png") for d in range(10)]
# Network work is queued in MODEL_SLOTS slots (the queue tells each waiting page its place). Each event's torch ops
# take half the cores (configure_threads), so four at once ask for twice the cores: each walk runs slower, but a
# class's walks start streaming at once instead of waiting for the one before to end.
MODEL_SLOTS = 4
HEAVY = dict(concurrency_id="model", concurrency_limit=MODEL_SLOTS)
CHEAP = dict(concurrency_limit=None, show_progress="hidden")  # instant handlers: run concurrently, no spinner
USER_ERRORS = (ValueError, ModelUnavailable)  # ImageError is a ValueError
# Gradio floats a picture's label over its top-left corner (where it hid the first frames of the wide strips and
# the top of x_t) and the picture's toolbar over its top-right one. Here the label of a picture or plot sits above
# it, in the flow, so a label that wraps on a narrow screen pushes the picture down, and stops short of the toolbar,
# which moves up beside it (onto the block: its picture's box is no longer its positioning box). The sketchpad's
# canvas and toolbar keep their box, under the label.
CSS = """
.block:has(> label.float):has(> .image-container, > .matplotlib) { display: flex; flex-direction: column; }
.block:has(> label.float):has(> .image-container, > .matplotlib) > label.float {
    position: relative; align-self: flex-start; max-width: calc(100% - 84px); }
.block:has(> label.float) > .image-container { flex: 1 1 auto; min-height: 0; }
.block:has(> label.float) > .image-container:not(:has(.pixi-target)) { position: static; }
.block:has(> label.float) > .image-container:has(.pixi-target) { position: relative; }
"""
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
    """What the model tabs need: the models on offer, the session's chosen model, and what follows a switch.

    ``model_name`` holds the session's model (a gr.State: the endpoints keep their inputs, and API users pick a
    model with /select_model). Each tab registers with ``follow`` the components that change with the model.
    """

    registry: views.ModelRegistry
    model_name: gr.State | None = None  # set by build_app inside the Blocks
    followers: list = field(default_factory=list)  # (component, update(slot) -> its new props)
    widgets: dict = field(default_factory=dict)  # "<tab>.<widget>" -> component, for the tour's "Show me"
    work: vsess.SessionWork = field(default_factory=vsess.SessionWork)  # one walk at a time per session

    @property
    def slot(self) -> views.ModelSlot:
        """The default model's slot (what a new session starts with)."""
        return self.registry.slot()

    @property
    def model(self):
        return self.slot.model

    @property
    def classes(self) -> list:
        return class_choices(self.model)

    @property
    def default_class(self) -> str:
        return default_class(self.model)

    @property
    def T(self) -> int:
        return model_T(self.model)

    def need_model(self, name: str | None = None):
        """The session's model (default: the default model), or ModelUnavailable with the reason."""
        return self.registry.require(name)

    def follow(self, component, update) -> None:
        """Let ``component`` change with the model: ``update(slot)`` returns its new props (a gr component)."""
        self.followers.append((component, update))


def model_T(model) -> int:
    return model.schedule.T if model is not None else vf.T


def page_view(elem_id: str, props: dict, t_slider: str, t0: int, schedule_radio: str | None = None) -> gr.HTML:
    """A view the browser paints itself (explainer/views/static/forward.js): a t move sends nothing to the server.

    Its value is the pixels payload (``client.pixels_payload``), sent when the image or the seed changes.
    """
    js, css = vc.page_code()
    gr.set_static_paths([vc.PIXELS_DIR])  # the pixels files: served from there, not copied into Gradio's cache
    ids = {"prefix": elem_id.split("-")[0], "t": t_slider, "t0": t0, "schedule": schedule_radio}
    return gr.HTML(None, html_template=vc.VIEW_TEMPLATE, css_template=css, js_on_load=js, elem_id=elem_id,
                   ids=ids, **props)


def api_outputs(*kinds: str) -> list:
    """Hidden outputs of the API-only endpoints: "jpeg" / "png" pictures or "md" text, never shown."""
    return [gr.Markdown(visible=False) if k == "md" else gr.Image(visible=False, format=k) for k in kinds]


def tab_intro(tab: str) -> gr.Markdown:
    """The tab's opening sentences: what it shows and what to try first."""
    return gr.Markdown(vt.TAB_INTROS[tab], elem_id=f"{tab}-intro", elem_classes=["tab-intro"])


def forward_tab(ctx: AppContext, demo: gr.Blocks) -> None:
    """Forward diffusion: x_t from the closed form, numbers, curves and histogram painted in the page; strips."""
    with gr.Tab("Forward diffusion", id="forward"):
        tab_intro("forward")
        with gr.Row():
            with gr.Column():
                f_image = UploadImage(PHOTOS[0], type="filepath", label="x_0 (pick an example or upload)",
                                      sources=["upload", "clipboard"], height=300, elem_id="fwd-image")
            with gr.Column():
                f_t = gr.Slider(0, vf.T, value=500, step=1, label="t", elem_id="fwd-t")
                f_schedule = gr.Radio(list(vf.SCHEDULE_NAMES), value="linear", label="schedule",
                                      elem_id="fwd-schedule")
                f_seed = gr.Number(0, precision=0, minimum=0, maximum=SEED_MAX, label="seed (noise eps)",
                                   elem_id="fwd-seed")
                gr.Examples(PHOTOS + DIGITS[:3], inputs=f_image, examples_per_page=8)
        f_view = page_view("fwd-view", vc.forward_props(), "fwd-t", 500, "fwd-schedule")
        f_strip10 = gr.Image(label="10 frames from the closed form (one ε)", interactive=False,
                             elem_id="fwd-strip10", format="jpeg")
        f_strip1000 = gr.Image(label="the 1000-step Markov chain (fresh noise each step), every 100th step",
                               interactive=False, elem_id="fwd-strip1000", format="jpeg")
        xt, numbers, curves, hist, hist_text = api_outputs("jpeg", "md", "png", "png", "md")
    ctx.widgets.update({"forward.t": f_t, "forward.schedule": f_schedule, "forward.seed": f_seed})

    # the page repaints on every t or schedule move; the server sends x_0 and eps when the image or seed changes
    gr.on([demo.load, f_image.change, f_seed.change], clear_errors(vc.pixels_payload), [f_image, f_seed], f_view,
          api_name="forward_pixels", api_visibility="undocumented", trigger_mode="always_last", **CHEAP)
    gr.on([demo.load, f_image.change, f_schedule.change, f_seed.change], clear_errors(vf.forward_strips),
          [f_image, f_schedule, f_seed], [f_strip10, f_strip1000], api_name="forward_strips",
          trigger_mode="always_last", concurrency_id="strips", concurrency_limit=1)  # (one at a time: walks first)
    # the same views computed on the server, for API users (no trigger in the page)
    f_inputs = [f_image, f_t, f_schedule, f_seed]
    gr.on([], clear_errors(vf.forward_noise), f_inputs, [xt, numbers], api_name="forward_noise", **CHEAP)
    gr.on([], clear_errors(vf.schedule_curves_image), [f_t, f_schedule], curves, api_name="forward_curves", **CHEAP)
    gr.on([], clear_errors(vh.pixel_histogram_view), f_inputs, [hist, hist_text], api_name="forward_histogram",
          **CHEAP)


def compare_tab(ctx: AppContext, demo: gr.Blocks) -> None:
    """Compare schedules: the same x_0 and eps under linear and cosine at one t, painted in the page."""
    with gr.Tab("Compare schedules", id="compare"):
        tab_intro("compare")
        with gr.Row():
            c_image = UploadImage(PHOTOS[0], type="filepath", label="x_0", sources=["upload", "clipboard"],
                                  height=220, elem_id="cmp-image")
            with gr.Column():
                gr.Examples(PHOTOS + DIGITS[:3], inputs=c_image, examples_per_page=8)
                c_t = gr.Slider(0, vf.T, value=300, step=1, label="t (same for both)", elem_id="cmp-t")
                c_seed = gr.Number(0, precision=0, minimum=0, maximum=SEED_MAX, label="seed (same noise)",
                                   elem_id="cmp-seed")
        c_view = page_view("cmp-view", vc.compare_props(), "cmp-t", 300)
        linear, cosine, text, curves = api_outputs("jpeg", "jpeg", "md", "png")
    ctx.widgets.update({"compare.t": c_t, "compare.seed": c_seed})

    gr.on([demo.load, c_image.change, c_seed.change], clear_errors(vc.pixels_payload), [c_image, c_seed], c_view,
          api_name="compare_pixels", api_visibility="undocumented", trigger_mode="always_last", **CHEAP)
    gr.on([], clear_errors(vf.compare_schedules), [c_image, c_t, c_seed], [linear, cosine, text],
          api_name="compare_schedules", **CHEAP)
    gr.on([], clear_errors(vf.compare_curves_image), [c_t], curves, api_name="compare_curves", **CHEAP)


def session_of(request: gr.Request | None) -> str | None:
    """The session a call belongs to (None for a call that names none)."""
    return request.session_hash if request is not None else None


def stream_walk(ctx: AppContext, gifs: vr.GifStore):
    """The reverse walk handler: streams each walk's panel, then the recorded walks, scrubber, strip and GIF."""
    def reverse_walk(digit, guidance, sampler, steps, schedule, seed, compare_mode, steps_b, clip_x0=False,
                     model_name=None, request: gr.Request = None, progress=gr.Progress()):
        try:  # (a walk this session started before stops at its next step)
            for u in ctx.work.newest(session_of(request), vr.reverse_walk(
                    ctx.need_model(model_name), digit, guidance, sampler, steps, schedule, seed, compare_mode, steps_b,
                    clip_x0)):
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
                done = (*panels, u.status, u.walks, gr.Slider(maximum=last, value=last, interactive=True),
                        vr.walk_strip(u.walks))
                yield *done, gr.skip()  # the finished walk at once,
                # then its GIF, with the scrubber's range but not its value (the learner may be scrubbing already)
                yield *done[:-2], gr.Slider(maximum=last, interactive=True), done[-1], gifs.save(u.walks)
        except USER_ERRORS as e:
            raise gr.Error(str(e)) from None
    return reverse_walk


def class_dropdown(label: str, value=None):
    """A follower update: the class dropdown with the model's own classes and a label in its words."""
    def update(slot: views.ModelSlot):
        model = slot.model
        return gr.Dropdown(choices=class_choices(model), value=value if value is not None else default_class(model),
                           label=label.format(cls=class_word(model)))
    return update


def model_examples(ctx: AppContext, image, label: str, tab: str):
    """Held-out digits and held-out emoji for ``image``; the chosen model's set is the one shown."""
    shown = example_images(ctx.model)
    sets = {}
    for name, paths in (("digits", DIGIT_EXAMPLES), ("emoji", EMOJI_EXAMPLES)):
        if paths:
            sets[name] = (paths, gr.Examples(paths, inputs=image, label=f"held-out {name}",
                                             examples_per_page=len(paths), visible=paths is shown,
                                             api_name=f"{tab}_{name}_example"))
    for paths, examples in sets.values():
        ctx.follow(examples.dataset, lambda slot, paths=paths: gr.Dataset(visible=example_images(slot.model) is paths))
    ctx.follow(image, lambda slot: gr.Image(value=default_example(slot.model),
                                            label=label.format(what=image_word(slot.model),
                                                               size=image_size_words(slot.model))))


def image_size_words(model) -> str:
    """"28x28" or "32x32 colour": what an upload becomes for the model."""
    if model is None:
        return "28x28"
    return f"{model.image_size}x{model.image_size}" + (" colour" if model.channels == 3 else "")


CLIP_INFO = ("what the reference implementations do: x0_hat beyond the data's range is cut back, and the step "
             "takes the posterior mean towards it. The article's formula has no clipping; a small model's colours "
             "drift without it. On by default where the model's card recommends it")


def clip_default(model) -> bool:
    """The clip checkbox's value for ``model``: its card's recommendation (off for the digits, on for the emoji)."""
    return model is not None and model.recommended_clip_x0


def guidance_default(model) -> float:
    """A guidance slider's value for ``model``: its card's recommended w (1 for the digits, 5 for the emoji)."""
    return model.recommended_guidance if model is not None else 1.0


GUIDANCE_INFO = "starts at the model card's recommended w; a larger w trades variety for likeness to the class"


def reverse_tab(ctx: AppContext) -> None:
    """Reverse diffusion: streamed walks, side by side, a scrubber and the step taken apart."""
    with gr.Tab("Reverse diffusion", id="reverse"):
        tab_intro("reverse")
        r_notice = gr.Markdown(ctx.slot.notice(), elem_id="reverse-notice")
        with gr.Row():
            with gr.Column(scale=1):
                r_digit = gr.Dropdown(ctx.classes, value=ctx.default_class, label=class_word(ctx.model),
                                      elem_id="rev-class")
                r_guidance = gr.Slider(0, GUIDANCE_MAX, value=guidance_default(ctx.model), step=0.5,
                                       label="guidance scale w (1 = plain conditional, 0 = unconditional)",
                                       info=GUIDANCE_INFO, elem_id="rev-guidance")
                r_sampler = gr.Radio(list(vr.SAMPLERS), value="DDPM", label="sampler", elem_id="rev-sampler")
                r_steps = gr.Slider(vr.MIN_STEPS, ctx.T, value=100, step=1, label="inference steps",
                                    elem_id="rev-steps")
                r_schedule = gr.Radio(list(vr.INFERENCE_SCHEDULES), value="training",
                                      label="inference schedule (the training one or the other one)",
                                      elem_id="rev-schedule")
                r_seed = gr.Number(0, precision=0, minimum=0, maximum=SEED_MAX, label="seed", elem_id="rev-seed")
                r_compare = gr.Dropdown(list(vr.COMPARE_MODES), value="off", label="side by side (same starting noise)",
                                        elem_id="rev-compare")
                r_steps_b = gr.Slider(vr.MIN_STEPS, ctx.T, value=20, step=1,
                                      label="second walk's steps ('two step counts')", elem_id="rev-steps-b")
                r_clip = gr.Checkbox(clip_default(ctx.model), label="clip x0_hat to [-1, 1] at every step",
                                     info=CLIP_INFO, elem_id="rev-clip")
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
        r_walks = gr.State(None, time_to_live=vsess.RESULT_TTL_S)
    ctx.widgets.update({"reverse.digit": r_digit, "reverse.guidance": r_guidance, "reverse.sampler": r_sampler,
                        "reverse.steps": r_steps, "reverse.schedule": r_schedule, "reverse.seed": r_seed,
                        "reverse.compare": r_compare, "reverse.steps_b": r_steps_b, "reverse.clip": r_clip})

    ctx.follow(r_notice, lambda slot: slot.notice())
    ctx.follow(r_digit, class_dropdown("{cls}"))
    ctx.follow(r_steps, lambda slot: gr.Slider(maximum=model_T(slot.model)))
    ctx.follow(r_steps_b, lambda slot: gr.Slider(maximum=model_T(slot.model)))
    ctx.follow(r_clip, lambda slot: gr.Checkbox(value=clip_default(slot.model)))
    ctx.follow(r_guidance, lambda slot: gr.Slider(value=guidance_default(slot.model)))
    walk = r_run.click(stream_walk(ctx, vr.GifStore()),
                       [r_digit, r_guidance, r_sampler, r_steps, r_schedule, r_seed, r_compare, r_steps_b, r_clip,
                        ctx.model_name],
                       [r_panel_a, r_panel_b, r_status, r_walks, r_scrub, r_strip, r_gif],
                       api_name="reverse_walk", **HEAVY)
    r_stop.click(None, None, None, cancels=[walk], api_name="reverse_stop", api_visibility="private")
    # endpoints that read a session's recorded result: callable, but not in the API docs
    r_scrub.change(clear_errors(vr.walk_frame), [r_walks, r_scrub], r_frame, api_name="reverse_scrub",
                   api_visibility="undocumented", **CHEAP)
    r_scrub.change(clear_errors(vs.step_anatomy), [r_walks, r_scrub], [r_step, r_step_text], api_name="reverse_step",
                   api_visibility="undocumented", **CHEAP)
    # a finished walk shows its last frame and step even where the scrubber's value stays the same (same step count)
    walk.success(clear_errors(lambda walks, index: (vr.walk_frame(walks, index), *vs.step_anatomy(walks, index))),
                 [r_walks, r_scrub], [r_frame, r_step, r_step_text], api_name="reverse_walk_finished",
                 api_visibility="private", **CHEAP)


def computed(result):
    """The tab's recorded result, or a clear message when nothing was computed yet."""
    if result is None:
        raise ValueError("nothing computed yet: press 'Compute' first")
    return result


def source_choices(model) -> list[tuple[str, str]]:
    """The noise tab's sources as (label, value): the value "real digit" stays the same for every model."""
    return [("reverse walk", "reverse walk"), (f"real {image_word(model)}", "real digit")]


def noise_tab(ctx: AppContext) -> None:
    """Subtract all predicted noise: x0_hat | x_t | eps_hat at every timestep."""
    @clear_errors
    def noise_removal(source, image, digit, guidance, num_t, seed, model_name=None):
        res = vn.noise_removal(ctx.need_model(model_name), source, image, digit, guidance, num_t, seed)
        triplet, text = vn.noise_triplet(res, 0)
        return (vn.noise_grid(res), res, gr.Slider(maximum=len(res) - 1, value=0, interactive=True), triplet, text,
                vn.noise_error_curve(res, 0))

    image_label = "real {what} ({size} after conversion)"
    with gr.Tab("Subtract all predicted noise", id="noise"):
        tab_intro("noise")
        n_notice = gr.Markdown(ctx.slot.notice(), elem_id="noise-notice")
        with gr.Row():
            with gr.Column(scale=1):
                n_source = gr.Radio(source_choices(ctx.model), value="real digit", label="source",
                                    elem_id="noise-source")
                n_image = UploadImage(default_example(ctx.model), type="filepath",
                                      label=image_label.format(what=image_word(ctx.model),
                                                               size=image_size_words(ctx.model)),
                                      sources=["upload", "clipboard"], height=160, elem_id="noise-image")
                model_examples(ctx, n_image, image_label, "noise")
                n_digit = gr.Dropdown(ctx.classes, value=UNCONDITIONAL, label="condition on class",
                                      elem_id="noise-class")
                n_guidance = gr.Slider(0, GUIDANCE_MAX, value=guidance_default(ctx.model), step=0.5,
                                       label="guidance scale", info=GUIDANCE_INFO, elem_id="noise-guidance")
                n_num_t = gr.Slider(vn.MIN_T, min(vn.MAX_T, ctx.T), value=50, step=1, label="timesteps",
                                    elem_id="noise-num-t")
                n_seed = gr.Number(0, precision=0, minimum=0, maximum=SEED_MAX, label="seed", elem_id="noise-seed")
                n_run = gr.Button("Compute", variant="primary", elem_id="noise-run")
            with gr.Column(scale=2):
                n_index = gr.Slider(0, 1, value=0, step=1, label="timestep (index, noisiest first)",
                                    interactive=False, elem_id="noise-index")
                n_triplet = gr.Image(label="x0_hat | x_t | eps_hat", interactive=False, elem_id="noise-triplet",
                                     format="png")
                n_text = gr.Markdown(elem_id="noise-text")
                n_curve = gr.Plot(label="error per t")
        n_grid = gr.Image(label="every timestep: x0_hat | x_t | eps_hat (every eps_hat on one scale, see the text "
                          "above)", interactive=False, elem_id="noise-grid", format="png")
        n_result = gr.State(None, time_to_live=vsess.RESULT_TTL_S)
    ctx.widgets.update({"noise.source": n_source, "noise.digit": n_digit, "noise.guidance": n_guidance,
                        "noise.num_t": n_num_t, "noise.seed": n_seed})

    ctx.follow(n_notice, lambda slot: slot.notice())
    ctx.follow(n_source, lambda slot: gr.Radio(choices=source_choices(slot.model)))
    ctx.follow(n_digit, class_dropdown("condition on class", UNCONDITIONAL))
    ctx.follow(n_num_t, lambda slot: gr.Slider(maximum=min(vn.MAX_T, model_T(slot.model))))
    ctx.follow(n_guidance, lambda slot: gr.Slider(value=guidance_default(slot.model)))
    n_run.click(noise_removal, [n_source, n_image, n_digit, n_guidance, n_num_t, n_seed, ctx.model_name],
                [n_grid, n_result, n_index, n_triplet, n_text, n_curve], api_name="noise_removal", **HEAVY)
    n_index.change(clear_errors(lambda result, index: vn.noise_triplet(computed(result), index)), [n_result, n_index],
                   [n_triplet, n_text], api_name="noise_removal_at", api_visibility="undocumented", **CHEAP)
    n_index.release(clear_errors(lambda result, index: vn.noise_error_curve(computed(result), int(index))),
                    [n_result, n_index], n_curve, api_name="noise_removal_curve", api_visibility="undocumented",
                    concurrency_id="plots", concurrency_limit=2, show_progress="hidden")


def architecture_views(model) -> tuple:
    """The architecture table and the conditioning text of a model (empty where it is not an explainer U-Net)."""
    if model is None or not isinstance(model.net, va.UNet):
        return None, ""
    return va.architecture_table(model), va.conditioning_markdown(model)


def architecture_tab(ctx: AppContext) -> None:
    """Architecture: the U-Net's stages, how t and the class enter, and feature maps of an x_t."""
    image_label = "{what} ({size} after conversion)"
    with gr.Tab("Architecture", id="architecture"):
        tab_intro("architecture")
        a_notice = gr.Markdown(ctx.slot.notice(), elem_id="arch-notice")
        table, cond = architecture_views(ctx.model)
        a_table = gr.Dataframe(table, label="the U-Net's stages", interactive=False, elem_id="arch-table")
        a_cond = gr.Markdown(cond, elem_id="arch-cond")
        with gr.Row():
            with gr.Column(scale=1):
                a_image = UploadImage(default_example(ctx.model), type="filepath", height=160,
                                      label=image_label.format(what=image_word(ctx.model),
                                                               size=image_size_words(ctx.model)),
                                      sources=["upload", "clipboard"], elem_id="arch-image")
                model_examples(ctx, a_image, image_label, "architecture")
                a_t = gr.Slider(1, ctx.T, value=300, step=1, label="t", elem_id="arch-t")
                a_digit = gr.Dropdown(ctx.classes, value=ctx.default_class, label="class given to the network",
                                      elem_id="arch-class")
                a_seed = gr.Number(0, precision=0, minimum=0, maximum=SEED_MAX, label="seed", elem_id="arch-seed")
                a_run = gr.Button("Show feature maps", variant="primary", elem_id="arch-run")
            with gr.Column(scale=2):
                a_xt = gr.Image(label="x_t", interactive=False, height=200, elem_id="arch-xt", format="png")
                a_maps = gr.Image(label="feature maps after each stage (first 8 channels, each scaled to "
                                  "its own range)", interactive=False, elem_id="arch-maps", format="png")
    ctx.widgets.update({"architecture.t": a_t, "architecture.digit": a_digit, "architecture.seed": a_seed})

    ctx.follow(a_notice, lambda slot: slot.notice())
    ctx.follow(a_table, lambda slot: architecture_views(slot.model)[0])
    ctx.follow(a_cond, lambda slot: architecture_views(slot.model)[1])
    ctx.follow(a_t, lambda slot: gr.Slider(maximum=model_T(slot.model)))
    ctx.follow(a_digit, class_dropdown("class given to the network"))
    a_run.click(clear_errors(lambda image, t, digit, seed, model_name=None:
                             va.feature_maps(ctx.need_model(model_name), image, t, digit, seed)),
                [a_image, a_t, a_digit, a_seed, ctx.model_name], [a_xt, a_maps], api_name="feature_maps", **HEAVY)


def lab_tab(ctx: AppContext, demo: gr.Blocks) -> None:
    """2D lab: a whole data distribution, its particles and the learned field on one screen, and the exact denoiser."""
    from explainer.views import lab as vl

    def lab_walk(dataset, sampler, steps, eta, schedule, particles, cls, guidance, seed, model=None, sketch=None,
                 request: gr.Request = None, progress=gr.Progress()):
        try:  # (one walk per session: the reverse tab's and this one share the rule)
            for u in ctx.work.newest(session_of(request), vl.walk(dataset, sampler, steps, eta, schedule, particles,
                                                                  cls, guidance, seed, model, sketch)):
                progress((u.step, u.total), desc="walking")
                pic = u.picture if u.picture is not None else gr.skip()
                if not u.finished:
                    yield pic, u.status, gr.skip(), gr.skip(), gr.skip()
                    continue
                yield (pic, u.status, u.walk, gr.Slider(maximum=u.walk.done, value=u.walk.done, interactive=True),
                       u.walk.metrics)
        except USER_ERRORS as e:
            raise gr.Error(str(e)) from None

    def lab_train(dataset, steps, seed, sketch=None, progress=gr.Progress()):
        try:
            for u in vl.train(dataset, steps, seed, sketch):
                progress((u.step, u.total), desc="training")
                yield u.status, (u.model if u.model is not None else gr.skip())
        except USER_ERRORS as e:
            raise gr.Error(str(e)) from None

    def lab_classes(dataset, sketch=None):
        names = vl.class_choices(vl.lab_data(dataset, sketch)) if dataset != vl.DRAWN else [UNCONDITIONAL]
        return gr.Dropdown(choices=names, value=UNCONDITIONAL, interactive=len(names) > 1)

    with gr.Tab("2D lab", id="lab"):
        gr.Markdown("In two dimensions the whole data distribution fits on one screen. The same schedules, "
                    "respacing and samplers as the digit tabs drive two denoisers: a small MLP trained on the "
                    "points, and the **exact** denoiser of those points, E[x_0 | x_t] in closed form, which takes "
                    "every particle back onto a training point (it memorises). Pick a data set or draw your own.",
                    elem_id="lab-intro")
        with gr.Row():
            with gr.Column(scale=1):
                l_data = gr.Dropdown(list(vl.DATASETS), value="two moons", label="data set", elem_id="lab-data")
                l_sketch = gr.Sketchpad(label="draw your own (drawing picks 'draw your own'; then press Train)",
                                        type="numpy", image_mode="RGBA", canvas_size=(400, 400), height=330,
                                        layers=False, transforms=(), elem_id="lab-sketch",
                                        brush=gr.Brush(default_size=6, colors=["#000000"], color_mode="fixed"))
                l_train_steps = gr.Slider(vl.MIN_TRAIN_STEPS, 10_000, value=vl.LIVE_TRAIN.train_steps, step=50,
                                          label="training steps", elem_id="lab-train-steps")
                l_train = gr.Button("Train the network on this data set", elem_id="lab-train")
                l_train_status = gr.Markdown(elem_id="lab-train-status")
                l_t = gr.Slider(0, vl.T, value=100, step=1, label="t", elem_id="lab-t")
                l_schedule = gr.Radio(list(vl.SCHEDULES), value="linear", label="schedule of the forward view "
                                      "and the field", elem_id="lab-schedule")
                l_seed = gr.Number(0, precision=0, minimum=0, maximum=SEED_MAX, label="seed", elem_id="lab-seed")
            with gr.Column(scale=2):
                l_forward = gr.Image(label="forward: the noised points x_t, the exact density q(x_t) and four "
                                     "forward paths", interactive=False, format="png", elem_id="lab-forward")
                l_forward_text = gr.Markdown(elem_id="lab-forward-text")
                l_field = gr.Image(label="−ε̂ at t as arrows: the network | the exact denoiser", interactive=False,
                                   format="png", elem_id="lab-field")
                l_field_text = gr.Markdown(elem_id="lab-field-text")
        with gr.Row():
            with gr.Column(scale=1):
                l_sampler = gr.Radio(list(vl.SAMPLERS), value="DDPM", label="sampler", elem_id="lab-sampler")
                l_steps = gr.Slider(vl.MIN_STEPS, vl.T, value=vl.DEFAULT_STEPS, step=1, label="steps (respaced)",
                                    elem_id="lab-steps")
                l_eta = gr.Slider(0, 1, value=0, step=0.1, label="eta (DDIM)")
                l_inference = gr.Radio(list(vl.INFERENCE_SCHEDULES), value="training",
                                       label="inference schedule (the training one, linear, or the other one)")
                l_particles = gr.Slider(vl.MIN_PARTICLES, vl.MAX_PARTICLES, value=vl.DEFAULT_PARTICLES, step=100,
                                        label="particles", elem_id="lab-particles")
                l_class = gr.Dropdown(vl.ALL_CLASSES, value=UNCONDITIONAL, label="class (8 Gaussians only)",
                                      interactive=False, elem_id="lab-class")
                l_guidance = gr.Slider(0, vl.GUIDANCE_MAX, value=1.0, step=0.5,
                                       label="guidance w (1 = plain conditional)", elem_id="lab-guidance")
                with gr.Row():
                    l_run = gr.Button("Run", variant="primary", elem_id="lab-run")
                    l_stop = gr.Button("Stop", variant="stop", elem_id="lab-stop")
            with gr.Column(scale=2):
                l_walk = gr.Image(label="reverse: particles from N(0, I), the network | the exact denoiser (same "
                                  "noise)", interactive=False, format="png", elem_id="lab-walk")
                gr.Markdown(vl.WALK_CAPTION, elem_id="lab-walk-caption")
                l_status = gr.Markdown(elem_id="lab-status")
                l_scrub = gr.Slider(0, 1, value=0, step=1, label="scrub through the recorded walk (moves t too)",
                                    interactive=False, elem_id="lab-scrub")
                l_frame_text = gr.Markdown(elem_id="lab-frame-text")
                l_metrics = gr.Markdown(elem_id="lab-metrics")
        l_model = gr.State(None, time_to_live=vsess.RESULT_TTL_S)
        l_record = gr.State(None, time_to_live=vsess.RESULT_TTL_S)
    ctx.widgets.update({"lab.data": l_data, "lab.t": l_t, "lab.sampler": l_sampler, "lab.seed": l_seed})

    gr.on([demo.load, l_t.change, l_schedule.change, l_seed.change, l_data.change, l_sketch.change],
          clear_errors(vl.forward_view), [l_data, l_t, l_schedule, l_seed, l_sketch], [l_forward, l_forward_text],
          api_name="lab_forward", trigger_mode="always_last", **CHEAP)
    gr.on([demo.load, l_t.change, l_schedule.change, l_data.change, l_sketch.change, l_class.change,
           l_guidance.change, l_model.change], clear_errors(vl.field_view),
          [l_data, l_t, l_schedule, l_class, l_guidance, l_model, l_sketch, l_seed], [l_field, l_field_text],
          api_name="lab_field", trigger_mode="always_last", **CHEAP)
    l_data.change(clear_errors(lab_classes), [l_data, l_sketch], l_class, api_name="lab_classes",
                  api_visibility="undocumented", **CHEAP)
    train = l_train.click(lab_train, [l_data, l_train_steps, l_seed, l_sketch], [l_train_status, l_model],
                          api_name="lab_train", **HEAVY)
    walk = l_run.click(lab_walk, [l_data, l_sampler, l_steps, l_eta, l_inference, l_particles, l_class, l_guidance,
                                  l_seed, l_model, l_sketch], [l_walk, l_status, l_record, l_scrub, l_metrics],
                       api_name="lab_walk", **HEAVY)
    l_stop.click(None, None, None, cancels=[walk, train], api_name="lab_stop", api_visibility="private")
    l_sketch.input(lambda: vl.DRAWN, None, l_data, api_name="lab_use_drawing", api_visibility="undocumented",
                   **CHEAP)  # drawing picks 'draw your own'
    # reads the session's recorded walk: callable, but not in the API docs
    l_scrub.input(clear_errors(vl.walk_frame), [l_record, l_scrub], [l_walk, l_frame_text, l_t, l_schedule],
                  api_name="lab_scrub", api_visibility="undocumented", trigger_mode="always_last", **CHEAP)


RUN_BUTTONS = {"reverse": "rev-run", "noise": "noise-run", "architecture": "arch-run", "lab": "lab-run"}


@dataclass
class TourParts:
    """The tour's widgets: in its tab (step, text, answer, buttons) or in the bar above the tabs (the question while
    the learner looks at another tab, with Reveal, Back and Next)."""

    step: gr.Dropdown | None = None
    text: gr.Markdown | None = None
    answer: gr.Markdown | None = None
    show: gr.Button | None = None
    reveal: gr.Button | None = None
    previous: gr.Button | None = None
    next: gr.Button | None = None
    tab: gr.Tab | None = None


@dataclass
class TourBar:
    group: gr.Group
    question: gr.Markdown
    answer: gr.Markdown
    reveal: gr.Button
    back: gr.Button
    next: gr.Button


def tour_bar() -> TourBar:
    """Above the tabs, hidden until "Show me": the step's question, so it can be answered while looking."""
    with gr.Group(visible=False, elem_id="tour-bar") as group:
        question = gr.Markdown(elem_id="tour-bar-question")
        answer = gr.Markdown(elem_id="tour-bar-answer")
        with gr.Row():
            reveal = gr.Button("Reveal the answer", size="sm", elem_id="tour-bar-reveal")
            back = gr.Button("Back to the tour", size="sm", elem_id="tour-bar-back")
            nxt = gr.Button("Next step ▸", size="sm", elem_id="tour-bar-next")
    return TourBar(group, question, answer, reveal, back, nxt)


def tour_tab() -> TourParts:
    """Tour: the story in short steps; "Show me" opens the tab that makes the point, "Reveal" the live answer."""
    parts = TourParts()
    with gr.Tab("Tour", id="tour") as parts.tab:
        tab_intro("tour")
        parts.step = gr.Dropdown([(s.title, i) for i, s in enumerate(vt.STEPS)], value=0, label="step",
                                 elem_id="tour-step")
        parts.text = gr.Markdown(vt.step_markdown(0), latex_delimiters=vm.LATEX_DELIMITERS, elem_id="tour-text")
        with gr.Row():
            parts.previous = gr.Button("◂ Previous", size="sm", elem_id="tour-prev")
            parts.show = gr.Button("Show me", variant="primary", elem_id="tour-show")
            parts.reveal = gr.Button("Reveal the answer", elem_id="tour-reveal")
            parts.next = gr.Button("Next ▸", size="sm", elem_id="tour-next")
        parts.answer = gr.Markdown(elem_id="tour-answer")
    return parts


def tour_run_js() -> str:
    """After "Show me": repaint the page-painted views (their t was set from the server) and press the tab's run
    button where the step's picture needs the network."""
    buttons = [RUN_BUTTONS.get(s.tab) if s.run else None for s in vt.STEPS]
    return ("(i) => { const views = window.__ddpmViews || {};"
            " for (const v of Object.values(views)) if (v.sync) v.sync();"
            f" const id = {json.dumps(buttons)}[Number(i)];"
            " if (id) setTimeout(() => document.getElementById(id)?.click(), 100); return []; }")


def wire_tour(ctx: AppContext, tabs: gr.Tabs, tour: TourParts, bar: TourBar) -> None:
    """The tour's events: choose a step, Show me (tab and widgets, then the run), Reveal, Back and Next."""
    keys = vt.setting_keys()
    widgets = [ctx.widgets[k] for k in keys]
    last = len(vt.STEPS) - 1

    def show_step(index):
        return vt.step_markdown(index), ""

    def show_me(index):
        tab, settings, _ = vt.show_me(index)
        step = vt.step(index)
        question = f"**Tour, {step.title}.** {step.question}"
        values = [settings[k] if k in settings else gr.skip() for k in keys]
        return gr.Tabs(selected=tab), gr.Group(visible=True), question, "", *values

    def reveal(index, model_name=None):
        vt.step(index)  # (a bad index is refused before any work)
        try:
            model = ctx.need_model(model_name)
        except ModelUnavailable:
            model = None
        answer = vt.reveal(index, model)
        return answer, answer

    def move(index, by):
        vt.step(index)  # checked
        return min(max(int(index) + by, 0), last)

    tour.step.change(clear_errors(show_step), tour.step, [tour.text, tour.answer], api_name="tour_step", **CHEAP)
    tour.previous.click(clear_errors(lambda i: move(i, -1)), tour.step, tour.step, api_name="tour_previous", **CHEAP)
    tour.next.click(clear_errors(lambda i: move(i, 1)), tour.step, tour.step, api_name="tour_next", **CHEAP)
    shown = tour.show.click(clear_errors(show_me), tour.step, [tabs, bar.group, bar.question, bar.answer, *widgets],
                            api_name="tour_show", **CHEAP)
    shown.success(None, tour.step, None, js=tour_run_js(), api_name="tour_run", api_visibility="private")
    gr.on([tour.reveal.click, bar.reveal.click], clear_errors(reveal), [tour.step, ctx.model_name],
          [tour.answer, bar.answer], api_name="tour_reveal", **HEAVY)
    bar.back.click(lambda: (gr.Tabs(selected="tour"), gr.Group(visible=False)), None, [tabs, bar.group],
                   api_name="tour_back", api_visibility="private", **CHEAP)
    bar.next.click(clear_errors(lambda i: (move(i, 1), gr.Tabs(selected="tour"), gr.Group(visible=False))), tour.step,
                   [tour.step, tabs, bar.group], api_name="tour_bar_next", api_visibility="private", **CHEAP)
    tour.tab.select(lambda: gr.Group(visible=False), None, bar.group, api_name="tour_opened",
                    api_visibility="private", **CHEAP)


def model_picker(ctx: AppContext) -> gr.Dropdown:
    """The header's model menu and the session's model: every diffusion checkpoint found, each loaded once."""
    names = ctx.registry.names
    picker = gr.Dropdown(names, value=ctx.registry.default, label="model of the reverse, noise-removal and "
                         "architecture tabs", interactive=len(names) > 1, elem_id="model-picker")
    ctx.model_name = gr.State(ctx.registry.default)
    return picker


def wire_model_picker(ctx: AppContext, picker: gr.Dropdown) -> None:
    """Switching models: load the chosen one (once; kept afterwards), then update every follower."""
    @clear_errors
    def select_model(model):
        name = ctx.registry.check_name(model)
        slot = ctx.registry.slot(name)
        if not slot.ok:
            gr.Warning(f"The model {name} is unavailable: {slot.error}")
        return name, *(update(slot) for _, update in ctx.followers)

    picker.change(select_model, [picker], [ctx.model_name] + [c for c, _ in ctx.followers], api_name="select_model",
                  concurrency_limit=None, show_progress="minimal")


def math_tab() -> None:
    """Math: the equations each tab uses, with their sources."""
    with gr.Tab("Math", id="math"):
        tab_intro("math")
        gr.Markdown(vm.ALL, latex_delimiters=vm.LATEX_DELIMITERS, elem_id="math")


def build_app(models: views.ModelSlot | views.ModelRegistry | None = None, cache_folder=None) -> gr.Blocks:
    """The whole UI. ``models``: one model slot, a ``ModelRegistry``, or None for every diffusion checkpoint under
    checkpoints/, with $DDPM_EXPLAINER_CHECKPOINT (or the shipped one) as the default. ``cache_folder``: the
    folder Gradio writes this app's files to when it is the app's own (``own_cache_folder``): all of it is kept
    within the bound."""
    if models is None:
        registry = views.ModelRegistry.discover()
    elif isinstance(models, views.ModelSlot):
        registry = views.ModelRegistry.of(models)
    else:
        registry = models
    registry.slot()  # the default model is loaded now (and its fast path started); the others on first use
    ctx = AppContext(registry)
    with gr.Blocks(title="DDPM explainer", delete_cache=(900, 3600)) as demo:
        gr.Markdown("# Denoising diffusion, step by step\nThe article's figures, live: the forward process in closed "
                    "form, the reverse process with a real trained U-Net, and what the network sees.")
        picker = model_picker(ctx)
        bar = tour_bar()
        with gr.Tabs(elem_id="tabs") as tabs:
            tour = tour_tab()
            forward_tab(ctx, demo)
            compare_tab(ctx, demo)
            reverse_tab(ctx)
            noise_tab(ctx)
            architecture_tab(ctx)
            lab_tab(ctx, demo)
            math_tab()
        wire_model_picker(ctx, picker)
        wire_tour(ctx, tabs, tour, bar)
        keep_bounded(demo, ctx, cache_folder)
    return demo


def keep_bounded(demo: gr.Blocks, ctx: AppContext, folder=None) -> vsess.Housekeeper:
    """Forget closed and idle sessions and trim the cached files on a schedule (explainer/server/sessions.py)."""
    ref = weakref.ref(demo)

    def keep_in_cache() -> set:
        d = ref()
        return set().union(*(getattr(b, "keep_in_cache", set()) for b in d.blocks.values())) if d else set()

    keeper = vsess.Housekeeper(holder=lambda: getattr(ref(), "state_holder", None),
                               file_sets=lambda: getattr(ref(), "temp_file_sets", []), keep=keep_in_cache,
                               work=ctx.work, folder=folder)

    def session_closed(request: gr.Request):
        keeper.closed(session_of(request))

    session_closed.keeper = keeper  # (tests reach the keeper through the unload event)
    demo.unload(session_closed)  # (the closure keeps the keeper alive as long as the app)
    return keeper.start()


def argument_of(block, name: str) -> guard.Argument:
    """What an input component accepts, for ``guard.check_arguments``."""
    if isinstance(block, (gr.Slider, gr.Number)):
        return guard.Argument(name, "number", block.minimum, block.maximum)
    if isinstance(block, (gr.Radio, gr.Dropdown)) and not (getattr(block, "multiselect", False)
                                                           or getattr(block, "allow_custom_value", False)):
        return guard.Argument(name, "choice", choices=tuple(value for _, value in block.choices))
    if isinstance(block, (gr.Image, gr.File)):
        return guard.Argument(name, "file")
    if isinstance(block, gr.Dataset):  # an Examples table: the index of a row
        return guard.Argument(name, "int", 0, max(len(block.samples) - 1, 0))
    if isinstance(block, gr.Checkbox):
        return guard.Argument(name, "bool")
    if isinstance(block, gr.Textbox):
        return guard.Argument(name, "text")
    return guard.Argument(name)  # gr.State and the like: nothing to check


LATER_ARGUMENTS = {"reverse_walk": ("clip_x0",)}  # arguments an endpoint gained after it was published


def with_later_arguments(block_fn, names: list, inputs):
    """A call written before its endpoint gained ``LATER_ARGUMENTS`` runs as it did: the arguments it leaves out
    take their widgets' starting values (as gradio_client fills them in); session state keeps its place."""
    later = LATER_ARGUMENTS.get(block_fn.api_name, ())
    if not later or not isinstance(inputs, list) or len(names) != len(block_fn.inputs):
        return inputs
    api = [name for block, name in zip(block_fn.inputs, names) if not block.skip_api]
    if api[-len(later):] != list(later) or len(inputs) != len(api) - len(later):
        return inputs
    given = iter(inputs)
    return [None if block.skip_api else block.value if name in later else next(given)
            for block, name in zip(block_fn.inputs, names)]


def check_arguments_first(demo: gr.Blocks) -> None:
    """Check every event's arguments before Gradio reads them: a wrong value gets a message that names it.

    (Gradio's own message for a wrong type names only the component's index and echoes the value whole.)
    """
    read = demo.preprocess_data
    if getattr(read, "checks_arguments", False):
        return

    async def preprocess_data(block_fn, inputs, state, *args, **kwargs):
        names = block_fn.input_parameter_names or []
        inputs = with_later_arguments(block_fn, names, inputs)
        blocks = [state[b._id] if state is not None and b._id in state else b for b in block_fn.inputs]
        spec = [argument_of(b, names[i] if i < len(names) and names[i] else f"argument {i + 1}")
                for i, b in enumerate(blocks)]
        try:
            guard.check_arguments(block_fn.api_name or "this event", spec, inputs)
        except ValueError as e:
            raise gr.Error(str(e)) from None
        try:
            return await read(block_fn, inputs, state, *args, **kwargs)
        except gr.Error:
            raise
        except Exception as e:  # Gradio could not fetch a file argument (a path never uploaded, a dead URL ...)
            if not any(a.kind == "file" for a in spec):
                raise
            raise gr.Error(guard.unreadable_file(spec)) from e

    preprocess_data.checks_arguments = True
    demo.preprocess_data = preprocess_data


def known_event(demo: gr.Blocks, event_id: str) -> bool:
    """Whether a call's result stream (GET /gradio_api/call/NAME/EVENT_ID) can still be read."""
    queue = demo._queue
    return event_id in queue.event_ids_to_events or any(event_id in ids
                                                        for ids in queue.pending_event_ids_session.values())


def named_arguments(demo: gr.Blocks):
    """For the guard: {api_name: (its argument names, those without a default)} as /gradio_api/call/v2 takes them."""
    @functools.cache
    def named() -> dict:
        endpoints = demo.get_api_info()["named_endpoints"]
        return {name.lstrip("/"): ({p["parameter_name"] for p in e["parameters"] if "parameter_name" in p},
                                   {p["parameter_name"] for p in e["parameters"]
                                    if "parameter_name" in p and not p.get("parameter_has_default")})
                for name, e in endpoints.items()}
    return named


def short_validation_error(request, exc):
    """FastAPI's 422 for a malformed body, without echoing the body back."""
    where = "; ".join(" > ".join(map(str, e.get("loc", ()))) + ": " + str(e.get("msg", ""))[:80]
                      for e in exc.errors()[:3])
    return JSONResponse({"detail": f"malformed request ({where})"}, status_code=422)


def launch(demo: gr.Blocks, **kwargs):
    """Serve ``demo`` as ``python app.py`` does (tests pass host, port and prevent_thread_lock in ``kwargs``).

    Every request passes ``explainer.server.guard``: size limits, unknown endpoints, nosniff, checked arguments.
    """
    check_arguments_first(demo)
    endpoints = lambda: ({fn.api_name for fn in demo.fns.values() if fn.api_name}, set(demo.fns))  # noqa: E731
    app_kwargs = {"middleware": [Middleware(guard.RequestGuard, endpoints=endpoints, named=named_arguments(demo),
                                            known_event=functools.partial(known_event, demo))],
                  "exception_handlers": {RequestValidationError: short_validation_error}}
    kwargs = dict(show_error=True, max_file_size=MAX_FILE_BYTES, css=CSS, app_kwargs=app_kwargs,
                  state_session_capacity=vsess.SESSION_CAPACITY) | kwargs
    return demo.queue(default_concurrency_limit=1).launch(**kwargs)


def configure_threads() -> None:
    """Give each heavy event's torch ops half the cores (at least one thread); MODEL_SLOTS of them may run at once.

    Call it before ``build_app``: the fast eps path that ``views.load_slot`` builds in the background takes
    the same thread count (one on a 2-core machine, so two walks at once run on two cores, without a lock).
    """
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))


def serve(demo: gr.Blocks, shutdown_s: float = 1.0) -> None:
    """Serve until Ctrl-C or SIGTERM, then stop within about ``shutdown_s`` seconds (open page connections are not
    waited for) and exit, which removes the app's temporary folders (walk GIFs, pixels files)."""
    memory.fix_mmap_threshold()  # large freed arrays go back to the system at once (a server runs for weeks)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    launch(demo, prevent_thread_lock=True)
    from explainer.views import lab as vl
    threading.Thread(target=vl.warm_up, daemon=True).start()  # the lab's first Train then starts at once
    while not stop.wait(0.1):
        pass
    print("Stopping the server ...", flush=True)
    closing = threading.Thread(target=demo.close, daemon=True)
    closing.start()
    closing.join(shutdown_s)
    atexit._run_exitfuncs()  # every exit handler now (CPython's own, private): the temporary folders go
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # (skips the interpreter's slow teardown of torch and the server's threads: about a second)


def own_cache_folder() -> str:
    """The folder Gradio writes this app's files to: $GRADIO_TEMP_DIR when set (then it should be this app's
    alone: the housekeeper trims all of it), else a new folder of this process's, removed at exit (instead of
    Gradio's default, a folder every Gradio app on the machine shares). Call it before ``build_app``."""
    folder = os.environ.get("GRADIO_TEMP_DIR")
    if not folder:
        folder = tempfile.mkdtemp(prefix="ddpm-explainer-gradio-")
        os.environ["GRADIO_TEMP_DIR"] = folder
        atexit.register(shutil.rmtree, folder, True)
    return folder


if __name__ == "__main__":
    configure_threads()
    # Host and port: Gradio's own GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, else 127.0.0.1:7860.
    serve(build_app(cache_folder=own_cache_folder()))
