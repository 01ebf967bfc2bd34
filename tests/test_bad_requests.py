"""Every bad request through the HTTP API gets a clear answer (explainer/server/guard.py, arguments.py and launch.py).

Raw ``POST /gradio_api/call/<api_name>`` requests (then the result stream), one session per call, against the
app with a tiny checkpoint: a wrong value of every argument of every endpoint gets a message that names the
argument and what it accepts, shows no server path or object address and never echoes a long value whole;
unknown endpoints, fn_indices and event ids get 404, malformed bodies 400, bodies over the limit 413; nothing
gets a 500; every response carries X-Content-Type-Options: nosniff.
"""
from __future__ import annotations

import io
import json
import math
import os
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
gr = pytest.importorskip("gradio")
httpx = pytest.importorskip("httpx")

from conftest import free_port  # noqa: E402
from explainer.paths import ASSETS  # noqa: E402
from explainer.server import guard  # noqa: E402
from explainer.server import launch as serving  # noqa: E402
from explainer.server.arguments import argument_of  # noqa: E402
from explainer.ui import CSS, build_app  # noqa: E402
from explainer.views import model_slot as views  # noqa: E402
from explainer.views.inputs import shown  # noqa: E402

LONG = "9" * 100_000  # a long wrong value: the answer may show its start, never all of it
ADDRESS = re.compile(r" at 0x[0-9a-f]+")


@pytest.fixture(scope="module")
def server(tiny_ckpt):
    demo = build_app(views.load_slot(str(tiny_ckpt)))
    _, url, _ = serving.launch(demo, css=CSS, server_name="127.0.0.1", server_port=free_port(),
                               prevent_thread_lock=True, quiet=True)
    yield demo, url
    demo.close()


def call(url: str, name: str, data=None, body: bytes | None = None, client: httpx.Client | None = None
         ) -> tuple[int, str, httpx.Response]:
    """POST a call and read its result stream: (status, the error message or "" when it completed, the POST's response).

    Every call gets a fresh Gradio session: concurrent calls that share a session_hash can wait on each other.
    """
    if body is None:
        body = json.dumps({"data": data}, allow_nan=True).encode()
    c = client or httpx.Client(timeout=60)
    try:
        r = c.post(f"{url}gradio_api/call/{name}", content=body, headers={"content-type": "application/json"})
        if r.status_code != 200:
            return r.status_code, r.json()["detail"], r
        stream = c.get(f"{url}gradio_api/call/{name}/{r.json()['event_id']}").text
    finally:
        if client is None:
            c.close()
    events = re.findall(r"event: (\w+)\ndata: (.*)\n", stream)
    kind, payload = events[-1]
    if kind == "error":
        message = json.loads(payload)
        return 200, (message.get("error") if isinstance(message, dict) else message) or "(no message)", r
    assert kind == "complete", stream[-300:]
    return 200, "", r


def assert_clean(message: str, *words: str):
    """A message for people: the given words in it, short, and no server path, address or traceback in it."""
    assert message, "no message"
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert len(message) < 600, message[:300]
    assert not ADDRESS.search(message) and "Traceback" not in message and "Could not preprocess" not in message
    for path in {os.getcwd(), tempfile.gettempdir() + "/", str(ASSETS), "/etc/", "/root", "/home/"}:
        assert path not in message, message


def arguments(demo, fn) -> list[guard.Argument]:
    names = fn.input_parameter_names or []
    return [argument_of(b, names[i] if i < len(names) and names[i] else f"argument {i + 1}")
            for i, b in enumerate(fn.inputs)]


def valid(block, arg: guard.Argument):
    """A value the argument accepts (files: none given, which the guard lets through)."""
    if arg.kind == "number":
        v = block.value if isinstance(block.value, (int, float)) and not isinstance(block.value, bool) else arg.lo
        return v if v is not None else 0
    if arg.kind == "int":
        return 0
    if arg.kind == "choice":
        return block.value if block.value in arg.choices else arg.choices[0]
    return {"bool": False, "text": ""}.get(arg.kind)


def wrong_values(arg: guard.Argument) -> list:
    """Wrong values for an argument, and the words its message must hold."""
    if arg.kind in ("number", "int"):
        where = f"{arg.lo}..{arg.hi}" if arg.lo is not None and arg.hi is not None else "number"
        bad = [None, "", "abc", [1], {"a": 1}, True, math.nan, LONG]
        bad += [arg.lo - 1] if arg.lo is not None else []
        bad += [arg.hi + 1] if arg.hi is not None else []
        bad += [0.5] if arg.kind == "int" else []
        return [(v, where) for v in bad]
    if arg.kind == "choice":
        return [(v, "one of") for v in (None, "no such choice", [arg.choices[0]], {"x": 1}, LONG)]
    if arg.kind == "file":
        meta = {"_type": "gradio.FileData"}
        return [(v, "file") for v in ("abc", 5, {"meta": {}}, LONG, {"path": "/etc/passwd", "meta": meta},
                                     {"path": os.path.join(os.getcwd(), "app.py"), "meta": meta})]
    return []


