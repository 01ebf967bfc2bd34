"""The reverse diffusion tab: streamed walks, side by side, a scrubber and the step taken apart."""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from ..server.sessions import RESULT_TTL_S, session_of
from ..views import decided as vdc
from ..views import quality_chart as vq
from ..views import reverse as vr
from ..views import step as vs
from ..views import walk as vw
from ..views.inputs import GUIDANCE_MAX, SEED_MAX, class_choices, class_word, default_class
from .browser import on_the_server, walk_view, where_radio, wire_browser_walk
from .common import (CHEAP, GUIDANCE_INFO, HEAVY, AppContext, class_dropdown, clear_errors, guidance_default,
                     model_T)
from .models import model_tab_head

NOTHING_YET = ("The walk appears here: its last picture, a scrubber over its frames, one step taken apart, 10 frames "
               "and a GIF. Press **Sample**.")
SAMPLER_INFO = ("DDPM adds fresh noise each step; DDIM, Euler, Heun and DPM++ 2M follow the ODE without it (Heun "
                "calls the network twice a step); Euler a adds noise as DDPM does. The ODE samplers step through "
                "Karras noise levels, dense where the picture forms")
CLIP_INFO = ("what the reference implementations do: x0_hat beyond the data's range is cut back, and the step "
             "takes the posterior mean towards it. The article's formula has no clipping; a small model's colours "
             "drift without it. On by default where the model's card recommends it")


def clip_default(model) -> bool:
    """The clip checkbox's value for ``model``: its card's recommendation (off for the digits, on for the emoji)."""
    return model is not None and model.recommended_clip_x0


def stream_walk(ctx: AppContext, gifs: vr.GifStore):
    """The reverse walk handler: streams each walk's panel, then the recorded walks, scrubber, strip and GIF."""
    def reverse_walk(digit, guidance, sampler, steps, schedule, seed, compare_mode, steps_b, clip_x0=False,
                     label_b=None, guidance_b=None, model_name=None, request: gr.Request = None,
                     progress=gr.Progress()):
        # (``digit`` is the class label's published argument name; a walk this session started before stops)
        walk = vr.reverse_walk(ctx.need_model(model_name), digit, guidance, sampler, steps, schedule, seed,
                               compare_mode, steps_b, clip_x0, label_b, guidance_b)
        for u in ctx.work.newest(session_of(request), walk):
            progress((u.step, u.total), desc="sampling")
            panels = [p if p is not None else gr.skip() for p in u.panels]
            if len(panels) == 1:  # one walk: hide the second picture
                panels.append(gr.Image(value=None, visible=False) if u.step == 0 else gr.skip())
            elif u.step == 0:
                panels[1] = gr.Image(value=u.panels[1], visible=True)
            if not u.finished:
                yield *panels, u.status, gr.skip(), gr.skip(), gr.skip(), gr.skip()
                continue
            last = u.walks[0].done
            done = (*panels, u.status, u.walks, gr.Slider(maximum=last, value=last, interactive=True),
                    vr.walk_strip(u.walks))
            yield *done, gr.skip()  # the finished walk at once,
            # then its GIF, with the scrubber's range but not its value (the learner may be scrubbing already)
            yield *done[:-2], gr.Slider(maximum=last, interactive=True), done[-1], gifs.save(u.walks)
    return clear_errors(reverse_walk)


def default_walk(ctx: AppContext):
    """The tab's outputs at its default settings (``views.defaults``), for a page that opens or a model switch."""
    def reverse_default(model_name=None):
        found = ctx.default_results(model_name)
        if found is None:  # no model: the outputs say what will appear
            return (None, gr.Image(visible=False), NOTHING_YET, None, gr.Slider(0, 1, value=0, interactive=False),
                    None, None, None, None, "")
        d = found.reverse
        return (d.panel, gr.Image(value=None, visible=False), d.status, d.walks,
                gr.Slider(maximum=d.walks[0].done, value=d.index, interactive=True), d.strip, d.gif, d.frame, d.step,
                d.step_text)
    return reverse_default


