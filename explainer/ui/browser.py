"""The reverse walk computed in the learner's browser: the vendored runtime, the view, and what Sample does.

**Sample** asks the server for one small payload (``/reverse_walk_payload``, ``views.browser_walk``); the page
(``views/static/walk.js``) runs every step with ONNX Runtime Web, paints each frame, and keeps the frames for its
scrubber, the step anatomy and a GIF. Where the payload says the server must walk (a sampler outside the affine
form, a side-by-side mode, the learner's choice) or the page cannot (no WebAssembly, the model or the payload
failed), the page presses a hidden button that runs the server's walk as before (``/reverse_walk``), whose
status line then says "computed on the server".
"""
from __future__ import annotations

import functools
from pathlib import Path

import gradio as gr

from ..server import guard
from ..views import browser_walk as vb
from .common import CHEAP, AppContext, clear_errors

ORT_DIR = Path(__file__).resolve().parent / "static" / "ort"  # tools/vendor_ort.sh writes it; README.md there
RUNTIME = {"module": "ort.wasm.min.mjs", "glue": "ort-wasm-simd-threaded.mjs", "wasm": "ort-wasm-simd-threaded.wasm"}
SERVER_WORDS = "**Computed on the server.**"


def runtime_files() -> dict:
    """The vendored runtime's files as Gradio file data (Gradio adds each one's URL)."""
    return {k: {"path": str(ORT_DIR / name), "meta": {"_type": "gradio.FileData"}} for k, name in RUNTIME.items()}


def serve_static() -> None:
    """Serve the runtime and the models' ONNX files from their folders, cached by browsers for a year (their
    names never change content: the runtime's carries its version in this folder, a model's its weights' hash)."""
    vb.WEB_MODELS_DIR.mkdir(parents=True, exist_ok=True)
    gr.set_static_paths([ORT_DIR, vb.WEB_MODELS_DIR])
    for folder in (ORT_DIR, vb.WEB_MODELS_DIR):
        guard.cache_for_a_year(folder)


def where_radio(elem_id: str) -> gr.Radio:
    return gr.Radio(list(vb.WHERE), value=vb.WHERE[0], label="compute the walk",
                    info="in your browser (the page runs the network itself) or on the server", elem_id=elem_id)


def walk_view(ids: dict) -> gr.HTML:
    """The page's own walk: its status line, the live frames, a scrubber, the step taken apart, a strip, a GIF."""
    js, css = vb.page_code()
    serve_static()
    return gr.HTML(None, html_template="", css_template=css, js_on_load=js, elem_id=ids["view"], ids=ids)


def payload_handler(ctx: AppContext):
    """/reverse_walk_payload: the walk's payload for the page (``views.browser_walk.walk_payload``)."""
    def reverse_walk_payload(digit, guidance, sampler, steps, schedule, seed, compare_mode, steps_b, clip_x0=False,
                             label_b=None, guidance_b=None, model_name=None, where=vb.WHERE[0]):
        # (the reverse walk's arguments, as /reverse_walk takes them, and where to compute it)
        payload = vb.walk_payload(ctx.need_model(model_name), digit, guidance, sampler, steps, schedule, seed,
                                  compare_mode, steps_b, clip_x0, label_b, guidance_b, where=where)
        return {**payload, "runtime": runtime_files()} if payload["run"] == "browser" else payload
    return clear_errors(reverse_walk_payload)


def on_the_server(handler):
    """A streaming walk handler whose status line (its third output) also says where the walk ran."""
    @functools.wraps(handler)
    def walk(*args, **kwargs):
        for out in handler(*args, **kwargs):
            if isinstance(out[2], str):
                out = (*out[:2], f"{out[2]} {SERVER_WORDS}", *out[3:])
            yield out
    return walk


def wire_browser_walk(ctx: AppContext, run: gr.Button, inputs: list, where: gr.Radio, view: gr.HTML) -> None:
    """Sample -> the payload -> the page's walk (or the server's, which the page presses itself)."""
    run.click(payload_handler(ctx), [*inputs, where], view, api_name="reverse_walk_payload",
              api_visibility="undocumented", **CHEAP)  # (for the page: its files are the runtime, 14 MB)
