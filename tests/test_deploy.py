"""Several replicas behind nginx (deploy/): the config, the page-moved answer, and `deploy/serve.sh 2` end to end.

The cheap tests check the nginx template against the request guard's limits and drive the guard in-process: a page
names the process that served it in a cookie, and an event from a page that another process served, for a session
this process does not hold, gets 410 "The server restarted: reload the page". The slow test starts
`deploy/serve.sh 2` (Debian's nginx, the tiny test checkpoint) and runs six sessions through the balancer, reads
nginx's access log to see which replica served every request, stops one replica, and stops everything.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import free_port
from explainer.server import guard, replicas

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "deploy" / "nginx.conf.template"
SERVE = ROOT / "deploy" / "serve.sh"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
WALK = ("3", 2.0, "DDIM", 12, "training", 1, "off", 20)  # digit, guidance, sampler, steps, schedule, seed, ...
LAB_WALK = ("8 Gaussians", "DDPM", 20, 0, "training", 300, "unconditional", 1.0, 2)  # ..., eta, ..., seed


def size_bytes(value: str) -> int:
    """nginx's size ("1m", "26m", "512k", "100") in bytes."""
    number, unit = re.fullmatch(r"(\d+)([kKmMgG]?)", value).groups()
    return int(number) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[unit.lower()]


def location(text: str, head: str) -> str:
    """The body of the nginx block that starts with ``head`` (its braces balanced)."""
    start = text.index(head + " {") + len(head) + 2
    depth, i = 1, start
    while depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return text[start:i - 1]


def test_the_config_refuses_what_the_guard_refuses():
    """nginx's body limits are the guard's: an API call's JSON, and one upload with its form."""
    text = TEMPLATE.read_text()
    server = location(text, "    server")
    limits = re.findall(r"client_max_body_size (\w+);", server)
    upload = location(text, "        location ~ ^/gradio_api/upload/?$")
    assert size_bytes(limits[0]) == guard.MAX_BODY_BYTES
    assert size_bytes(re.search(r"client_max_body_size (\w+);", upload).group(1)) == guard.MAX_UPLOAD_BYTES


def test_the_config_streams_events_unbuffered_with_long_timeouts():
    """The location that carries the event streams passes them on unbuffered and waits an hour for the next byte."""
    app = location(TEMPLATE.read_text(), "        location /")
    timeout = re.search(r"proxy_read_timeout (\d+)([smh]);", app)
    assert "proxy_buffering off;" in app and "gzip off" not in app
    assert int(timeout[1]) * {"s": 1, "m": 60, "h": 3600}[timeout[2]] >= 3600


def rendered_config(run: Path, upstreams=("127.0.0.1:1", "127.0.0.1:2"), port: int = 1) -> Path:
    """The template filled in as deploy/serve.sh fills it."""
    text = TEMPLATE.read_text().replace("@RUN@", str(run)).replace("@LISTEN@", f"127.0.0.1:{port}")
    servers = "\n".join(f"        server {u} max_fails=1 fail_timeout=10s;" for u in upstreams)
    text = text.replace("@UPSTREAMS@", servers)
    path = run / "nginx.conf"
    path.write_text(text)
    return path


def need_nginx():
    if not os.path.exists(NGINX):
        if os.environ.get("CI"):
            pytest.fail("nginx is missing in CI (.ci/run installs it)")
        pytest.skip("nginx is missing (apt-get install nginx)")


def test_nginx_accepts_the_config(tmp_path):
    need_nginx()
    conf = rendered_config(tmp_path)
    result = subprocess.run([NGINX, "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(conf)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_serve_sh_says_how_to_call_it():
    result = subprocess.run(["bash", str(SERVE), "two", "8080"], capture_output=True, text=True)
    assert result.returncode == 2 and "usage:" in result.stderr and "N PORT" in result.stderr


# ---------------------------------------------------------------- the guard, in-process


class Asgi:
    """The guard around an app that answers 200, with ``known`` the sessions this process holds."""

    def __init__(self, known=(), server_id="aaaa"):
        self.reached = []

        async def app(scope, receive, send):
            self.reached.append(scope["path"])
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})
        self.guard = guard.RequestGuard(app, endpoints=lambda: ({"tour_step"}, {0}),
                                        known_session=lambda s: s in known, server_id=server_id)

    def request(self, method: str, path: str, body: dict | None = None, cookie: str | None = None,
                host: str = "127.0.0.1:8080"):
        """(status, headers, JSON body) of one request."""
        payload = json.dumps(body).encode() if body is not None else b""
        headers = [(b"host", host.encode()), (b"content-length", str(len(payload)).encode())]
        if cookie is not None:
            headers.append((b"cookie", cookie.encode()))
        sent = []

        async def receive():
            return {"type": "http.request", "body": payload, "more_body": False}

        async def send(message):
            sent.append(message)
        asyncio.run(self.guard({"type": "http", "method": method, "path": path, "headers": headers}, receive, send))
        body = b"".join(m.get("body", b"") for m in sent[1:])
        return sent[0]["status"], dict(sent[0]["headers"]), json.loads(body or b"null")


