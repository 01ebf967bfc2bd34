"""Gradio's private attributes: this module is the only one that reads them.

Tested with Gradio 6.31.x (requirements.txt pins that minor release): a minor release may rename any of them.
What the app needs from them: the session store and the files Gradio cached (for the housekeeper), the
queue's live events (for the guard), each event's inputs as declared, and one hook, in place of
``Blocks.preprocess_data``, that sees an event's arguments before Gradio reads them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import gradio as gr

TESTED_WITH = "6.31"  # the Gradio minor release these reads were checked against


def session_store(demo: gr.Blocks | None):
    """The Blocks' StateHolder (None before the server runs or once the Blocks is gone)."""
    return getattr(demo, "state_holder", None)


def known_session(demo: gr.Blocks, session_hash: str) -> bool:
    """Whether the Blocks holds state for the session (it had an event in this process and was not forgotten)."""
    store = session_store(demo)
    return store is not None and session_hash in store.session_data


def cached_file_sets(demo: gr.Blocks | None) -> list[set]:
    """The sets of file paths Gradio wrote for the Blocks (uploads, pictures sent to pages)."""
    return getattr(demo, "temp_file_sets", []) if demo is not None else []


def files_kept(demo: gr.Blocks | None) -> set:
    """The files the Blocks' components keep for good (their starting values, examples)."""
    if demo is None:
        return set()
    return set().union(*(getattr(b, "keep_in_cache", set()) for b in demo.blocks.values()))


def known_event(demo: gr.Blocks, event_id: str) -> bool:
    """Whether a call's result stream (GET /gradio_api/call/NAME/EVENT_ID) can still be read."""
    queue = demo._queue
    return event_id in queue.event_ids_to_events or any(event_id in ids
                                                        for ids in queue.pending_event_ids_session.values())


def endpoints(demo: gr.Blocks) -> tuple[set, set]:
    """(the api_names, the fn_indices) of the Blocks' events."""
    return {fn.api_name for fn in demo.fns.values() if fn.api_name}, set(demo.fns)


@dataclass(frozen=True)
class Parameter:
    """One input of an event: its published name, the component as built (its starting value), the session's
    copy of it (its choices and range after a model switch), and whether API calls pass it (state does not)."""

    name: str
    block: Any
    current: Any
    in_api: bool


def event_parameters(block_fn, state) -> list[Parameter]:
    """An event's inputs as ``Parameter``s, in order (an unnamed one is "argument N")."""
    names = block_fn.input_parameter_names or []
    return [Parameter(names[i] if i < len(names) and names[i] else f"argument {i + 1}", b,
                      state[b._id] if state is not None and b._id in state else b, not b.skip_api)
            for i, b in enumerate(block_fn.inputs)]


Check = Callable[[str | None, list[Parameter], Any, Callable[[Any], Awaitable]], Awaitable]


@dataclass
class ArgumentReader:
    """``Blocks.preprocess_data`` with ``check`` in front: ``check(api_name, parameters, inputs, read)`` returns
    what Gradio's own reading, ``await read(inputs)``, returns for the inputs it lets through."""

    read: Callable[..., Awaitable]  # Gradio's own preprocess_data of the Blocks
    check: Check

    async def __call__(self, block_fn, inputs, state, *args, **kwargs):
        async def read(checked):
            return await self.read(block_fn, checked, state, *args, **kwargs)
        return await self.check(block_fn.api_name, event_parameters(block_fn, state), inputs, read)


def read_arguments_with(demo: gr.Blocks, check: Check) -> None:
    """Let ``check`` see every event's arguments before Gradio reads them (once per Blocks)."""
    if not isinstance(demo.preprocess_data, ArgumentReader):
        demo.preprocess_data = ArgumentReader(demo.preprocess_data, check)