def test_the_table_covers_every_endpoint_and_argument(server):
    demo, _ = server
    checked = {fn.api_name: [a.kind for a in arguments(demo, fn)] for fn in demo.fns.values() if fn.api_name}
    for name in ("forward_noise", "forward_curves", "forward_histogram", "forward_strips", "forward_pixels",
                 "compare_schedules", "compare_curves", "compare_pixels", "reverse_walk", "noise_removal",
                 "feature_maps"):
        assert name in checked
    assert checked["forward_noise"] == ["file", "number", "choice", "number"]
    assert checked["compare_pixels"] == ["file", "number"]
    assert sum(len(wrong_values(a)) for fn in demo.fns.values() if fn.api_name for a in arguments(demo, fn)) > 200


@pytest.mark.slow
def test_every_wrong_value_of_every_endpoint_gets_a_clear_message(server):
    demo, url = server
    cases = []
    for fn in sorted((f for f in demo.fns.values() if f.api_name), key=lambda f: f.api_name):
        args = arguments(demo, fn)
        base = [valid(b, a) for b, a in zip(fn.inputs, args)]
        cases += [(fn.api_name, arg, value, word, base[:i] + [value] + base[i + 1:])
                  for i, arg in enumerate(args) for value, word in wrong_values(arg)]

    def check(case, client):
        name, arg, value, word, data = case
        status, message, _ = call(url, name, data, client=client)
        try:
            assert status == 200, f"HTTP {status}"
            assert_clean(message, arg.name, word)
            if isinstance(value, str) and len(value) > 100:
                assert value not in message and shown(value)[:20] in message
        except AssertionError as e:
            return f"{name}({arg.name}={shown(value)}): {e}"
        return None

    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(4) as pool:  # (each call its own session)
        failures = [f for f in pool.map(lambda case: check(case, client), cases) if f]
    assert not failures, f"{len(failures)} of {len(cases)} unclear answers:\n" + "\n".join(failures[:20])


@pytest.mark.parametrize("name,data,words", [
    ("forward_noise", [None, 10, "linear", 0], ("no image given",)),
    ("forward_noise", [None, 10], ("forward_noise takes 4 arguments", "image, t, schedule, seed")),
    ("forward_noise", [None, 5000, "linear", 0], ("t must be in 0..1000", "greater than the maximum")),
    ("compare_curves", [-1], ("t must be in 0..1000", "less than the minimum")),
    ("forward_pixels", [None, math.nan], ("seed", "finite number")),
    ("reverse_walk", ["3", 2.0, "DDPM", 5, "training", 0, "off", 20], ("steps", "10..")),
    ("reverse_scrub", [None, 5], ("0..1",)),
])
def test_messages_name_the_argument_and_its_range(server, name, data, words):
    _, url = server
    status, message, _ = call(url, name, data)
    assert status == 200
    assert_clean(message, *words)


def test_unknown_endpoints_and_malformed_bodies_get_4xx(server):
    demo, url = server
    status, message, r = call(url, "no_such_endpoint", [1])
    assert status == 404 and "no_such_endpoint" in message and r.headers["x-content-type-options"] == "nosniff"
    assert call(url, "x" * 5000, [1])[0] == 404  # (a long name is not echoed whole)
    assert len(call(url, "x" * 5000, [1])[1]) < 300
    with httpx.Client(timeout=30) as c:
        r = c.get(f"{url}gradio_api/call/no_such_endpoint/abc")
        assert r.status_code == 404
        r = c.get(f"{url}gradio_api/call/forward_noise/no-such-event")
        assert r.status_code == 404 and "event id" in r.json()["detail"]
        for body, code in (({"data": [1], "fn_index": 99999, "session_hash": "s1"}, 404),
                           ({"data": [1], "fn_index": "abc", "session_hash": "s2"}, 400),
                           ({"data": [1], "session_hash": "s3"}, 400),
                           ({"data": "abc", "fn_index": 0, "session_hash": "s4"}, 400)):
            r = c.post(f"{url}gradio_api/queue/join", json=body)
            assert r.status_code == code, (body, r.text)
            assert_clean(r.json()["detail"])
        r = c.post(f"{url}gradio_api/cancel", json={"session_hash": [LONG], "fn_index": 0, "event_id": 1})
        assert r.status_code == 422 and LONG[:200] not in r.text and len(r.text) < 600
    with httpx.Client(timeout=30) as c:  # arguments by name
        r = c.post(f"{url}gradio_api/call/v2/forward_noise", json={"t": 10, "bogus": 1})
        assert r.status_code == 400 and "bogus" in r.json()["detail"] and "schedule" in r.json()["detail"]
        r = c.post(f"{url}gradio_api/call/v2/forward_pixels", json={"seed": 1})  # (undocumented: by list only)
        assert r.status_code == 404
        eid = c.post(f"{url}gradio_api/call/v2/forward_noise", json={"t": "abc"}).json()["event_id"]
        assert "t must be a number in 0..1000" in c.get(f"{url}gradio_api/call/v2/forward_noise/{eid}").text
    for body in (b"not json", b"[1, 2]", b'{"data": "abc"}', b'{"data": {"a": 1}}', b"{" * 10000):
        status, message, _ = call(url, "forward_noise", body=body)
        assert status == 400, (body[:20], status, message)
        assert_clean(message, "JSON" if not body.startswith(b'{"data"') else "list")


