"""The app's front door: every bad request gets a clear answer, never a 500, a server path or an echo.

- ``RequestGuard``: a plain ASGI middleware for the server Gradio builds. A request body over the limit gets
  413 (uploads ``MAX_UPLOAD_BYTES``, anything else ``MAX_BODY_BYTES``); an unknown api_name or fn_index 404; a
  call whose body is not JSON of the right shape 400; every response carries ``X-Content-Type-Options: nosniff``.
- A page's event that reaches a process other than the one that served the page (its replica stopped, or the app
  restarted), for a session this process does not hold, gets 410 with "reload the page" (``replicas``).
- ``Argument`` and ``check_arguments``: an endpoint's arguments checked by kind (number, choice, file ...)
  before Gradio reads them, with messages that name the argument and its allowed range or type, and show
  at most the start of a wrong value (``views.inputs.shown``).

No gradio import here: the app describes its endpoints with ``Argument``s and hands the guard a function that
lists them.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Callable

from ..render.images import MAX_FILE_BYTES
from ..views.inputs import check_bool, check_choice, check_int, check_number, shown
from . import replicas

MAX_BODY_BYTES = 1 << 20  # an API call's JSON: its arguments (files travel as upload paths)
MAX_UPLOAD_BYTES = MAX_FILE_BYTES + (1 << 20)  # one upload at the file limit, with room for the form around it
API_PREFIX = "/gradio_api"
# POST routes whose JSON body names the endpoint (by api_name in the path, or fn_index in the body)
CALL = re.compile(rf"{API_PREFIX}/(?:call/v2|call|run|api)/([^/]+)/?$")
STREAM = re.compile(rf"{API_PREFIX}/call/(?:v2/)?([^/]+)/([^/]+)/?$")  # GET: the result stream of a call
JOIN = re.compile(rf"{API_PREFIX}/queue/join/?$")
UPLOAD = re.compile(rf"{API_PREFIX}/upload/?$")
FILE = f"{API_PREFIX}/file="
YEAR = b"public, max-age=31536000, immutable"
LONG_CACHE: list[str] = []  # folders whose files never change under their names (cache_for_a_year)


def cache_for_a_year(folder) -> None:
    """Let browsers keep the files served from ``folder`` for a year (the page's runtime and models' ONNX files:
    a new version gets a new name)."""
    for prefix in {os.path.abspath(folder) + os.sep, os.path.realpath(folder) + os.sep}:
        if prefix not in LONG_CACHE:
            LONG_CACHE.append(prefix)


def long_cached(path: str) -> bool:
    """Whether a GET of ``path`` serves a file of a ``cache_for_a_year`` folder."""
    return path.startswith(FILE) and any(path[len(FILE):].startswith(p) for p in LONG_CACHE)


@dataclass(frozen=True)
class Argument:
    """One argument of an endpoint: ``kind`` is number, int, choice, file, bool, text or any (not checked)."""

    name: str
    kind: str = "any"
    lo: float | None = None
    hi: float | None = None
    choices: tuple = field(default_factory=tuple)


FILE_HINT = ('a file: {"path": PATH, "meta": {"_type": "gradio.FileData"}} with the PATH that POST '
             f"{API_PREFIX}/upload returned, or null")


def check_argument(arg: Argument, value) -> None:
    """Raise ValueError naming ``arg`` and what it accepts when ``value`` does not fit it."""
    if arg.kind == "number":
        check_number(arg.name, value, arg.lo, arg.hi)
    elif arg.kind == "int":
        check_int(arg.name, value, arg.lo, arg.hi)
    elif arg.kind == "choice":
        check_choice(arg.name, value, arg.choices)
    elif arg.kind == "bool":
        check_bool(arg.name, value)
    elif arg.kind == "text" and not isinstance(value, str):
        raise ValueError(f"{arg.name} must be a string, got {shown(value)}")
    elif arg.kind == "file" and value is not None:
        path = value.get("path") if isinstance(value, dict) else None
        url = value.get("url") if isinstance(value, dict) else None
        if not (isinstance(path, str) and path or isinstance(url, str) and url) or len(path or url) > 4096:
            raise ValueError(f"{arg.name} must be {FILE_HINT}; got {shown(value)}")


def check_arguments(endpoint: str, args: list[Argument], values) -> None:
    """Check a call's argument list: enough of them, and each of the right kind and range."""
    if not isinstance(values, list):
        raise ValueError(f"{endpoint}: the arguments must be a list, got {shown(values)}")
    if len(values) < len(args):
        names = ", ".join(a.name for a in args)
        raise ValueError(f"{endpoint} takes {len(args)} arguments ({names}); got {len(values)}")
    for arg, value in zip(args, values):
        check_argument(arg, value)


