"""A whole class at once: N simulated learners and K nonstop walkers against `python app.py`, over HTTP.

    python benchmarks/load.py [--learners 50] [--walkers 4] [--duration 60] [--think 2 18] [--no-browser]
    python benchmarks/load.py --replicas 2 ...    (then the same load again through nginx, on 2 replicas)
    python benchmarks/load.py --lecture-hall [--learners 200] [--arrive 10] [--cached]   (lecture_hall.py)

Starts the app as `python app.py` on 127.0.0.1 (its own process, with its own temp folder), then for
``--duration`` seconds:

- each learner arrives within ``--arrive`` seconds, opens the page (GET /, as a browser does: behind a balancer
  this picks its replica, whose affinity cookie stays in the learner's cookie jar), uploads its pictures, and
  does what the page now sends: the page's load events
  (forward_pixels, forward_strips, compare_pixels, for the page's defaults; a pixels event's file is fetched
  too, as the page does); then, after each pause in which it drags t (which sends nothing: the page repaints
  itself), one change: a schedule flip (forward_strips), a new seed or another picture (forward_pixels and
  forward_strips), the same on the compare tab (compare_pixels), or now and then a call of a server-side
  view (forward_noise, forward_histogram, compare_schedules) as an API user would;
- each walker runs 100-step guided reverse walks back to back (reverse_walk, streamed);
- meanwhile Chromium (Playwright, Debian's /usr/bin/chromium) opens the page and moves t 100 times (after
  10 uncounted ones), timing each move with performance.now() from the slider's input event to the repainted
  canvas (and to the next frame), and counts the requests those moves send.

Every call is its own session (raw POST /gradio_api/call/<api_name>, then its result stream). Traffic goes
to 127.0.0.1 only, each learner stops at the deadline, and the app is stopped at the end. Prints latency
percentiles per event, errors, the server's RSS and temp-folder size before and after, and the targets.

With ``--replicas N`` the same load then runs again through nginx in front of N replicas (`deploy/serve.sh N
PORT`, Debian's nginx), and both runs are printed side by side: events per second, first-frame latency, errors,
and the memory of all the replicas together (and nginx's).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "assets"
IMAGES = ["astronaut.jpg", "camera.png", "coffee.jpg", "chelsea.jpg", "digit_0.png", "digit_1.png", "digit_2.png"]
CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
WALK = ["3", 3.0, "DDPM", 100, "training", 0, "off", 20]  # digit, guidance, sampler, steps, schedule, seed, ...
TARGETS = {"repaint_p99_ms": 50.0, "first_frame_p99_s": 2.0, "errors": 0}


def percentile(values, q: float) -> float:
    """The q-th percentile (nearest rank) of ``values``."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * len(s) + 0.5)) - 1))]