JOIN = "/gradio_api/queue/join"


def event(session: str) -> dict:
    return {"data": [0], "fn_index": 0, "session_hash": session}


def test_the_page_names_the_process_that_served_it():
    app = Asgi(server_id="aaaa")
    status, headers, _ = app.request("GET", "/")
    assert status == 200 and headers[b"set-cookie"] == replicas.set_cookie("127.0.0.1:8080", "aaaa")
    assert b"aaaa" in headers[b"set-cookie"] and b"HttpOnly" in headers[b"set-cookie"]
    assert b"set-cookie" in app.request("GET", "/config")[1]
    assert b"set-cookie" not in app.request("GET", "/gradio_api/info")[1]


def test_an_event_from_a_page_of_a_stopped_process_is_told_to_reload():
    app = Asgi(known={"here"}, server_id="bbbb")
    from_a = f"{replicas.cookie_name('127.0.0.1:8080')}=aaaa; ddpm_affinity=0123"
    status, _, body = app.request("POST", JOIN, event("lost"), cookie=from_a)
    assert status == 410 and body["detail"] == replicas.RESTARTED and "reload the page" in body["error"]
    assert app.reached == []  # (Gradio never saw it: no event ran on a fresh state)


@pytest.mark.parametrize("cookie,session", [
    (None, "new"),  # an API client without cookies: a new session, nothing lost
    ("{name}=bbbb", "new"),  # a page this process served
    ("{name}=aaaa", "here"),  # another process's page, but its session is here (another tab set the cookie)
    ("ddpm_explainer_server_00000000=aaaa", "new"),  # another address's app (cookies ignore ports)
])
def test_events_this_process_can_serve_pass(cookie, session):
    app = Asgi(known={"here"}, server_id="bbbb")
    cookie = cookie.format(name=replicas.cookie_name("127.0.0.1:8080")) if cookie else None
    status, _, _ = app.request("POST", JOIN, event(session), cookie=cookie)
    assert status == 200 and app.reached == [JOIN]


def test_the_cookie_differs_per_address():
    names = {replicas.cookie_name(h) for h in ("127.0.0.1:7860", "127.0.0.1:7861", "example.org")}
    assert len(names) == 3 and all(re.fullmatch(r"ddpm_explainer_server_[0-9a-f]{8}", n) for n in names)
    assert replicas.cookie("a=1; ddpm_x=2;b=3", "ddpm_x") == "2" and replicas.cookie(None, "a") is None


# ---------------------------------------------------------------- deploy/serve.sh 2, end to end


class Deployment:
    """`deploy/serve.sh N PORT` in its own session (so every process it starts can be found), with its run folder."""

    def __init__(self, replicas_n: int, run: Path, checkpoint: str):
        self.port, self.run = free_port(), run
        env = dict(os.environ, DDPM_EXPLAINER_RUN_DIR=str(run), DDPM_EXPLAINER_CHECKPOINT=checkpoint,
                   GRADIO_ANALYTICS_ENABLED="False")
        self.proc = subprocess.Popen(["bash", str(SERVE), str(replicas_n), str(self.port)], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.lines = []
        for line in self.proc.stdout:  # (serve.sh gives up on its own after DDPM_EXPLAINER_START_S)
            self.lines.append(line)
            if line.startswith("serving on") or line.startswith("stopped"):
                break
        assert self.lines and self.lines[-1].startswith("serving on"), "".join(self.lines)
        self.url = f"http://127.0.0.1:{self.port}/"

    def client(self, **kwargs):
        """A gradio_client session through the balancer (its downloads in a folder of this test's)."""
        from gradio_client import Client
        return Client(self.url, verbose=False, download_files=str(self.run.parent / "downloads"), **kwargs)

    def replicas(self) -> dict[str, int]:
        """{"127.0.0.1:PORT": pid} of the replicas serve.sh started."""
        rows = [line.split() for line in (self.run / "replicas").read_text().splitlines()]
        return {f"127.0.0.1:{port}": int(pid) for _, pid, port in rows}

    def log(self) -> list[dict]:
        """nginx's access log: per request its path, status, affinity key and the replicas tried (in order)."""
        pattern = re.compile(r'"(?P<method>\S+) (?P<path>\S+) [^"]*" (?P<status>\d+) \d+ upstream=(?P<up>.*?) '
                             r'key=(?P<key>\S*) cache=(?P<cache>\S+)$')
        rows = [pattern.search(line) for line in (self.run / "access.log").read_text().splitlines()]
        return [{**m.groupdict(), "up": [u for u in m["up"].split(", ") if u != "-"]} for m in rows if m]

    def served_by(self, key: str) -> set[str]:
        """The replicas that answered the requests of the client with affinity ``key``."""
        return {r["up"][-1] for r in self.log() if r["key"] == key and r["up"]}

    def processes(self) -> list[int]:
        """The processes left in serve.sh's session (itself, nginx, the replicas)."""
        left = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == self.proc.pid and fields[0] != "Z":  # (the session id; a zombie is gone)
                left.append(int(stat.parent.name))
        return left

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=60)
        finally:
            for pid in self.processes():  # (only after a failure: the test asserts there are none)
                os.kill(pid, signal.SIGKILL)
        self.lines += self.proc.stdout.readlines()
        return code