def unreadable_file(args: list[Argument]) -> str:
    """The message for a file argument Gradio could not fetch (a path that was not uploaded, a dead URL ...)."""
    names = " or ".join(a.name for a in args if a.kind == "file") or "a file argument"
    return f"{names} could not be read: it must be {FILE_HINT} (or an http(s) URL of a picture)"


class RequestGuard:
    """ASGI middleware: size limits (413), unknown endpoints (404), malformed calls (400), nosniff everywhere.

    ``endpoints()`` returns (the api_names, the fn_indices) of the app's events; ``known_event(event_id)`` says
    whether a call's result can still be read; ``named()`` gives the endpoints that take arguments by name
    (POST /gradio_api/call/v2/NAME): {api_name: (their names, the names without a default)};
    ``known_session(session_hash)`` whether this process holds the session's state.
    """

    def __init__(self, app, endpoints: Callable[[], tuple[set, set]], known_event: Callable[[str], bool] | None = None,
                 named: Callable[[], dict] | None = None, body_limit: int = MAX_BODY_BYTES,
                 upload_limit: int = MAX_UPLOAD_BYTES, known_session: Callable[[str], bool] | None = None,
                 server_id: str = replicas.SERVER_ID):
        self.app, self.endpoints, self.known_event, self.named = app, endpoints, known_event, named
        self.body_limit, self.upload_limit = body_limit, upload_limit
        self.known_session, self.server_id = known_session, server_id

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope.get("path", ""), scope.get("method", "GET")
        send = nosniff(send, YEAR if method == "GET" and long_cached(path) else None)
        if method in ("GET", "HEAD") and replicas.PAGE.match(path):
            send = with_header(send, b"set-cookie", replicas.set_cookie(header(scope, b"host") or "", self.server_id))
        limit = self.upload_limit if UPLOAD.search(path) else self.body_limit
        declared = header(scope, b"content-length")
        if declared is not None and not declared.isdigit():
            return await answer(send, 400, f"the Content-Length header must be a number, got {shown(declared)}")
        if declared is not None and int(declared) > limit:
            return await answer(send, 413, f"the request body is larger than the limit of {limit:,} bytes")
        if method == "GET" and (m := STREAM.search(path)):
            if m.group(1) not in self.endpoints()[0]:
                return await answer(send, 404, unknown_endpoint(m.group(1), self.endpoints()[0]))
            if self.known_event is not None and not self.known_event(m.group(2)):
                return await answer(send, 404, f"no call has the event id {shown(m.group(2))} (or its result was "
                                    "read already): POST the call first, then read its event_id once")
        call, join = CALL.search(path), JOIN.search(path)
        if method != "POST" or not (call or join):
            return await self.app(scope, *limited(receive, send, limit))
        body = await read_body(receive, limit)
        if body is None:
            return await answer(send, 413, f"the request body is larger than the limit of {limit:,} bytes")
        if join and self.session_elsewhere(scope, body):
            return await answer(send, replicas.RESTARTED_STATUS, replicas.RESTARTED)
        problem = self.check_call(call.group(1) if call else None, body, v2="/call/v2/" in path)
        if problem is not None:
            return await answer(send, *problem)
        return await self.app(scope, replay(body, receive), send)

    def check_call(self, api_name: str | None, body: bytes, v2: bool = False) -> tuple[int, str] | None:
        """(status, message) for a call that cannot be run, else None."""
        names, indices = self.endpoints()
        if api_name is not None and api_name not in names:
            return 404, unknown_endpoint(api_name, names)
        try:
            data = json.loads(body or b"null")
        except (ValueError, RecursionError):
            return 400, "the request body must be JSON, like {\"data\": [the arguments]}"
        if not isinstance(data, dict):
            return 400, f"the request body must be a JSON object, like {{\"data\": [the arguments]}}; got {shown(data)}"
        if v2:  # arguments by name: Gradio maps them onto the list (then they are checked like any)
            return None if self.named is None else check_named(api_name, data, self.named())
        if "data" in data and not isinstance(data["data"], list):
            return 400, f"\"data\" must be a list of the endpoint's arguments, got {shown(data['data'])}"
        if api_name is None or "fn_index" in data:
            index = data.get("fn_index")
            if isinstance(index, bool) or not isinstance(index, int):
                return 400, f"\"fn_index\" must be the number of an event, got {shown(index)}"
            if index not in indices:
                return 404, f"no event has fn_index {shown(index)}"
        return None

    def session_elsewhere(self, scope, body: bytes) -> bool:
        """Whether a page's event names a session that lived in another process (the page's cookie says which
        served it) and that this process does not hold: its state went with that process."""
        if self.known_session is None or not replicas.served_elsewhere(header(scope, b"cookie"),
                                                                      header(scope, b"host") or "", self.server_id):
            return False
        try:
            session = json.loads(body or b"null").get("session_hash")
        except (ValueError, RecursionError, AttributeError):
            return False
        return isinstance(session, str) and not self.known_session(session)