def test_bodies_over_the_limit_get_413(server):
    _, url = server
    big = json.dumps({"data": ["x" * (guard.MAX_BODY_BYTES + 10)]}).encode()
    status, message, _ = call(url, "reverse_walk", body=big)  # a 1 MB "digit class"
    assert status == 413 and "limit" in message
    with httpx.Client(timeout=30) as c:
        chunks = (b"x" * 100_000 for _ in range(30))  # no declared length: cut off at the limit
        r = c.post(f"{url}gradio_api/call/forward_noise", content=chunks, headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.headers["x-content-type-options"] == "nosniff"


def test_upload_limit_is_enforced_before_reading():
    """The guard answers an upload that declares more than the limit (or no number) without reading its body."""
    import asyncio

    async def app_never_called(scope, receive, send):
        raise AssertionError("the app was reached")

    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    mw = guard.RequestGuard(app_never_called, endpoints=lambda: (set(), set()))
    for length, status in ((str(guard.MAX_UPLOAD_BYTES + 1), 413), ("abc", 400)):
        sent.clear()
        scope = {"type": "http", "method": "POST", "path": "/gradio_api/upload",
                 "headers": [(b"content-length", length.encode())]}
        asyncio.run(mw(scope, receive, send))
        assert sent[0]["status"] == status and (b"x-content-type-options", b"nosniff") in sent[0]["headers"]


def upload(url: str, name: str, content: bytes) -> dict:
    with httpx.Client(timeout=60) as c:
        r = c.post(f"{url}gradio_api/upload", files={"files": (name, content, "application/octet-stream")})
    assert r.status_code == 200, r.text
    return {"path": r.json()[0], "meta": {"_type": "gradio.FileData"}}


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_float_tiff_with_a_nan_or_inf_pixel_is_refused(server, bad):
    _, url = server
    a = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    a[5, 7] = bad
    buf = io.BytesIO()
    Image.fromarray(a, "F").save(buf, format="TIFF")
    status, message, _ = call(url, "forward_noise", [upload(url, "float.tif", buf.getvalue()), 10, "linear", 0])
    assert status == 200
    assert_clean(message, "NaN or infinite")


def test_served_files_say_nosniff(server):
    _, url = server
    status, message, r = call(url, "forward_noise", [upload(url, "camera.png", (ASSETS / "camera.png").read_bytes()),
                                                     10, "linear", 0])
    assert status == 200 and message == ""
    with httpx.Client(timeout=30) as c:
        eid = c.post(f"{url}gradio_api/call/forward_curves", json={"data": [10, "linear"]}).json()["event_id"]
        stream = c.get(f"{url}gradio_api/call/forward_curves/{eid}").text
        file_url = json.loads(re.findall(r"event: complete\ndata: (.*)\n", stream)[0])[0]["url"]
        for target in (url, file_url, f"{url}gradio_api/info"):
            r = c.get(target)
            assert r.status_code == 200 and r.headers["x-content-type-options"] == "nosniff", target


def test_check_messages_never_echo_a_long_value_whole():
    from explainer.views.inputs import check_choice, check_int

    for check, args in ((check_int, ("seed", LONG, 0, 10)), (check_choice, ("schedule", LONG, ("linear", "cosine")))):
        with pytest.raises(ValueError) as e:
            check(*args)
        assert len(str(e.value)) < 200 and "100,000 characters" in str(e.value)
