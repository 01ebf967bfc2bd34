"""The math tab: the equations each tab uses, with their sources."""
from __future__ import annotations

import gradio as gr

from ..views import equations as vm
from .common import tab_intro


def math_tab() -> None:
    """Math: the equations each tab uses, with their sources."""
    with gr.Tab("Math", id="math"):
        tab_intro("math")
        gr.Markdown(vm.ALL, latex_delimiters=vm.LATEX_DELIMITERS, elem_id="math")
