"""The forward diffusion tab: x_t from the closed form, its numbers, curves and histogram painted in the page."""
from __future__ import annotations

import gradio as gr

from ..views import client as vc
from ..views import forward as vf
from ..views import histogram as vh
from ..views import strips as vs
from ..views.inputs import DIGIT_EXAMPLES, SEED_MAX
from .common import CHEAP, PHOTOS, AppContext, UploadImage, api_outputs, clear_errors, page_view, tab_intro


def strips_view(elem_id: str, schedule_radio: str) -> gr.HTML:
    """The forward tab's two strips, painted in the page from x_0 and eps (``views.strips``)."""
    js, css = vs.page_code()
    return gr.HTML(None, html_template="", css_template=css, js_on_load=js, elem_id=elem_id,
                   ids={"schedule": schedule_radio}, **vs.strip_props())


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
                gr.Examples(PHOTOS + DIGIT_EXAMPLES[:3], inputs=f_image, examples_per_page=8)
        f_view = page_view("fwd-view", vc.forward_props(), "fwd-t", 500, "fwd-schedule")
        f_strips = strips_view("fwd-strips", "fwd-schedule")  # (painted in the page: views/static/strips.js)
        xt, numbers, curves, hist, hist_text, strip10, strip1000 = api_outputs("jpeg", "md", "png", "png", "md",
                                                                                "jpeg", "jpeg")
    ctx.widgets.update({"forward.t": f_t, "forward.schedule": f_schedule, "forward.seed": f_seed})

    # the page repaints on every t or schedule move; the server sends x_0 and eps when the image or seed changes
    gr.on([demo.load, f_image.change, f_seed.change], clear_errors(vc.pixels_payload), [f_image, f_seed], f_view,
          api_name="forward_pixels", api_visibility="undocumented", trigger_mode="always_last", **CHEAP)
    # the strips: x_0 at their size and eps when the image or seed changes; the page draws both (and the chain)
    gr.on([demo.load, f_image.change, f_seed.change], clear_errors(vs.strip_pixels), [f_image, f_seed], f_strips,
          api_name="forward_strip_pixels", api_visibility="undocumented", trigger_mode="always_last", **CHEAP)
    # the same views computed on the server, for API users (no trigger in the page)
    f_inputs = [f_image, f_t, f_schedule, f_seed]
    gr.on([], clear_errors(vf.forward_noise), f_inputs, [xt, numbers], api_name="forward_noise", **CHEAP)
    gr.on([], clear_errors(vf.schedule_curves_image), [f_t, f_schedule], curves, api_name="forward_curves", **CHEAP)
    gr.on([], clear_errors(vh.pixel_histogram_view), f_inputs, [hist, hist_text], api_name="forward_histogram",
          **CHEAP)
    gr.on([], clear_errors(vf.forward_strips), [f_image, f_schedule, f_seed], [strip10, strip1000],
          api_name="forward_strips", concurrency_id="strips", concurrency_limit=1)  # (one at a time: walks first)