class Stats:
    """Latencies per event and errors, shared by the threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.latency = defaultdict(list)
        self.errors = defaultdict(list)

    def add(self, name: str, seconds: float | None, error: str | None = None):
        with self.lock:
            if error is None:
                self.latency[name].append(seconds)
            else:
                self.errors[name].append(error[:200])


def call(client: httpx.Client, name: str, data: list) -> tuple[float, float, list]:
    """One event: POST /gradio_api/call/NAME, then read the stream to its end.

    Returns (seconds to the first message with data, seconds to the end, the result). Raises RuntimeError on an
    error event.
    """
    t0 = time.perf_counter()
    r = client.post(f"/gradio_api/call/{name}", json={"data": data})
    if r.status_code != 200:
        raise RuntimeError(f"HTTP {r.status_code}: {r.text[:150]}")
    event_id = r.json()["event_id"]
    first = None
    kind = None
    result = None
    with client.stream("GET", f"/gradio_api/call/{name}/{event_id}") as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line[7:].strip()
                if kind in ("generating", "complete") and first is None:
                    first = time.perf_counter() - t0
                if kind == "error":
                    continue
            elif line.startswith("data: ") and kind == "error":
                raise RuntimeError(f"error event: {line[6:][:150]}")
            elif line.startswith("data: ") and kind == "complete":
                result = json.loads(line[6:])
                break
    if kind != "complete":
        raise RuntimeError(f"the stream ended without a result (last event {kind})")
    end = time.perf_counter() - t0
    return (first if first is not None else end), end, result


def timed(client, stats: Stats, name: str, data: list):
    """One event, timed; the pixels events also fetch their file, as the page does."""
    try:
        _, end, result = call(client, name, data)
        stats.add(name, end)
        if name.endswith("_pixels"):
            t0 = time.perf_counter()
            r = client.get(result[0]["file"]["url"])
            r.raise_for_status()
            stats.add("pixels file (GET)", time.perf_counter() - t0)
    except (RuntimeError, httpx.HTTPError, ValueError, KeyError, TypeError) as e:
        stats.add(name, None, f"{type(e).__name__}: {e}")


def open_page(client: httpx.Client, stats: Stats) -> list:
    """What a learner's browser does first: GET / (behind a balancer, its affinity cookie stays in the client's
    jar, so the rest reaches the same replica), then its pictures uploaded there (one request). Returns them."""
    t0 = time.perf_counter()
    client.get("/").raise_for_status()
    stats.add("page (GET)", time.perf_counter() - t0)
    r = client.post("/gradio_api/upload", files=[("files", (n, (ASSETS / n).read_bytes(), "application/octet-stream"))
                                                 for n in IMAGES])
    r.raise_for_status()
    return [{"path": p, "orig_name": n, "meta": {"_type": "gradio.FileData"}} for p, n in zip(r.json(), IMAGES)]


def learner(url: str, seed: int, deadline: float, stats: Stats, think: tuple[float, float], arrive: float):
    """One learner: arrives within ``arrive`` seconds, opens the page, sends its load events (the page's defaults:
    the first picture, the linear schedule, seed 0), then one change after each pause of dragging t (which sends
    nothing)."""
    rng = random.Random(seed)
    time.sleep(rng.uniform(0, arrive))
    with httpx.Client(base_url=url, timeout=120) as client:
        try:
            files = open_page(client, stats)
        except httpx.HTTPError as e:
            return stats.add("page (GET)", None, f"{type(e).__name__}: {e}")
        image, schedule, s = files[0], "linear", 0
        for name, data in (("forward_pixels", [image, s]), ("forward_strips", [image, schedule, s]),
                           ("compare_pixels", [image, s])):
            timed(client, stats, name, data)
        while time.time() < deadline:
            time.sleep(min(rng.uniform(*think), max(0.0, deadline - time.time())))  # dragging t: nothing sent
            if time.time() >= deadline:
                break
            action = rng.random()
            if action < 0.35:
                schedule = "cosine" if schedule == "linear" else "linear"
                timed(client, stats, "forward_strips", [image, schedule, s])
            elif action < 0.75:
                if action < 0.6:
                    s = rng.randrange(10_000)
                else:
                    image = rng.choice(files)
                timed(client, stats, "forward_pixels", [image, s])
                timed(client, stats, "forward_strips", [image, schedule, s])
            elif action < 0.9:  # the compare tab: another seed or picture
                timed(client, stats, "compare_pixels", [rng.choice(files), rng.randrange(10_000)])
            else:  # an API user's call of a server-side view
                name = rng.choice(["forward_noise", "forward_histogram", "compare_schedules"])
                t = rng.randrange(1001)
                data = [image, t, s] if name == "compare_schedules" else [image, t, schedule, s]
                timed(client, stats, name, data)


def walker(url: str, seed: int, deadline: float, stats: Stats):
    """Nonstop 100-step guided reverse walks: time to the first streamed frame and to the last."""
    with httpx.Client(base_url=url, timeout=300) as client:
        client.get("/").raise_for_status()  # (the page: behind a balancer, the walker's replica)
        while time.time() < deadline:
            data = list(WALK)
            data[5] = seed
            try:
                first, end, _ = call(client, "reverse_walk", data)
                stats.add("reverse_walk (first frame)", first)
                stats.add("reverse_walk (whole walk)", end)
            except (RuntimeError, httpx.HTTPError, ValueError, KeyError) as e:
                stats.add("reverse_walk (whole walk)", None, f"{type(e).__name__}: {e}")
                time.sleep(1.0)
            seed += 1


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    """CPU seconds (user and system) process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def folder_mb(path: Path) -> float:
    """The size of the files under ``path`` (files and folders the app deletes meanwhile are skipped)."""
    total = 0
    for root, _, names in os.walk(path):  # (os.walk ignores a folder that vanished; Path.rglob raises)
        for name in names:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total / 2**20


def start_app(port: int, temp: Path) -> subprocess.Popen:
    env = dict(os.environ, GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), GRADIO_TEMP_DIR=str(temp),
               GRADIO_ANALYTICS_ENABLED="False")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"app.py exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/gradio_api/info", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("app.py did not start within 180 s")


