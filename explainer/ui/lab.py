"""The 2D lab tab: a whole data distribution, its particles and the learned field on one screen, and the exact
denoiser beside the network."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ..server.sessions import RESULT_TTL_S, session_of
from ..views import lab as vl
from ..views import walk as vw
from ..views.inputs import GUIDANCE_MAX, SEED_MAX, UNCONDITIONAL
from .common import CHEAP, HEAVY, AppContext, clear_errors

INTRO = ("In two dimensions the whole data distribution fits on one screen. The same schedules, respacing and "
         "samplers as the digit tabs drive two denoisers: a small MLP trained on the points, and the **exact** "
         "denoiser of those points, E[x_0 | x_t] in closed form, which takes every particle back onto a training "
         "point (it memorises). Pick a data set or draw your own.")


@dataclass
class LabScene:
    """The lab's upper half: the data set (or a drawing), training, and the forward and field views at t."""

    data: gr.Dropdown
    sketch: gr.Sketchpad
    train_steps: gr.Slider
    train: gr.Button
    train_status: gr.Markdown
    t: gr.Slider
    schedule: gr.Radio
    seed: gr.Number
    forward: gr.Image
    forward_text: gr.Markdown
    field: gr.Image
    field_text: gr.Markdown


@dataclass
class LabWalk:
    """The lab's lower half: the reverse walk's settings, its picture and status, the scrubber and the metrics."""

    sampler: gr.Radio
    steps: gr.Slider
    eta: gr.Slider
    inference: gr.Radio
    particles: gr.Slider
    cls: gr.Dropdown
    guidance: gr.Slider
    run: gr.Button
    stop: gr.Button
    picture: gr.Image
    status: gr.Markdown
    scrub: gr.Slider
    frame_text: gr.Markdown
    metrics: gr.Markdown


def lab_scene() -> LabScene:
    """The data set, its training and the views at t: settings on the left, pictures on the right."""
    with gr.Row():
        with gr.Column(scale=1):
            data = gr.Dropdown(list(vl.DATASETS), value="two moons", label="data set", elem_id="lab-data")
            sketch = gr.Sketchpad(label="draw your own (drawing picks 'draw your own'; then press Train)",
                                  type="numpy", image_mode="RGBA", canvas_size=(400, 400), height=330, layers=False,
                                  transforms=(), elem_id="lab-sketch",
                                  brush=gr.Brush(default_size=6, colors=["#000000"], color_mode="fixed"))
            train_steps = gr.Slider(vl.MIN_TRAIN_STEPS, vl.MAX_TRAIN_STEPS, value=vl.LIVE_TRAIN.train_steps, step=50,
                                    label="training steps", elem_id="lab-train-steps")
            train = gr.Button("Train the network on this data set", elem_id="lab-train")
            train_status = gr.Markdown(elem_id="lab-train-status")
            t = gr.Slider(0, vl.T, value=100, step=1, label="t", elem_id="lab-t")
            schedule = gr.Radio(list(vl.SCHEDULES), value="linear", label="schedule of the forward view and the field",
                                elem_id="lab-schedule")
            seed = gr.Number(0, precision=0, minimum=0, maximum=SEED_MAX, label="seed", elem_id="lab-seed")
        with gr.Column(scale=2):
            forward = gr.Image(label="forward: the noised points x_t, the exact density q(x_t) and four forward "
                               "paths", interactive=False, format="png", elem_id="lab-forward")
            forward_text = gr.Markdown(elem_id="lab-forward-text")
            field = gr.Image(label="−ε̂ at t as arrows: the network | the exact denoiser", interactive=False,
                             format="png", elem_id="lab-field")
            field_text = gr.Markdown(elem_id="lab-field-text")
    return LabScene(data, sketch, train_steps, train, train_status, t, schedule, seed, forward, forward_text, field,
                    field_text)


def lab_walk_widgets() -> LabWalk:
    """The reverse walk: its settings on the left, the picture, status, scrubber and metrics on the right."""
    with gr.Row():
        with gr.Column(scale=1):
            sampler = gr.Radio(list(vw.SAMPLERS), value="DDPM", label="sampler", elem_id="lab-sampler")
            steps = gr.Slider(vw.MIN_STEPS, vl.T, value=vl.DEFAULT_STEPS, step=1, label="steps (respaced)",
                              elem_id="lab-steps")
            eta = gr.Slider(0, 1, value=0, step=0.1, label="eta (DDIM)")
            inference = gr.Radio(list(vw.INFERENCE_SCHEDULES), value="training",
                                 label="inference schedule (the training one, linear, or the other one)")
            particles = gr.Slider(vl.MIN_PARTICLES, vl.MAX_PARTICLES, value=vl.DEFAULT_PARTICLES, step=100,
                                  label="particles", elem_id="lab-particles")
            cls = gr.Dropdown(vl.ALL_CLASSES, value=UNCONDITIONAL, label="class (8 Gaussians only)", interactive=False,
                              elem_id="lab-class")
            guidance = gr.Slider(0, GUIDANCE_MAX, value=1.0, step=0.5, label="guidance w (1 = plain conditional)",
                                 elem_id="lab-guidance")
            with gr.Row():
                run = gr.Button("Run", variant="primary", elem_id="lab-run")
                stop = gr.Button("Stop", variant="stop", elem_id="lab-stop")
        with gr.Column(scale=2):
            picture = gr.Image(label="reverse: particles from N(0, I), the network | the exact denoiser (same noise)",
                               interactive=False, format="png", elem_id="lab-walk")
            gr.Markdown(vl.WALK_CAPTION, elem_id="lab-walk-caption")
            status = gr.Markdown(elem_id="lab-status")
            scrub = gr.Slider(0, 1, value=0, step=1, label="scrub through the recorded walk (moves t too)",
                              interactive=False, elem_id="lab-scrub")
            frame_text = gr.Markdown(elem_id="lab-frame-text")
            metrics = gr.Markdown(elem_id="lab-metrics")
    return LabWalk(sampler, steps, eta, inference, particles, cls, guidance, run, stop, picture, status, scrub,
                   frame_text, metrics)


