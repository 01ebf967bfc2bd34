"""The model picker: the header's menu of diffusion checkpoints and the session's chosen model."""
from __future__ import annotations

import gradio as gr

from ..views import model_slot as views
from .common import AppContext, clear_errors


def model_picker(registry: views.ModelRegistry) -> tuple[gr.Dropdown, gr.State]:
    """The header's model menu (every diffusion checkpoint found, each loaded once) and the session's model."""
    names = registry.names
    picker = gr.Dropdown(names, value=registry.default, label="model of the reverse, noise-removal and "
                         "architecture tabs", interactive=len(names) > 1, elem_id="model-picker")
    return picker, gr.State(registry.default)


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