def start_replicas(n: int, port: int, temp: Path, run: Path) -> tuple[subprocess.Popen, dict[int, str], list[int]]:
    """`deploy/serve.sh n port` with each replica's cache folder under ``temp`` -> (serve.sh, {each replica's pid:
    its own URL}, nginx's pids)."""
    env = dict(os.environ, GRADIO_TEMP_DIR=str(temp), DDPM_EXPLAINER_RUN_DIR=str(run),
               GRADIO_ANALYTICS_ENABLED="False")
    proc = subprocess.Popen(["bash", str(ROOT / "deploy" / "serve.sh"), str(n), str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(("serving on", "stopped")):
            break
    if not lines or not lines[-1].startswith("serving on"):
        raise SystemExit("deploy/serve.sh did not start:\n" + "".join(lines[-20:]))
    replicas = {int(pid): f"http://127.0.0.1:{port}" for _, pid, port in
                (row.split() for row in (run / "replicas").read_text().splitlines())}
    master = int((run / "nginx.master").read_text())
    return proc, replicas, [master, *children(master)]


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (nginx's workers)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[2]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            pass
    return found


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def browser_moves(url: str, moves: int, result: dict):
    """Chromium moves t ``moves`` times; per move: ms from the input event to the repainted canvas and to the
    next frame; and the requests the moves sent."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        result["skipped"] = "the playwright package is missing"
        return
    if not Path(CHROMIUM).exists():
        result["skipped"] = f"{CHROMIUM} is missing"
        return
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(120_000)
        requests = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(url)
        page.get_by_role("tab", name="Forward diffusion", exact=True).click()  # (the tour is the first tab)
        page.wait_for_function("() => { const v = document.querySelector('[data-ddpm-view=forward]'); "
                               "return v && v.dataset.seed !== ''; }")
        quiet_until = time.time() + 60  # the page's load events and pictures settle: 2 s without a request
        while time.time() < quiet_until:
            n = len(requests)
            time.sleep(2.0)
            if len(requests) == n:
                break
        before = len(requests)
        times = page.evaluate("""async (moves) => {
            const input = document.querySelector('#fwd-t input[type=range]');
            const view = document.querySelector('[data-ddpm-view=forward]');
            const out = [];
            for (let k = -10; k < moves; k++) {  // (the first 10 warm the page's code up: not counted)
                const t = (37 * k + 11) % 1001;
                input.value = String(t);
                const t0 = performance.now();
                input.dispatchEvent(new Event('input', {bubbles: true}));  // what a drag or an arrow key fires
                const painted = performance.now();
                await new Promise(r => requestAnimationFrame(() => r()));
                if (k >= 0) out.push([painted - t0, performance.now() - t0, view.dataset.t === String(t)]);
                await new Promise(r => setTimeout(r, 20));
            }
            return out;
        }""", moves)
        result["repaint_ms"] = [a for a, _, _ in times]
        result["frame_ms"] = [b for _, b, _ in times]
        result["all_painted"] = all(ok for _, _, ok in times)
        result["requests"] = [r for r in requests[before:]]
        browser.close()


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--learners", type=int, default=50)
    ap.add_argument("--walkers", type=int, default=4)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    ap.add_argument("--think", type=float, nargs=2, default=(2.0, 18.0),
                    help="seconds a learner drags t between two changes: uniform in this range (default 2 18)")
    ap.add_argument("--arrive", type=float, default=10.0,
                    help="the learners open the page within this many seconds of the start (default 10)")
    ap.add_argument("--moves", type=int, default=100, help="t moves timed in Chromium (default 100)")
    ap.add_argument("--port", type=int, default=0, help="the app's (or nginx's) port (default: a free one)")
    ap.add_argument("--replicas", type=int, default=0,
                    help="after the run on one process, the same load through nginx on this many replicas")
    ap.add_argument("--no-browser", action="store_true")
    args = ap.parse_args()
    if args.duration > 1800 or args.learners > 500 or args.walkers > 50 or not 0 <= args.replicas <= 8:
        raise SystemExit("bounded on purpose: at most 1800 s, 500 learners, 50 walkers, 8 replicas")
    return args


def main():
    if "--lecture-hall" in sys.argv:  # learners pressing Sample once each: benchmarks/lecture_hall.py
        from lecture_hall import main as lecture_hall
        return lecture_hall([a for a in sys.argv[1:] if a != "--lecture-hall"])
    args = parse_args()
    print(f"{os.cpu_count()} CPU cores; load average before the run: {os.getloadavg()[0]:.2f}")
    runs = [run(args, 0)]
    if args.replicas:
        runs.append(run(args, args.replicas))
        side_by_side(runs)


def run(args, replicas: int) -> dict:
    """The load against one `python app.py` (``replicas`` 0) or through nginx on ``replicas`` replicas; prints its
    report and returns its summary."""
    port = args.port
    if not port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    temp, serve_run = Path(tempfile.mkdtemp(prefix="load-gradio-")), Path(tempfile.mkdtemp(prefix="load-serve-"))
    t_start = time.perf_counter()
    if replicas:
        proc, apps, nginx = start_replicas(replicas, port, temp, serve_run)
    else:
        proc, nginx = start_app(port, temp), []
        apps = {proc.pid: url}
    title = f"{replicas} replicas behind nginx" if replicas else "one process"
    print(f"\n## {title}: serving on {url} after {time.perf_counter() - t_start:.1f} s")
    try:
        measured = load(args, url, apps, temp)
        measured["nginx_mb"] = sum(rss_mb(pid) for pid in nginx)
    finally:
        stop(proc)
        shutil.rmtree(temp, ignore_errors=True)
        shutil.rmtree(serve_run, ignore_errors=True)
    return {"title": title, **report(args, **measured)}


def load(args, url: str, apps: dict[int, str], temp: Path) -> dict:
    """Warm up, then the class for ``args.duration`` seconds (and Chromium's t moves) at ``url``; the measurements.
    ``apps``: {each server process's pid: its own URL}."""
    stats, browser = Stats(), {}
    for own_url in apps.values():  # warm caches: one page load and one walk on each server process
        with httpx.Client(base_url=own_url, timeout=120) as c:
            files = open_page(c, Stats())
            for name, data in (("forward_pixels", [files[0], 0]), ("forward_strips", [files[0], "linear", 0]),
                               ("compare_pixels", [files[0], 0]), ("reverse_walk", WALK)):
                call(c, name, data)
    rss0, tmp0, cpu0 = sum(rss_mb(pid) for pid in apps), folder_mb(temp), sum(cpu_s(pid) for pid in apps)
    deadline = time.time() + args.duration
    threads = [threading.Thread(target=learner, daemon=True,
                                args=(url, i, deadline, stats, tuple(args.think), args.arrive))
               for i in range(args.learners)]
    threads += [threading.Thread(target=walker, args=(url, 1000 * (i + 1), deadline, stats), daemon=True)
                for i in range(args.walkers)]
    for th in threads:
        th.start()
    if not args.no_browser:
        time.sleep(min(5.0, args.duration / 4))  # the class is busy before the browser measures
        browser_moves(url, args.moves, browser)
    for th in threads:
        th.join(timeout=max(1.0, deadline - time.time()) + 120)
    span = time.time() - deadline + args.duration
    rss1, tmp1, cpu = sum(rss_mb(pid) for pid in apps), folder_mb(temp), sum(cpu_s(pid) for pid in apps) - cpu0
    pixels = sum(folder_mb(Path(tempfile.gettempdir()) / f"ddpm-explainer-pixels-{pid}") for pid in apps)
    return dict(stats=stats, browser=browser, span=span, rss0=rss0, rss1=rss1, tmp0=tmp0, tmp1=tmp1,
                load=os.getloadavg()[0], pixels=pixels, processes=len(apps), cpu=cpu)


def report(args, stats: Stats, browser: dict, span: float, rss0, rss1, tmp0, tmp1, load: float, pixels: float,
           processes: int = 1, nginx_mb: float = 0.0, cpu: float = float("nan")) -> dict:
    """Print the run's table, memory and targets; return its summary (for ``side_by_side``)."""
    events = sum(len(v) for k, v in stats.latency.items() if "first frame" not in k and "(GET)" not in k)
    errors = sum(len(v) for v in stats.errors.values())
    print(f"\n{args.learners} learners, {args.walkers} nonstop walkers, {span:.0f} s: {events} events done "
          f"({events / span:.1f}/s), {errors} errors; load average at the end {load:.2f}; the server processes used "
          f"{cpu:.0f} CPU seconds ({cpu / span:.2f} cores, {events / cpu:.2f} events per CPU second)\n")
    print("| event | done | p50 | p95 | p99 | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in sorted(set(stats.latency) | set(stats.errors)):
        v = stats.latency[name]
        ms = lambda q: f"{percentile(v, q) * 1e3:.0f} ms" if v else "-"  # noqa: E731
        print(f"| {name} | {len(v)} | {ms(50)} | {ms(95)} | {ms(99)} | {len(stats.errors[name])} |")
    if "repaint_ms" in browser:
        r, f = browser["repaint_ms"], browser["frame_ms"]
        print(f"| browser: t move, input -> canvas repainted ({len(r)} moves) | {len(r)} | "
              f"{statistics.median(r):.1f} ms | {percentile(r, 95):.1f} ms | {percentile(r, 99):.1f} ms | "
              f"{0 if browser['all_painted'] else 'not all painted'} |")
        print(f"| browser: t move, input -> next frame | {len(f)} | {statistics.median(f):.1f} ms | "
              f"{percentile(f, 95):.1f} ms | {percentile(f, 99):.1f} ms | |")
        print(f"\nrequests sent by the {len(r)} t moves: {len(browser['requests'])}"
              + "".join(f"\n  {u.split('?')[0][-120:]}" for u in browser["requests"][:5]))
    elif browser:
        print(f"\nbrowser: skipped ({browser['skipped']})")
    servers = "server RSS" if processes == 1 else f"the {processes} servers' RSS together"
    print(f"{servers}: {rss0:.0f} MB before, {rss1:.0f} MB after"
          + (f" (nginx: {nginx_mb:.0f} MB)" if nginx_mb else "")
          + f"; Gradio's temp folder: {tmp0:.1f} MB before, {tmp1:.1f} MB after; the pixels files' folder (bounded): "
          f"{pixels:.1f} MB after")
    for name, errs in stats.errors.items():
        if errs:
            print(f"errors of {name} (first of {len(errs)}): {errs[0]}")
    first = stats.latency.get("reverse_walk (first frame)", [])
    checks = [("repaint per t move, p99", "repaint_ms" in browser and percentile(browser["repaint_ms"], 99)
               <= TARGETS["repaint_p99_ms"] and not browser["requests"], f"<= {TARGETS['repaint_p99_ms']:.0f} ms"
               ", no request"),
              ("first streamed frame of a walk, p99", bool(first) and percentile(first, 99)
               <= TARGETS["first_frame_p99_s"], f"<= {TARGETS['first_frame_p99_s']:.0f} s"),
              ("errors", errors == TARGETS["errors"], "0")]
    def verdict(name: str, ok: bool) -> str:
        return "not measured" if name.startswith("repaint") and "repaint_ms" not in browser else (
            "met" if ok else "NOT met")
    print("\ntargets: " + "; ".join(f"{n} {want}: {verdict(n, ok)}" for n, ok, want in checks))
    return {"events/s": events / span, "cores": cpu / span, "events/cpu_s": events / cpu, "errors": errors, "latency": stats.latency, "rss0": rss0, "rss1": rss1,
            "nginx_mb": nginx_mb, "repaint_ms": browser.get("repaint_ms", [])}


def side_by_side(runs: list[dict]) -> None:
    """The runs' headline figures in one table (the same load on one process and through the balancer)."""
    def ms(run: dict, name: str) -> str:
        v = run["latency"].get(name, [])
        return f"{percentile(v, 50) * 1e3:.0f} / {percentile(v, 99) * 1e3:.0f} ms" if v else "-"
    rows = [("events done per second", lambda r: f"{r['events/s']:.1f}"), ("errors", lambda r: str(r["errors"])),
            ("cores the servers kept busy", lambda r: f"{r['cores']:.2f}"),
            ("events per server CPU second", lambda r: f"{r['events/cpu_s']:.2f}")]
    rows += [(f"{name}, p50 / p99", lambda r, name=name: ms(r, name))
             for name in ("reverse_walk (first frame)", "reverse_walk (whole walk)", "forward_pixels",
                          "forward_strips", "page (GET)")]
    rows += [("browser: t move repainted, p50 / p99", lambda r: f"{statistics.median(r['repaint_ms']):.1f} / "
              f"{percentile(r['repaint_ms'], 99):.1f} ms" if r["repaint_ms"] else "-"),
             ("servers' RSS before / after the load", lambda r: f"{r['rss0']:.0f} / {r['rss1']:.0f} MB"),
             ("nginx's RSS", lambda r: f"{r['nginx_mb']:.0f} MB" if r["nginx_mb"] else "-")]
    print("\n## side by side, the same load\n")
    print("| | " + " | ".join(r["title"] for r in runs) + " |")
    print("|---|" + "---:|" * len(runs))
    for label, cell in rows:
        print(f"| {label} | " + " | ".join(cell(r) for r in runs) + " |")


if __name__ == "__main__":
    main()
