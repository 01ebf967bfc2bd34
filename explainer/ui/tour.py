"""The tour: its tab, the bar above the tabs that keeps a step's question in view, and their events."""
from __future__ import annotations

import json
from dataclasses import dataclass

import gradio as gr

from ..views import equations as vm
from ..views import tour as vt
from ..views.model_slot import ModelUnavailable
from .common import CHEAP, HEAVY, AppContext, clear_errors, tab_intro

RUN_BUTTONS = {"reverse": "rev-run", "noise": "noise-run", "architecture": "arch-run", "lab": "lab-run"}


@dataclass
class TourParts:
    """The tour's widgets in its tab: the step, its text and answer, the buttons, and the tab itself."""

    step: gr.Dropdown
    text: gr.Markdown
    answer: gr.Markdown
    show: gr.Button
    reveal: gr.Button
    previous: gr.Button
    next: gr.Button
    tab: gr.Tab


@dataclass
class TourBar:
    """Above the tabs: the step's question while the learner looks at another tab, with Reveal, Back and Next."""

    group: gr.Group
    question: gr.Markdown
    answer: gr.Markdown
    reveal: gr.Button
    back: gr.Button
    next: gr.Button


def tour_bar() -> TourBar:
    """Above the tabs, hidden until "Show me": the step's question, so it can be answered while looking."""
    with gr.Group(visible=False, elem_id="tour-bar") as group:
        question = gr.Markdown(elem_id="tour-bar-question")
        answer = gr.Markdown(elem_id="tour-bar-answer")
        with gr.Row():
            reveal = gr.Button("Reveal the answer", size="sm", elem_id="tour-bar-reveal")
            back = gr.Button("Back to the tour", size="sm", elem_id="tour-bar-back")
            nxt = gr.Button("Next step ▸", size="sm", elem_id="tour-bar-next")
    return TourBar(group, question, answer, reveal, back, nxt)


def tour_tab() -> TourParts:
    """Tour: the story in short steps; "Show me" opens the tab that makes the point, "Reveal" the live answer."""
    with gr.Tab("Tour", id="tour") as tab:
        with gr.Row(equal_height=True):
            gr.Markdown(vt.WHAT_IT_IS, elem_id="tour-what")
            gr.Image(vt.opening_strip(), label="a photo turned into noise: the forward process from t = 0 to 1000",
                     show_label=False, container=False, interactive=False, height=90, format="jpeg", buttons=[],
                     elem_id="tour-strip")
        tab_intro("tour")
        step = gr.Dropdown([(s.title, i) for i, s in enumerate(vt.STEPS)], value=0, label="step", elem_id="tour-step")
        text = gr.Markdown(vt.step_markdown(0), latex_delimiters=vm.LATEX_DELIMITERS, elem_id="tour-text")
        with gr.Row():
            previous = gr.Button("◂ Previous", size="sm", elem_id="tour-prev")
            show = gr.Button("Show me", variant="primary", elem_id="tour-show")
            reveal = gr.Button("Reveal the answer", elem_id="tour-reveal")
            nxt = gr.Button("Next ▸", size="sm", elem_id="tour-next")
        answer = gr.Markdown(elem_id="tour-answer")
    return TourParts(step, text, answer, show, reveal, previous, nxt, tab)


def tour_run_js() -> str:
    """After "Show me": repaint the page-painted views (their t was set from the server) and press the tab's run
    button where the step's picture needs the network."""
    buttons = [RUN_BUTTONS.get(s.tab) if s.run else None for s in vt.STEPS]
    return ("(i) => { const views = window.__ddpmViews || {};"
            " for (const v of Object.values(views)) if (v.sync) v.sync();"
            f" const id = {json.dumps(buttons)}[Number(i)];"
            " if (id) setTimeout(() => document.getElementById(id)?.click(), 100); return []; }")


def wire_tour(ctx: AppContext, tabs: gr.Tabs, tour: TourParts, bar: TourBar) -> None:
    """The tour's events: choose a step, Show me (tab and widgets, then the run), Reveal, Back and Next."""
    keys = vt.setting_keys()
    widgets = [ctx.widgets[k] for k in keys]
    last = len(vt.STEPS) - 1

    def show_step(index):
        return vt.step_markdown(index), ""

    def show_me(index):
        tab, settings, _ = vt.show_me(index)
        step = vt.step(index)
        question = f"**Tour, {step.title}.** {step.question}"
        values = [settings[k] if k in settings else gr.skip() for k in keys]
        return gr.Tabs(selected=tab), gr.Group(visible=True), question, "", *values

    def reveal(index, model_name=None):
        vt.step(index)  # (a bad index is refused before any work)
        try:
            model = ctx.need_model(model_name)
        except ModelUnavailable:
            model = None
        answer = vt.reveal(index, model)
        return answer, answer

    def move(index, by):
        vt.step(index)  # checked
        return min(max(int(index) + by, 0), last)

    tour.step.change(clear_errors(show_step), tour.step, [tour.text, tour.answer], api_name="tour_step", **CHEAP)
    tour.previous.click(clear_errors(lambda i: move(i, -1)), tour.step, tour.step, api_name="tour_previous", **CHEAP)
    tour.next.click(clear_errors(lambda i: move(i, 1)), tour.step, tour.step, api_name="tour_next", **CHEAP)
    shown = tour.show.click(clear_errors(show_me), tour.step, [tabs, bar.group, bar.question, bar.answer, *widgets],
                            api_name="tour_show", **CHEAP)
    shown.success(None, tour.step, None, js=tour_run_js(), api_name="tour_run", api_visibility="private")
    gr.on([tour.reveal.click, bar.reveal.click], clear_errors(reveal), [tour.step, ctx.model_name],
          [tour.answer, bar.answer], api_name="tour_reveal", **HEAVY)
    bar.back.click(lambda: (gr.Tabs(selected="tour"), gr.Group(visible=False)), None, [tabs, bar.group],
                   api_name="tour_back", api_visibility="private", **CHEAP)
    bar.next.click(clear_errors(lambda i: (move(i, 1), gr.Tabs(selected="tour"), gr.Group(visible=False))), tour.step,
                   [tour.step, tabs, bar.group], api_name="tour_bar_next", api_visibility="private", **CHEAP)
    tour.tab.select(lambda: gr.Group(visible=False), None, bar.group, api_name="tour_opened",
                    api_visibility="private", **CHEAP)