def wait_gone(pid: int, limit_s: float = 60.0) -> None:
    """Wait until process ``pid`` has exited (a hang guard, not a timing check)."""
    def running() -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False
    deadline = time.monotonic() + limit_s
    while running() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running(), f"process {pid} is still running"


def read(path):
    import numpy as np
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def open_sessions(d: Deployment, per_replica: int) -> dict[str, list]:
    """{replica: its gradio_client sessions}, ``per_replica`` on each: a session's replica is the one nginx's log
    shows for its requests (it keeps the affinity cookie of its first, GET /config)."""
    found = {replica: [] for replica in d.replicas()}
    for _ in range(60):  # (each new session lands on either replica with probability 1/2)
        client = d.client()
        (replica,) = d.served_by(client.cookies["ddpm_affinity"])
        if len(found[replica]) < per_replica:
            found[replica].append(client)
        if all(len(v) == per_replica for v in found.values()):
            return found
    raise AssertionError(f"60 sessions did not put {per_replica} on each replica: {found}")


def use(client, seed: int):
    """A session's work through the balancer, each result checked: a streamed reverse walk, a scrub of it (the
    session's recorded walk), a tour step and a 2D lab walk. Returns the walk's last frame, read by the scrubber.

    Sessions that run at once on one replica need their own ``seed``: Gradio writes a picture to a file named by
    its content, and two sessions that make the same picture at once rewrite one file while it is being sent."""
    from explainer.views import tour
    step = seed
    outputs = list(client.submit(*WALK[:5], seed, *WALK[6:], api_name="/reverse_walk"))
    assert len(outputs) >= 2 and outputs[-1][2].startswith("Done"), outputs[-1][2]
    first = read(client.predict(0, api_name="/reverse_scrub"))
    last = read(client.predict(12, api_name="/reverse_scrub"))
    assert first.shape == last.shape and (first != last).any()
    text, answer = client.predict(step, api_name="/tour_step")
    assert text == tour.step_markdown(step) and answer == ""
    *_, (picture, status, scrub, metrics) = client.submit(*LAB_WALK[:8], seed, api_name="/lab_walk")
    assert status.startswith("Done") and "20 steps" in status and scrub["maximum"] == 20 and "exact denoiser" in metrics
    assert read(picture).ndim == 3
    return last


def check_the_door(d: Deployment) -> None:
    """Gradio's build files come from nginx's cache after the first fetch; a body over the guard's limit is refused
    by nginx with JSON; the page is compressed; each first page gets its own affinity key."""
    import httpx
    page = httpx.get(d.url, headers={"Accept-Encoding": "gzip"})
    assert page.status_code == 200 and page.headers["content-encoding"] == "gzip"
    asset = re.search(r'src="\./(assets/[^"]+\.js)"', page.text)[1]
    for _ in range(100):  # (nginx files a response in its cache just after sending it)
        fetched = httpx.get(d.url + asset)
        if fetched.headers["x-cache-status"] == "HIT":
            break
        time.sleep(0.05)
    assert fetched.headers["x-cache-status"] == "HIT" and "immutable" in fetched.headers["cache-control"]
    big = httpx.post(d.url + "gradio_api/queue/join", content=b"x" * (guard.MAX_BODY_BYTES + 1))
    assert big.status_code == 413 and "limit" in big.json()["detail"]
    keys = {httpx.get(d.url).cookies["ddpm_affinity"] for _ in range(3)}
    assert len(keys) == 3 and all(re.fullmatch(r"[0-9a-f]{32}", k) for k in keys)
    rows = d.log()
    assert [r["up"] for r in rows if r["status"] == "413"] == [[]]  # (no replica saw the big body)
    assert all(r["up"] == [] for r in rows if r["cache"] == "HIT")  # (nor a cached file's request)