def walk_handler(ctx: AppContext):
    """The lab's walk handler: streams the particles' picture, then the recorded walk, scrubber and metrics."""
    def lab_walk(dataset, sampler, steps, eta, schedule, particles, cls, guidance, seed, model=None, sketch=None,
                 request: gr.Request = None, progress=gr.Progress()):
        # (one walk per session: the reverse tab's and this one share the rule)
        walk = vl.walk(dataset, sampler, steps, eta, schedule, particles, cls, guidance, seed, model, sketch)
        for u in ctx.work.newest(session_of(request), walk):
            progress((u.step, u.total), desc="walking")
            pic = u.picture if u.picture is not None else gr.skip()
            if not u.finished:
                yield pic, u.status, gr.skip(), gr.skip(), gr.skip()
                continue
            yield (pic, u.status, u.walk, gr.Slider(maximum=u.walk.done, value=u.walk.done, interactive=True),
                   u.walk.metrics)
    return clear_errors(lab_walk)


def lab_train(dataset, steps, seed, sketch=None, progress=gr.Progress()):
    # (no docstring: a handler's docstring would become its endpoint's description in the API page)
    for u in vl.train(dataset, steps, seed, sketch):
        progress((u.step, u.total), desc="training")
        yield u.status, (u.model if u.model is not None else gr.skip())


def lab_classes(dataset, sketch=None):
    # the class dropdown for a data set: its classes where it has some (8 Gaussians), else unconditional
    names = vl.class_choices(vl.lab_data(dataset, sketch)) if dataset != vl.DRAWN else [UNCONDITIONAL]
    return gr.Dropdown(choices=names, value=UNCONDITIONAL, interactive=len(names) > 1)


def wire_views(demo: gr.Blocks, scene: LabScene, walk: LabWalk, model: gr.State) -> None:
    """The forward and field views follow every setting they show; a new data set brings its classes."""
    gr.on([demo.load, scene.t.change, scene.schedule.change, scene.seed.change, scene.data.change, scene.sketch.change],
          clear_errors(vl.forward_view), [scene.data, scene.t, scene.schedule, scene.seed, scene.sketch],
          [scene.forward, scene.forward_text], api_name="lab_forward", trigger_mode="always_last", **CHEAP)
    gr.on([demo.load, scene.t.change, scene.schedule.change, scene.data.change, scene.sketch.change, walk.cls.change,
           walk.guidance.change, model.change], clear_errors(vl.field_view),
          [scene.data, scene.t, scene.schedule, walk.cls, walk.guidance, model, scene.sketch, scene.seed],
          [scene.field, scene.field_text], api_name="lab_field", trigger_mode="always_last", **CHEAP)
    scene.data.change(clear_errors(lab_classes), [scene.data, scene.sketch], walk.cls, api_name="lab_classes",
                      api_visibility="undocumented", **CHEAP)


def wire_runs(ctx: AppContext, scene: LabScene, walk: LabWalk, model: gr.State, record: gr.State) -> None:
    """Train, Run and Stop; a drawing picks 'draw your own'; the scrubber reads the recorded walk."""
    train = scene.train.click(clear_errors(lab_train), [scene.data, scene.train_steps, scene.seed, scene.sketch],
                              [scene.train_status, model], api_name="lab_train", **HEAVY)
    run = walk.run.click(walk_handler(ctx), [scene.data, walk.sampler, walk.steps, walk.eta, walk.inference,
                                             walk.particles, walk.cls, walk.guidance, scene.seed, model, scene.sketch],
                         [walk.picture, walk.status, record, walk.scrub, walk.metrics], api_name="lab_walk", **HEAVY)
    walk.stop.click(None, None, None, cancels=[run, train], api_name="lab_stop", api_visibility="private")
    scene.sketch.input(lambda: vl.DRAWN, None, scene.data, api_name="lab_use_drawing", api_visibility="undocumented",
                       **CHEAP)
    # reads the session's recorded walk: callable, but not in the API docs
    walk.scrub.input(clear_errors(vl.walk_frame), [record, walk.scrub],
                     [walk.picture, walk.frame_text, scene.t, scene.schedule], api_name="lab_scrub",
                     api_visibility="undocumented", trigger_mode="always_last", **CHEAP)


def lab_tab(ctx: AppContext, demo: gr.Blocks) -> None:
    """2D lab: a whole data distribution, its particles and the learned field on one screen, and the exact denoiser."""
    with gr.Tab("2D lab", id="lab"):
        gr.Markdown(INTRO, elem_id="lab-intro")
        scene = lab_scene()
        walk = lab_walk_widgets()
        model = gr.State(None, time_to_live=RESULT_TTL_S)  # the session's trained network
        record = gr.State(None, time_to_live=RESULT_TTL_S)  # the session's recorded walk
    ctx.widgets.update({"lab.data": scene.data, "lab.t": scene.t, "lab.sampler": walk.sampler, "lab.seed": scene.seed})
    wire_views(demo, scene, walk, model)
    wire_runs(ctx, scene, walk, model, record)
