"""Serving the app: its threads, its own cache folder, the guarded server, and a clean, quick shutdown.

``python app.py`` calls ``configure_threads`` and ``own_cache_folder`` before it builds the app, then ``serve``.
Host and port: Gradio's own GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, else 127.0.0.1:7860.
"""
from __future__ import annotations

import atexit
import functools
import os
import shutil
import signal
import sys
import tempfile
import threading

import gradio as gr
import torch
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.middleware import Middleware

from ..render.images import MAX_FILE_BYTES
from . import gradio_internals, guard, memory, sessions
from .arguments import check_arguments_first


def named_arguments(demo: gr.Blocks):
    """For the guard: {api_name: (its argument names, those without a default)} as /gradio_api/call/v2 takes them."""
    @functools.cache
    def named() -> dict:
        endpoints = demo.get_api_info()["named_endpoints"]
        return {name.lstrip("/"): ({p["parameter_name"] for p in e["parameters"] if "parameter_name" in p},
                                   {p["parameter_name"] for p in e["parameters"]
                                    if "parameter_name" in p and not p.get("parameter_has_default")})
                for name, e in endpoints.items()}
    return named


def short_validation_error(request, exc):
    """FastAPI's 422 for a malformed body, without echoing the body back."""
    where = "; ".join(" > ".join(map(str, e.get("loc", ()))) + ": " + str(e.get("msg", ""))[:80]
                      for e in exc.errors()[:3])
    return JSONResponse({"detail": f"malformed request ({where})"}, status_code=422)


def launch(demo: gr.Blocks, css: str | None = None, **kwargs):
    """Serve ``demo`` with the page style ``css`` as ``python app.py`` does (tests pass host, port and
    prevent_thread_lock in ``kwargs``).

    Every request passes ``explainer.server.guard``: size limits, unknown endpoints, nosniff, checked arguments,
    and a page whose session lived in another process (``replicas``) is told to reload.
    """
    check_arguments_first(demo)
    guarded = Middleware(guard.RequestGuard, endpoints=functools.partial(gradio_internals.endpoints, demo),
                         named=named_arguments(demo), known_event=functools.partial(gradio_internals.known_event, demo),
                         known_session=functools.partial(gradio_internals.known_session, demo))
    app_kwargs = {"middleware": [guarded], "exception_handlers": {RequestValidationError: short_validation_error}}
    kwargs = dict(show_error=True, max_file_size=MAX_FILE_BYTES, css=css, app_kwargs=app_kwargs,
                  state_session_capacity=sessions.SESSION_CAPACITY) | kwargs
    served = demo.queue(default_concurrency_limit=1).launch(**kwargs)
    from ..views import defaults
    defaults.warm_up()  # the model tabs' default results, in the background now that the page answers
    return served


def configure_threads() -> None:
    """Give each heavy event's torch ops half the cores (at least one thread); the app's model slots
    (``explainer.ui.common.MODEL_SLOTS``) may run at once.

    Call it before building the app: the fast eps path that ``views.load_slot`` builds in the background takes
    the same thread count (one on a 2-core machine, so two walks at once run on two cores, without a lock).
    """
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))


def serve(demo: gr.Blocks, css: str | None = None, shutdown_s: float = 1.0) -> None:
    """Serve until Ctrl-C or SIGTERM, then stop within about ``shutdown_s`` seconds (open page connections are not
    waited for) and exit, which removes the app's temporary folders (walk GIFs, pixels files)."""
    memory.fix_mmap_threshold()  # large freed arrays go back to the system at once (a server runs for weeks)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    launch(demo, css=css, prevent_thread_lock=True)
    from ..views import lab
    threading.Thread(target=lab.warm_up, daemon=True).start()  # the lab's first Train then starts at once
    while not stop.wait(0.1):
        pass
    print("Stopping the server ...", flush=True)
    closing = threading.Thread(target=demo.close, daemon=True)
    closing.start()
    closing.join(shutdown_s)
    atexit._run_exitfuncs()  # every exit handler now (CPython's own, private): the temporary folders go
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # (skips the interpreter's slow teardown of torch and the server's threads: about a second)


def own_cache_folder() -> str:
    """The folder Gradio writes this app's files to: $GRADIO_TEMP_DIR when set (then it should be this app's
    alone: the housekeeper trims all of it), else a new folder of this process's, removed at exit (instead of
    Gradio's default, a folder every Gradio app on the machine shares). Call it before building the app."""
    folder = os.environ.get("GRADIO_TEMP_DIR")
    if not folder:
        folder = tempfile.mkdtemp(prefix="ddpm-explainer-gradio-")
        os.environ["GRADIO_TEMP_DIR"] = folder
        atexit.register(shutil.rmtree, folder, True)
    return folder