def open_page(browser, d: Deployment):
    """A Chromium page through the balancer with no event running (its load events done, its event stream closed)
    -> (page, the replica that serves it)."""
    from browser import new_page, wait_until_idle
    streams = {"open": 0}

    def watch(page):
        def count(step):
            return lambda request: streams.update(open=streams["open"] + step) if "/queue/data" in request.url else 0
        page.on("request", count(1))
        page.on("requestfinished", count(-1))
        page.on("requestfailed", count(-1))
    page = new_page(browser, d.url, before_goto=watch)
    page.locator("#tour-next").wait_for()
    wait_until_idle(page)
    quiet = 0
    for _ in range(600):  # (a page with an event running when its replica stops reloads itself: Gradio's own)
        page.wait_for_timeout(100)
        quiet = quiet + 1 if streams["open"] == 0 else 0
        if quiet == 10:
            break
    assert quiet == 10, "the page's events never finished"
    (key,) = [c["value"] for c in page.context.cookies() if c["name"] == "ddpm_affinity"]
    (replica,) = d.served_by(key)
    return page, replica


def page_is_told_to_reload(page) -> None:
    """The page's next event gets the message; reloaded, the page works on the replica left."""
    page.locator("#tour-next").click()
    page.get_by_text(replicas.RESTARTED).first.wait_for()  # (an error toast)
    page.reload()
    page.locator("#tour-next").click()
    page.wait_for_function("() => document.querySelector('#tour-step input').value.startsWith('2.')")
    assert page.get_by_text(replicas.RESTARTED).count() == 0


def session_is_gone(client) -> None:
    """A gradio_client session whose replica stopped gets 410 and the message on its next event."""
    import httpx
    with pytest.raises(httpx.HTTPStatusError) as refused:
        client.predict(12, api_name="/reverse_scrub")
    assert refused.value.response.status_code == 410
    assert refused.value.response.json()["detail"] == replicas.RESTARTED


@pytest.mark.browser
def test_two_replicas_behind_nginx(tmp_path, tiny_ckpt):
    """deploy/serve.sh 2: six sessions on both replicas, each on one; a replica stops; then everything stops."""
    need_nginx()
    from browser import chromium
    from concurrent.futures import ThreadPoolExecutor
    d = Deployment(2, tmp_path / "run", str(tiny_ckpt))
    try:
        check_the_door(d)
        sessions = open_sessions(d, per_replica=3)
        clients = [(replica, seed, c) for replica, cs in sessions.items() for seed, c in enumerate(cs)]
        with ThreadPoolExecutor(len(clients)) as pool:
            frames = list(pool.map(lambda rsc: use(rsc[2], rsc[1]), clients))
        by_seed = {seed: frame for (_, seed, _), frame in zip(clients, frames)}
        for (_, seed, _), frame in zip(clients, frames):
            assert (frame == by_seed[seed]).all()  # the same walk gives the same picture on both replicas
        assert len({f.tobytes() for f in frames}) == 3
        for replica, _, client in clients:
            assert d.served_by(client.cookies["ddpm_affinity"]) == {replica}  # every request of a session on one
        with chromium() as browser:
            page, stopped = open_page(browser, d)
            survivor = next(r for r in d.replicas() if r != stopped)
            os.kill(d.replicas()[stopped], signal.SIGTERM)
            wait_gone(d.replicas()[stopped])
            page_is_told_to_reload(page)
        for replica, seed, client in clients:
            if replica == stopped:
                session_is_gone(client)
            else:  # a session on the replica left keeps its recorded walk
                assert (read(client.predict(12, api_name="/reverse_scrub")) == by_seed[seed]).all()
        lost_key = sessions[stopped][0].cookies["ddpm_affinity"]
        again = d.client(httpx_kwargs={"cookies": {"ddpm_affinity": lost_key}})
        for client in (again, d.client()):  # new sessions, one with a key of the stopped replica
            assert (use(client, 1) == by_seed[1]).all()
        assert d.served_by(lost_key) == {stopped, survivor}
    finally:
        code = d.stop()
    assert code == 0 and d.processes() == [], "".join(d.lines)
    assert any("stopped; nginx sends its sessions to the others" in line for line in d.lines)
