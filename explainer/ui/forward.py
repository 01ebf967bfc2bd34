"""The forward diffusion tab: x_t from the closed form, its numbers, curves and histogram painted in the page."""
from __future__ import annotations

import gradio as gr

from ..views import client as vc
from ..views import forward as vf
from ..views import histogram as vh
from ..views.inputs import DIGIT_EXAMPLES, SEED_MAX
from .common import CHEAP, PHOTOS, AppContext, UploadImage, api_outputs, clear_errors, page_view, tab_intro


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