def side_by_side(mode):
    """The second walk's settings and picture: shown in the side-by-side modes (its steps in "two step counts", its
    class or guidance in the two-condition modes, with "when is the picture decided?" under the walks)."""
    conditions = mode in vr.CONDITION_MODES
    return (gr.Slider(visible=mode == "two step counts"), gr.Dropdown(visible=mode == "two classes"),
            gr.Slider(visible=mode == "two guidance scales"),
            gr.skip() if mode != "off" else gr.Image(visible=False), gr.Plot(visible=conditions),
            gr.Markdown(visible=conditions))


def quality_chart(ctx: AppContext):
    """The measured chart with the learner's walk marked (``views.quality_chart``); hidden where none exists."""
    def reverse_quality(sampler, steps, model_name=None):
        chart, text = vq.sampler_quality(ctx.need_model(model_name), sampler, steps)
        return gr.Image(chart, visible=chart is not None), text
    return clear_errors(reverse_quality)


def second_guidance(model) -> float:
    """The second walk's guidance in "two guidance scales": w = 5 beside the card's w = 1, else w = 1."""
    return 5.0 if guidance_default(model) == 1.0 else 1.0


def when_decided(ctx: AppContext):
    """After a two-condition walk: the distance between the two walks' x0_hat at every step, and when each
    picture's class was decided (``views.decided``); nothing for the other modes."""
    def reverse_decided(walks, compare_mode, model_name=None):
        if compare_mode not in vr.CONDITION_MODES or not walks or len(walks) != 2:
            return gr.Plot(value=None, visible=False), gr.Markdown("", visible=False)
        d = vdc.decided(walks, ctx.need_model(model_name))
        names = vdc.short_names(walks)
        return gr.Plot(vdc.decided_figure(d, names), visible=True), gr.Markdown(vdc.decided_text(d, names),
                                                                                  visible=True)
    return clear_errors(reverse_decided)


def _settings(ctx: AppContext) -> SimpleNamespace:
    """The left column: what the walk is asked for, and its buttons."""
    w = SimpleNamespace()
    w.cls = gr.Dropdown(ctx.classes, value=ctx.default_class, label=class_word(ctx.model), elem_id="rev-class")
    w.guidance = gr.Slider(0, GUIDANCE_MAX, value=guidance_default(ctx.model), step=0.5,
                           label="guidance scale w (1 = plain conditional, 0 = unconditional)", info=GUIDANCE_INFO,
                           elem_id="rev-guidance")
    w.sampler = gr.Radio(vw.SAMPLER_CHOICES, value="ddpm", label="sampler", info=SAMPLER_INFO, elem_id="rev-sampler")
    w.steps = gr.Slider(vw.MIN_STEPS, ctx.T, value=100, step=1, label="inference steps", elem_id="rev-steps")
    w.schedule = gr.Radio(list(vw.INFERENCE_SCHEDULES), value="training",
                          label="inference schedule (the training one or the other one)", elem_id="rev-schedule")
    w.seed = gr.Number(0, precision=0, minimum=0, maximum=SEED_MAX, label="seed", elem_id="rev-seed")
    w.compare = gr.Dropdown(list(vr.COMPARE_MODES), value="off", label="side by side (same starting noise)",
                            elem_id="rev-compare")
    w.steps_b = gr.Slider(vw.MIN_STEPS, ctx.T, value=20, step=1, visible=False,
                          label="second walk's steps ('two step counts')", elem_id="rev-steps-b")
    # (checked by the walk, in "two classes" only: a published call made for another model's classes must not fail
    # on a setting its mode does not use)
    w.cls_b = gr.Dropdown(ctx.classes, value=vr.second_label(ctx.model, ctx.default_class), visible=False,
                          label=f"second walk's {class_word(ctx.model)} ('two classes')", elem_id="rev-class-b",
                          allow_custom_value=True)
    w.guidance_b = gr.Slider(0, GUIDANCE_MAX, value=second_guidance(ctx.model), step=0.5, visible=False,
                             label="second walk's guidance scale ('two guidance scales')", elem_id="rev-guidance-b")
    w.clip = gr.Checkbox(clip_default(ctx.model), label="clip x0_hat to [-1, 1] at every step", info=CLIP_INFO,
                         elem_id="rev-clip")
    w.where = where_radio("rev-where")
    with gr.Row():
        w.run = gr.Button("Sample", variant="primary", elem_id="rev-run")
        w.stop = gr.Button("Stop", variant="stop", elem_id="rev-stop")
        w.server = gr.Button("Sample on the server", visible="hidden", elem_id="rev-run-server")
    return w


