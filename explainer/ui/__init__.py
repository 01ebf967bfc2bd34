"""The Gradio front end: one module per tab, the shared widgets, the model picker and the tour's wiring.

What each tab computes lives in ``explainer.views`` (no gradio there); serving lives in ``explainer.server``.
"""
from __future__ import annotations

import gradio as gr

from ..server.sessions import keep_bounded
from ..views import defaults as vd
from ..views import model_slot as views
from .architecture import architecture_tab
from .common import CSS, AppContext
from .compare import compare_tab
from .forward import forward_tab
from .lab import lab_tab
from .math import math_tab
from .models import wire_model_picker
from .noise import noise_tab
from .reverse import reverse_tab
from .tour import tour_bar, tour_tab, wire_tour

__all__ = ["CSS", "build_app"]


def model_registry(models: views.ModelSlot | views.ModelRegistry | None) -> views.ModelRegistry:
    """The models on offer: one slot, a registry as given, or (None) every diffusion checkpoint under
    checkpoints/, with $DDPM_EXPLAINER_CHECKPOINT (or the shipped one) as the default."""
    if models is None:
        return views.ModelRegistry.discover()
    if isinstance(models, views.ModelSlot):
        return views.ModelRegistry.of(models)
    return models


def build_app(models: views.ModelSlot | views.ModelRegistry | None = None, cache_folder=None) -> gr.Blocks:
    """The whole UI. ``models``: see ``model_registry``. ``cache_folder``: the folder Gradio writes this app's files
    to when it is the app's own (``server.launch.own_cache_folder``): all of it is kept within the bound."""
    registry = model_registry(models)
    slot = registry.slot()  # the default model is loaded now (and its fast path started); the others on first use
    if slot.ok:
        vd.warm_later(slot.model)  # its tabs' default results: computed in the background once the app serves
    with gr.Blocks(title="DDPM explainer", delete_cache=(900, 3600)) as demo:
        gr.Markdown("# Denoising diffusion, step by step", elem_id="app-title")
        ctx = AppContext(registry, gr.State(registry.default))
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
        wire_model_picker(ctx, demo)
        wire_tour(ctx, tabs, tour, bar)
        keep_bounded(demo, ctx.work, cache_folder)
    return demo
