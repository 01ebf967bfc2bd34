"""Every event's arguments checked before Gradio reads them: a wrong value gets a message that names it.

(Gradio's own message for a wrong type names only the component's index and echoes the value whole.) What an
input accepts comes from its component (``argument_of``); ``explainer.server.guard`` checks the values.
"""
from __future__ import annotations

import gradio as gr

from . import guard
from .gradio_internals import Parameter, read_arguments_with

# arguments an endpoint gained after it was published, in the order it gained them
LATER_ARGUMENTS = {"reverse_walk": ("clip_x0", "label_b", "guidance_b")}
# values an endpoint published and later renamed: (endpoint, argument) -> {old: new}
RENAMED_VALUES = {("reverse_walk", "sampler"): {"DDPM": "ddpm", "DDIM": "ddim"}}


def argument_of(block, name: str) -> guard.Argument:
    """What an input component accepts, for ``guard.check_arguments``."""
    if isinstance(block, (gr.Slider, gr.Number)):
        return guard.Argument(name, "number", block.minimum, block.maximum)
    if isinstance(block, (gr.Radio, gr.Dropdown)) and not (getattr(block, "multiselect", False)
                                                           or getattr(block, "allow_custom_value", False)):
        return guard.Argument(name, "choice", choices=tuple(value for _, value in block.choices))
    if isinstance(block, (gr.Image, gr.File)):
        return guard.Argument(name, "file")
    if isinstance(block, gr.Dataset):  # an Examples table: the index of a row
        return guard.Argument(name, "int", 0, max(len(block.samples) - 1, 0))
    if isinstance(block, gr.Checkbox):
        return guard.Argument(name, "bool")
    if isinstance(block, gr.Textbox):
        return guard.Argument(name, "text")
    return guard.Argument(name)  # gr.State and the like: nothing to check


def with_later_arguments(api_name: str | None, parameters: list[Parameter], inputs):
    """A call written before its endpoint gained some of its ``LATER_ARGUMENTS`` runs as it did: the arguments it
    leaves out (the newest ones) take their widgets' starting values, as gradio_client fills them in; session
    state keeps its place."""
    later = LATER_ARGUMENTS.get(api_name, ())
    if not later or not isinstance(inputs, list):
        return inputs
    api = [p.name for p in parameters if p.in_api]
    missing = len(api) - len(inputs)
    if api[-len(later):] != list(later) or not 0 < missing <= len(later):
        return inputs
    left_out = set(later[len(later) - missing:])
    given = iter(inputs)
    return [None if not p.in_api else p.block.value if p.name in left_out else next(given) for p in parameters]


def with_renamed_values(api_name: str | None, parameters: list[Parameter], inputs):
    """A call written with a value the endpoint has since renamed (``RENAMED_VALUES``) runs with the new name."""
    if not isinstance(inputs, list) or len(inputs) != len(parameters):
        return inputs
    renamed = [RENAMED_VALUES.get((api_name, p.name), {}) for p in parameters]
    return [r.get(v, v) if isinstance(v, str) else v for r, v in zip(renamed, inputs)]


async def checked_read(api_name: str | None, parameters: list[Parameter], inputs, read):
    """Check ``inputs`` against ``parameters``, then let Gradio read them (``read``): every failure a gr.Error."""
    inputs = with_renamed_values(api_name, parameters, with_later_arguments(api_name, parameters, inputs))
    spec = [argument_of(p.current, p.name) for p in parameters]
    try:
        guard.check_arguments(api_name or "this event", spec, inputs)
    except ValueError as e:
        raise gr.Error(str(e)) from None
    try:
        return await read(inputs)
    except gr.Error:
        raise
    except Exception as e:  # Gradio could not fetch a file argument (a path never uploaded, a dead URL ...)
        if not any(a.kind == "file" for a in spec):
            raise
        raise gr.Error(guard.unreadable_file(spec)) from e


def check_arguments_first(demo: gr.Blocks) -> None:
    """Check every event's arguments before Gradio reads them (``checked_read``)."""
    read_arguments_with(demo, checked_read)