def _results(w: SimpleNamespace) -> None:
    """The server walk's column: the walks, their status, when the picture is decided, the scrubber, the step
    taken apart, the strip, the GIF and quality against network calls."""
    with gr.Row():
        w.panel_a = gr.Image(label="walk", interactive=False, elem_id="rev-a", format="png")
        w.panel_b = gr.Image(label="second walk", interactive=False, elem_id="rev-b", format="png", visible=False)
    w.status = gr.Markdown(NOTHING_YET, elem_id="rev-status")
    w.decided = gr.Plot(label="when is the picture decided?", visible=False, elem_id="rev-decided")
    w.decided_text = gr.Markdown(visible=False, elem_id="rev-decided-text")
    w.scrub = gr.Slider(0, 1, value=0, step=1, label="scrub through the recorded walk", interactive=False,
                        elem_id="rev-scrub")
    w.frame = gr.Image(label="recorded frame", interactive=False, elem_id="rev-frame", format="png")
    w.step = gr.Image(label="the step from this frame, taken apart: what the sampler computed (DDPM: x_t' = x_t "
                      "without the scaled eps_hat, + sigma z)", interactive=False, elem_id="rev-step", format="png")
    w.step_text = gr.Markdown(elem_id="rev-step-text")
    w.strip = gr.Image(label="10 frames of the walk (the article's figure 9)", interactive=False, format="png")
    w.gif = gr.File(label="the walk as a GIF", interactive=False)
    w.quality = gr.Image(label="quality against network calls, measured for this model: your walk marked",
                         interactive=False, visible=False, elem_id="rev-quality", format="png")
    w.quality_text = gr.Markdown(elem_id="rev-quality-text")


def _follow_the_model(ctx: AppContext, w: SimpleNamespace, notice) -> None:
    """The settings that change with the picked model: its classes, T, the card's guidance and clipping."""
    ctx.follow(notice, lambda slot: slot.notice())
    ctx.follow(w.cls, class_dropdown("{cls}"))
    ctx.follow(w.steps, lambda slot: gr.Slider(maximum=model_T(slot.model)))
    ctx.follow(w.steps_b, lambda slot: gr.Slider(maximum=model_T(slot.model)))
    ctx.follow(w.clip, lambda slot: gr.Checkbox(value=clip_default(slot.model)))
    ctx.follow(w.guidance, lambda slot: gr.Slider(value=guidance_default(slot.model)))
    ctx.follow(w.guidance_b, lambda slot: gr.Slider(value=second_guidance(slot.model)))
    ctx.follow(w.cls_b, lambda slot: gr.Dropdown(
        choices=class_choices(slot.model), value=vr.second_label(slot.model, default_class(slot.model)),
        label=f"second walk's {class_word(slot.model)} ('two classes')"))


