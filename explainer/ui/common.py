"""What the tabs share: the app's context, the concurrency rules, errors shown as messages, and common widgets."""
from __future__ import annotations

import contextlib
import functools
import inspect
from dataclasses import dataclass, field

import gradio as gr

from ..paths import ASSETS
from ..server.sessions import SessionWork
from ..views import client as vc
from ..views import defaults as vd
from ..views import forward as vf
from ..views import model_slot as views
from ..views import tour as vt
from ..views.inputs import (DIGIT_EXAMPLES, EMOJI_EXAMPLES, class_choices, class_word, default_class,
                            default_example, example_images, image_word)
from ..views.model_slot import ModelUnavailable

PHOTOS = [str(ASSETS / n) for n in ("astronaut.jpg", "camera.png", "coffee.jpg", "chelsea.jpg")]
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
# Output formats: JPEG for photos and noise that change on every slider move (PIL encodes a noisy 256 px picture
# in about 2 ms as JPEG, 24 ms as WebP, Gradio's default), PNG for crisp digits and plots.
GUIDANCE_INFO = "starts at the model card's recommended w; a larger w trades variety for likeness to the class"


class UploadImage(gr.Image):
    """gr.Image that hands the uploaded file's path to the backend unopened; explainer.render.images validates it."""

    is_template = True  # render with gr.Image's frontend

    def preprocess(self, payload):
        if payload is None or payload.path is None:
            return super().preprocess(payload)
        return str(payload.path)


@contextlib.contextmanager
def user_errors():
    """A backend error meant for the user (bad input, missing model) becomes a gr.Error message, not a traceback."""
    try:
        yield
    except USER_ERRORS as e:
        raise gr.Error(str(e)) from None


def clear_errors(fn):
    """``fn`` (a plain or a streaming handler) with its user errors shown as messages (``user_errors``)."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def stream(*args, **kwargs):
            with user_errors():
                yield from fn(*args, **kwargs)
        return stream

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with user_errors():
            return fn(*args, **kwargs)
    return wrapper


@dataclass
class AppContext:
    """What the model tabs need: the models on offer, the session's chosen model, and what follows a switch.

    ``model_name`` holds the session's model (a gr.State: the endpoints keep their inputs, and API users pick a
    model with /select_model). Each tab registers with ``follow`` the components that change with the model.
    """

    registry: views.ModelRegistry
    model_name: gr.State
    followers: list = field(default_factory=list)  # (component, update(slot) -> its new props)
    defaults: list = field(default_factory=list)  # (show(model_name) -> outputs, outputs, api_name): see show_default
    pickers: list = field(default_factory=list)  # each model tab's model menu (ui/models.py)
    widgets: dict = field(default_factory=dict)  # "<tab>.<widget>" -> component, for the tour's "Show me"
    work: SessionWork = field(default_factory=SessionWork)  # one walk at a time per session

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

    def show_default(self, show, outputs: list, api_name: str) -> None:
        """Fill ``outputs`` with the tab's default result when a page opens and after a model switch, so the tab
        never opens on empty frames: ``show(model_name)`` returns them (``default_results`` gives the results)."""
        gr.set_static_paths([vd.folder()])  # their picture files: served from there, never rewritten per session
        self.defaults.append((show, outputs, api_name))

    def default_results(self, model_name: str | None):
        """The session's model's default results (``views.defaults``), or None where the model is unavailable
        (its notice says why)."""
        slot = self.registry.slot(model_name)
        return vd.of(slot.model) if slot.ok else None


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


def guidance_default(model) -> float:
    """A guidance slider's value for ``model``: its card's recommended w (1 for the digits, 5 for the emoji)."""
    return model.recommended_guidance if model is not None else 1.0
