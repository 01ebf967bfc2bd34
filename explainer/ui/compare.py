"""The compare-schedules tab: the same x_0 and eps under linear and cosine at one t, painted in the page."""
from __future__ import annotations

import gradio as gr

from ..views import client as vc
from ..views import forward as vf
from ..views.inputs import DIGIT_EXAMPLES, SEED_MAX
from .common import CHEAP, PHOTOS, AppContext, UploadImage, api_outputs, clear_errors, page_view, tab_intro


def compare_tab(ctx: AppContext, demo: gr.Blocks) -> None:
    """Compare schedules: the same x_0 and eps under linear and cosine at one t, painted in the page."""
    with gr.Tab("Compare schedules", id="compare"):
        tab_intro("compare")
        with gr.Row():
            c_image = UploadImage(PHOTOS[0], type="filepath", label="x_0", sources=["upload", "clipboard"],
                                  height=220, elem_id="cmp-image")
            with gr.Column():
                gr.Examples(PHOTOS + DIGIT_EXAMPLES[:3], inputs=c_image, examples_per_page=8)
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