def check_named(api_name: str, data: dict, named: dict) -> tuple[int, str] | None:
    """(status, message) for a call by named arguments that names what the endpoint does not take, else None."""
    if api_name not in named:
        return 404, (f"{api_name} takes no arguments by name: POST {API_PREFIX}/call/{api_name} "
                     "with {\"data\": [the arguments]}")
    names, required = named[api_name]
    unknown = sorted(k for k in data if k not in names and k != "oauth_token")
    if unknown:
        return 400, (f"{api_name} has no argument {shown(unknown[0])}; its arguments are "
                     f"{', '.join(sorted(names)) or 'none'}")
    missing = sorted(required - set(data))
    if missing:
        return 400, f"{api_name} needs the argument {missing[0]} (its arguments are {', '.join(sorted(names))})"
    return None


def unknown_endpoint(name: str, names) -> str:
    return f"no endpoint is named {shown(name)} (GET {API_PREFIX}/info lists them)"


def with_header(send, name: bytes, value: bytes):
    """``send`` with one more response header."""
    async def wrapped(message):
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (name, value)]}
        await send(message)
    return wrapped


def header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None


def nosniff(send, cache_control: bytes | None = None):
    """``send`` with X-Content-Type-Options: nosniff added to the response headers (and ``cache_control`` to a
    successful one)."""
    async def wrapped(message):
        if message["type"] == "http.response.start":
            year = cache_control is not None and message.get("status", 200) in (200, 206, 304)
            drop = {b"x-content-type-options"} | ({b"cache-control"} if year else set())
            headers = [h for h in message.get("headers", []) if h[0].lower() not in drop]
            headers.append((b"x-content-type-options", b"nosniff"))
            if year:
                headers.append((b"cache-control", cache_control))
            message = {**message, "headers": headers}
        await send(message)
    return wrapped


async def answer(send, status: int, message: str) -> None:
    """A JSON error response: {"detail": message, "error": message}."""
    body = json.dumps({"detail": message, "error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive, limit: int) -> bytes | None:
    """The whole request body, or None once it passes ``limit`` bytes."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def replay(body: bytes, receive):
    """A ``receive`` that hands the app the body already read, then waits on the client as before."""
    sent = False

    async def wrapped():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return wrapped


def limited(receive, send, limit: int):
    """(receive, send) that stop a body without a declared length at ``limit`` bytes with a 413."""
    state = {"size": 0, "started": False, "answered": False}

    async def wrapped_receive():
        message = await receive()
        if message["type"] == "http.request":
            state["size"] += len(message.get("body", b""))
            if state["size"] > limit:
                if not state["started"]:
                    state["answered"] = True
                    await answer(send, 413, f"the request body is larger than the limit of {limit:,} bytes")
                return {"type": "http.disconnect"}
        return message

    async def wrapped_send(message):
        if state["answered"]:
            return  # (the app's own answer to the cut-off request)
        state["started"] = state["started"] or message["type"] == "http.response.start"
        await send(message)
    return wrapped_receive, wrapped_send
