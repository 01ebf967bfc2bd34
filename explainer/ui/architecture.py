"""The architecture tab: the U-Net's stages, how t and the class enter, and feature maps of an x_t."""
from __future__ import annotations

import gradio as gr

from ..views import arch as va
from ..views.inputs import SEED_MAX, default_example, image_word
from .common import (HEAVY, AppContext, UploadImage, class_dropdown, clear_errors, image_size_words, model_examples,
                     model_T)
from .models import model_tab_head


def architecture_views(model) -> tuple:
    """The architecture table and the conditioning text of a model (empty where it is not an explainer U-Net)."""
    if model is None or not isinstance(model.net, va.UNet):
        return None, ""
    return va.architecture_table(model), va.conditioning_markdown(model)


def default_maps(ctx: AppContext):
    """x_t and the feature maps at the tab's default settings (``views.defaults``): a page opens on them."""
    def feature_maps_default(model_name=None):
        found = ctx.default_results(model_name)
        return (None, None) if found is None else (found.x_t, found.maps)
    return feature_maps_default


def architecture_tab(ctx: AppContext) -> None:
    """Architecture: the U-Net's stages, how t and the class enter, and feature maps of an x_t."""
    def feature_maps(image, t, digit, seed, model_name=None):
        # (``digit`` is the class label's published argument name)
        return va.feature_maps(ctx.need_model(model_name), image, t, digit, seed)

    image_label = "{what} ({size} after conversion)"
    with gr.Tab("Architecture", id="architecture"):
        a_notice = model_tab_head(ctx, "architecture", "arch-model-picker", "arch-notice")
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
                a_class = gr.Dropdown(ctx.classes, value=ctx.default_class, label="class given to the network",
                                      elem_id="arch-class")
                a_seed = gr.Number(0, precision=0, minimum=0, maximum=SEED_MAX, label="seed", elem_id="arch-seed")
                a_run = gr.Button("Show feature maps", variant="primary", elem_id="arch-run")
            with gr.Column(scale=2):
                a_xt = gr.Image(label="x_t", interactive=False, height=200, elem_id="arch-xt", format="png")
                a_maps = gr.Image(label="feature maps after each stage (first 8 channels, each scaled to "
                                  "its own range)", interactive=False, elem_id="arch-maps", format="png")
    ctx.widgets.update({"architecture.t": a_t, "architecture.digit": a_class, "architecture.seed": a_seed})

    ctx.follow(a_notice, lambda slot: slot.notice())
    ctx.follow(a_table, lambda slot: architecture_views(slot.model)[0])
    ctx.follow(a_cond, lambda slot: architecture_views(slot.model)[1])
    ctx.follow(a_t, lambda slot: gr.Slider(maximum=model_T(slot.model)))
    ctx.follow(a_class, class_dropdown("class given to the network"))
    ctx.show_default(default_maps(ctx), [a_xt, a_maps], "feature_maps_default")
    a_run.click(clear_errors(feature_maps), [a_image, a_t, a_class, a_seed, ctx.model_name], [a_xt, a_maps],
                api_name="feature_maps", **HEAVY)
