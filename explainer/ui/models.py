"""The model picker: a menu in each model tab, the session's chosen model, and what follows a switch."""
from __future__ import annotations

import gradio as gr

from .common import AppContext, clear_errors, tab_intro

MENU_LABEL = "model (of the reverse, noise-removal and architecture tabs)"


def model_menu(ctx: AppContext, elem_id: str) -> gr.Dropdown:
    """The model tab's menu of diffusion checkpoints, each named in words (its value stays the folder's name)."""
    registry = ctx.registry
    picker = gr.Dropdown(registry.choices(), value=registry.default, label=MENU_LABEL,
                         interactive=len(registry.names) > 1, elem_id=elem_id)
    ctx.pickers.append(picker)
    return picker


def model_tab_head(ctx: AppContext, tab: str, picker_id: str, notice_id: str) -> gr.Markdown:
    """The top of a model tab: its opening sentences, its model menu, and the notice of what is loaded (returned)."""
    tab_intro(tab)
    model_menu(ctx, picker_id)
    return gr.Markdown(ctx.slot.notice(), elem_id=notice_id)


def wire_model_picker(ctx: AppContext, demo: gr.Blocks) -> None:
    """Switching models in any tab's menu: load the chosen one (once; kept afterwards), update every follower and
    the other menus, then show the tabs' default results for it. A page opens on the default model's results."""
    @clear_errors
    def select_model(model):
        name = ctx.registry.check_name(model)
        slot = ctx.registry.slot(name)
        if not slot.ok:
            gr.Warning(f"The model {name} is unavailable: {slot.error}")
        return name, *(update(slot) for _, update in ctx.followers), *(name for _ in ctx.pickers)

    followers = [ctx.model_name] + [c for c, _ in ctx.followers] + ctx.pickers
    for k, picker in enumerate(ctx.pickers):
        # (the first menu's switch is the published /select_model; a menu's .input is the learner's choice only,
        # so the menus that follow it do not switch again)
        name = "select_model" if k == 0 else f"select_model_{picker.elem_id}".replace("-", "_")
        switched = picker.input(select_model, [picker], followers, api_name=name, concurrency_limit=None,
                                show_progress="minimal", api_visibility="public" if k == 0 else "private")
        for show, outputs, api_name in ctx.defaults:
            switched.success(clear_errors(show), [ctx.model_name], outputs, api_name=f"{api_name}_{name}",
                             api_visibility="private", concurrency_limit=None)
    for show, outputs, api_name in ctx.defaults:
        demo.load(clear_errors(show), [ctx.model_name], outputs, api_name=api_name, concurrency_limit=None)
