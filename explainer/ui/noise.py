"""The noise-removal tab: subtract all the predicted noise at once, x0_hat | x_t | eps_hat at every timestep."""
from __future__ import annotations

import gradio as gr

from ..server.sessions import RESULT_TTL_S
from ..views import noise as vn
from ..views.inputs import GUIDANCE_MAX, SEED_MAX, UNCONDITIONAL, default_example, image_word
from .common import (CHEAP, GUIDANCE_INFO, HEAVY, AppContext, UploadImage, class_dropdown, clear_errors,
                     guidance_default, image_size_words, model_examples, model_T)
from .models import model_tab_head


NOTHING_YET = ("x0_hat | x_t | eps_hat at every timestep appear here, with the error per t. Press **Compute**.")


def computed(result):
    """The tab's recorded result, or a clear message when nothing was computed yet."""
    if result is None:
        raise ValueError("nothing computed yet: press 'Compute' first")
    return result


def source_choices(model) -> list[tuple[str, str]]:
    """The noise tab's sources as (label, value): the real-image value stays the same for every model."""
    return [("reverse walk", "reverse walk"), (f"real {image_word(model)}", vn.REAL_IMAGE)]


def default_result(ctx: AppContext):
    """The tab's outputs for the model's default real image (``views.defaults``): a page opens on them."""
    def noise_removal_default(model_name=None):
        found = ctx.default_results(model_name)
        if found is None:  # no model: the outputs say what will appear
            return None, None, gr.Slider(0, 1, value=0, interactive=False), None, NOTHING_YET, None
        d = found.noise
        return (d.grid, d.result, gr.Slider(maximum=len(d.result) - 1, value=0, interactive=True), d.triplet, d.text,
                vn.noise_error_curve(d.result, 0))
    return noise_removal_default


def noise_tab(ctx: AppContext) -> None:
    """Subtract all predicted noise: x0_hat | x_t | eps_hat at every timestep."""
    @clear_errors
    def noise_removal(source, image, digit, guidance, num_t, seed, model_name=None):
        # (``digit`` is the class label's published argument name)
        res = vn.noise_removal(ctx.need_model(model_name), source, image, digit, guidance, num_t, seed)
        triplet, text = vn.noise_triplet(res, 0)
        return (vn.noise_grid(res), res, gr.Slider(maximum=len(res) - 1, value=0, interactive=True), triplet, text,
                vn.noise_error_curve(res, 0))

    image_label = "real {what} ({size} after conversion)"
    with gr.Tab("Subtract all predicted noise", id="noise"):
        n_notice = model_tab_head(ctx, "noise", "noise-model-picker", "noise-notice")
        with gr.Row():
            with gr.Column(scale=1):
                n_source = gr.Radio(source_choices(ctx.model), value=vn.REAL_IMAGE, label="source",
                                    elem_id="noise-source")
                n_image = UploadImage(default_example(ctx.model), type="filepath",
                                      label=image_label.format(what=image_word(ctx.model),
                                                               size=image_size_words(ctx.model)),
                                      sources=["upload", "clipboard"], height=160, elem_id="noise-image")
                model_examples(ctx, n_image, image_label, "noise")
                n_class = gr.Dropdown(ctx.classes, value=UNCONDITIONAL, label="condition on class",
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
                n_text = gr.Markdown(NOTHING_YET, elem_id="noise-text")
                n_curve = gr.Plot(label="error per t")
        n_grid = gr.Image(label="every timestep: x0_hat | x_t | eps_hat (every eps_hat on one scale, see the text "
                          "above)", interactive=False, elem_id="noise-grid", format="png")
        n_result = gr.State(None, time_to_live=RESULT_TTL_S)
    ctx.widgets.update({"noise.source": n_source, "noise.digit": n_class, "noise.guidance": n_guidance,
                        "noise.num_t": n_num_t, "noise.seed": n_seed})

    ctx.follow(n_notice, lambda slot: slot.notice())
    ctx.follow(n_source, lambda slot: gr.Radio(choices=source_choices(slot.model)))
    ctx.follow(n_class, class_dropdown("condition on class", UNCONDITIONAL))
    ctx.follow(n_num_t, lambda slot: gr.Slider(maximum=min(vn.MAX_T, model_T(slot.model))))
    ctx.follow(n_guidance, lambda slot: gr.Slider(value=guidance_default(slot.model)))
    outputs = [n_grid, n_result, n_index, n_triplet, n_text, n_curve]
    ctx.show_default(default_result(ctx), outputs, "noise_removal_default")
    n_run.click(noise_removal, [n_source, n_image, n_class, n_guidance, n_num_t, n_seed, ctx.model_name],
                outputs, api_name="noise_removal", **HEAVY)
    n_index.change(clear_errors(lambda result, index: vn.noise_triplet(computed(result), index)), [n_result, n_index],
                   [n_triplet, n_text], api_name="noise_removal_at", api_visibility="undocumented", **CHEAP)
    n_index.release(clear_errors(lambda result, index: vn.noise_error_curve(computed(result), int(index))),
                    [n_result, n_index], n_curve, api_name="noise_removal_curve", api_visibility="undocumented",
                    concurrency_id="plots", concurrency_limit=2, show_progress="hidden")