def reverse_tab(ctx: AppContext) -> None:
    """Reverse diffusion: streamed walks, side by side, a scrubber and the step taken apart."""
    with gr.Tab("Reverse diffusion", id="reverse"):
        notice = model_tab_head(ctx, "reverse", "model-picker", "reverse-notice")
        with gr.Row():
            with gr.Column(scale=1):
                w = _settings(ctx)
            with gr.Column(scale=2, elem_id="rev-browser-out"):  # the walk computed in the page (ui/browser.py)
                w.view = walk_view({"view": "rev-web", "run": "rev-run", "stop": "rev-stop",
                                    "server_run": "rev-run-server", "server_out": "rev-server-out",
                                    "browser_out": "rev-browser-out", "status": "rev-status"})
            with gr.Column(scale=2, elem_id="rev-server-out"):
                _results(w)
        w.walks = gr.State(None, time_to_live=RESULT_TTL_S)
    ctx.widgets.update({"reverse.digit": w.cls, "reverse.guidance": w.guidance, "reverse.sampler": w.sampler,
                        "reverse.steps": w.steps, "reverse.schedule": w.schedule, "reverse.seed": w.seed,
                        "reverse.compare": w.compare, "reverse.steps_b": w.steps_b, "reverse.clip": w.clip,
                        "reverse.where": w.where, "reverse.class_b": w.cls_b, "reverse.guidance_b": w.guidance_b})
    _follow_the_model(ctx, w, notice)
    _wire(ctx, w)


def _wire(ctx: AppContext, w: SimpleNamespace) -> None:
    """The tab's events, each with its stable api_name."""
    outputs = [w.panel_a, w.panel_b, w.status, w.walks, w.scrub, w.strip, w.gif]
    ctx.show_default(default_walk(ctx), [*outputs, w.frame, w.step, w.step_text], "reverse_default")
    # the second walk's settings and picture show in a side-by-side mode only
    w.compare.change(side_by_side, w.compare, [w.steps_b, w.cls_b, w.guidance_b, w.panel_b, w.decided,
                                               w.decided_text], api_name="reverse_compare_mode",
                     api_visibility="private", **CHEAP)
    walk_inputs = [w.cls, w.guidance, w.sampler, w.steps, w.schedule, w.seed, w.compare, w.steps_b, w.clip,
                   w.cls_b, w.guidance_b, ctx.model_name]
    # Sample: the payload of a walk the page computes, or (the page presses the hidden button) the server's walk
    wire_browser_walk(ctx, w.run, walk_inputs, w.where, w.view)
    walk = w.server.click(on_the_server(stream_walk(ctx, vr.GifStore())), walk_inputs, outputs,
                          api_name="reverse_walk", **HEAVY)
    w.stop.click(None, None, None, cancels=[walk], api_name="reverse_stop", api_visibility="private")
    # the model's measured quality against network calls, with the walk just asked for marked (wherever it runs)
    w.run.click(quality_chart(ctx), [w.sampler, w.steps, ctx.model_name], [w.quality, w.quality_text],
                api_name="reverse_quality", api_visibility="private", **CHEAP)
    walk.success(when_decided(ctx), [w.walks, w.compare, ctx.model_name], [w.decided, w.decided_text],
                 api_name="reverse_decided", api_visibility="private", **CHEAP)
    # endpoints that read a session's recorded result: callable, but not in the API docs. The learner's scrubbing
    # only: a finished walk and the default walk send their frame and step with the scrubber's new value
    w.scrub.input(clear_errors(vr.walk_frame), [w.walks, w.scrub], w.frame, api_name="reverse_scrub",
                  api_visibility="undocumented", **CHEAP)
    w.scrub.input(clear_errors(vs.step_anatomy), [w.walks, w.scrub], [w.step, w.step_text], api_name="reverse_step",
                  api_visibility="undocumented", **CHEAP)
    # a finished walk shows its last frame and step even where the scrubber's value stays the same (same step
    # count); its last index comes from the walk itself, as the scrubber's value may still be the previous walk's
    walk.success(clear_errors(last_step), [w.walks], [w.frame, w.step, w.step_text],
                 api_name="reverse_walk_finished", api_visibility="private", **CHEAP)


def last_step(walks):
    """A finished walk's last frame and the last step taken apart."""
    return vr.walk_frame(walks, walks[0].done), *vs.step_anatomy(walks, walks[0].done)
