"""A lecture hall: N learners who each press Sample once within a few seconds, walks in their browsers or on the
server.

    python benchmarks/load.py --lecture-hall [--learners 200] [--arrive 10] [--cached]
    python benchmarks/lecture_hall.py [--learners 200] [--arrive 10] [--cached]

Starts `python app.py` (its own process, as benchmarks/load.py does), waits until its start-up work is done, then
runs the hall twice on it:

0. the learners open the page (GET /) and, on a first visit, their browsers fetch the runtime and the model's
   ONNX file (about 17 MB; ``--cached``: browsers that have them from an earlier visit fetch none);
1. **in the browser**: each presses Sample once, as pages with in-page walks do: the walk's payload
   (/reverse_walk_payload, 100 guided DDPM digit steps, in the learner's session as one POST /gradio_api/run
   request; the page sends it through Gradio's queue; the files are in the browser's cache by now);
2. **on the server**: the same presses with the server's walk (/reverse_walk, streamed to its end).

In each phase every learner acts at a uniform random time within ``--arrive`` seconds and is its own session. Reports per hall:
the payload's (or the walk's first frame's and whole walk's) latency p50 / p99, the files' fetch time, the
server's CPU per walk (its process's user + system time over the hall, less its idle rate), its RSS, and errors.
"""
from __future__ import annotations

import argparse
import os
import random
import socket
import tempfile
import threading
import time
from pathlib import Path

import httpx

from load import Stats, call, percentile, rss_mb, start_app

WALK = ["3", 3.0, "ddpm", 100, "training", 0, "off", 20, False, "3", 1.0, None]  # ... label_b, guidance_b, model
FILES: list[str] = []  # the runtime's and the model's URLs (from a first payload)
TARGETS = {"payload_p99_s": 0.3, "cpu_per_walk_s": 0.02, "errors": 0}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_rate(pid: int, seconds: float = 3.0) -> float:
    """The server's CPU seconds per second while nobody calls it (its housekeeping)."""
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / seconds


def payload(client: httpx.Client, seed: int, where: str) -> dict:
    """The walk's payload in the learner's own session (POST /gradio_api/run/...: one request; the page itself
    sends the same event through Gradio's queue, which adds its own overhead)."""
    data = list(WALK)
    data[5] = seed
    r = client.post("/gradio_api/run/reverse_walk_payload",
                    json={"data": data + [where], "session_hash": f"hall{seed:06d}"})
    if r.status_code != 200:
        raise RuntimeError(f"HTTP {r.status_code}: {r.text[:150]}")
    return r.json()["data"][0]


def open_page(url: str, seed: int, delay: float, cached: bool, stats: Stats) -> None:
    """A learner opens the page (GET /, then an event that makes its session, as the page's own load events do)
    and, on a first visit, its browser fetches the runtime and the model."""
    time.sleep(delay)
    with httpx.Client(base_url=url, timeout=300) as client:
        try:
            t0 = time.perf_counter()
            client.get("/").raise_for_status()
            payload(client, seed, "on the server")  # (the smallest answer: "the server walks")
            stats.add("page (GET /) and its session", time.perf_counter() - t0)
            if not cached:
                t0 = time.perf_counter()
                for f in FILES:
                    client.get(f).raise_for_status()
                stats.add("runtime and model files (first visit)", time.perf_counter() - t0)
        except (RuntimeError, httpx.HTTPError, ValueError, KeyError) as e:
            stats.add("page (GET /) and its session", None, f"{type(e).__name__}: {e}")


def press_sample(url: str, seed: int, delay: float, stats: Stats) -> None:
    """A learner whose page is open presses Sample: the page asks for the walk's payload (its files are cached)."""
    time.sleep(delay)
    with httpx.Client(base_url=url, timeout=300) as client:
        try:
            t0 = time.perf_counter()
            answer = payload(client, seed, "in your browser")
            stats.add("payload", time.perf_counter() - t0)
            if answer.get("run") != "browser":
                raise RuntimeError(f"the payload says the server walks: {answer.get('reason')}")
        except (RuntimeError, httpx.HTTPError, ValueError, KeyError, TypeError) as e:
            stats.add("payload", None, f"{type(e).__name__}: {e}")


def server_walk(url: str, seed: int, delay: float, stats: Stats) -> None:
    """A learner whose page is open presses Sample with the server's walk, streamed to its end."""
    time.sleep(delay)
    with httpx.Client(base_url=url, timeout=900) as client:
        try:
            data = list(WALK)
            data[5] = seed
            first, end, _ = call(client, "reverse_walk", data)
            stats.add("server walk: first frame", first)
            stats.add("server walk: whole walk", end)
        except (RuntimeError, httpx.HTTPError, ValueError, KeyError) as e:
            stats.add("server walk: whole walk", None, f"{type(e).__name__}: {e}")


def hall(url: str, pid: int, learners: int, arrive: float, target) -> tuple[Stats, float, float, float]:
    """Runs ``target(url, seed, delay, stats)`` for every learner; (stats, CPU s per walk, seconds, RSS MB)."""
    rng, stats = random.Random(0), Stats()
    idle = idle_rate(pid)
    threads = [threading.Thread(target=target, args=(url, 100 + i, rng.uniform(0, arrive), stats), daemon=True)
               for i in range(learners)]
    before, t0 = cpu_seconds(pid), time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=1800)
    seconds = time.perf_counter() - t0
    cpu = max(0.0, cpu_seconds(pid) - before - idle * seconds) / learners
    return stats, cpu, seconds, rss_mb(pid)


def report(name: str, stats: Stats, cpu: float, seconds: float, rss: float) -> None:
    errors = sum(len(v) for v in stats.errors.values())
    print(f"\n{name}: {seconds:.1f} s, server CPU per walk {cpu * 1e3:.1f} ms, RSS {rss:.0f} MB, {errors} errors")
    print("| what | done | p50 | p99 |")
    print("|---|---:|---:|---:|")
    for key in sorted(stats.latency):
        v = stats.latency[key]
        print(f"| {key} | {len(v)} | {percentile(v, 50) * 1e3:.0f} ms | {percentile(v, 99) * 1e3:.0f} ms |")
    for key, errs in stats.errors.items():
        if errs:
            print(f"errors of {key} (first of {len(errs)}): {errs[0]}")


def settle(pid: int, limit: float = 0.02, timeout: float = 180.0) -> None:
    """Wait until the app's start-up work (its default results, the fast network path) is done."""
    deadline = time.time() + timeout
    while idle_rate(pid) > limit and time.time() < deadline:
        pass


def run(learners: int = 200, arrive: float = 10.0, cached: bool = False, port: int = 0) -> None:
    if not port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    print(f"{os.cpu_count()} CPU cores; load average before the run: {os.getloadavg()[0]:.2f}")
    proc = start_app(port, Path(tempfile.mkdtemp(prefix="lecture-hall-")))
    try:
        with httpx.Client(base_url=url, timeout=300) as client:  # one of each first: the caches are warm
            first = payload(client, 0, "in your browser")
            FILES[:] = [f["url"] for f in (first["model"]["file"], *first["runtime"].values())]
            call(client, "reverse_walk", WALK)
        settle(proc.pid)
        pages = hall(url, proc.pid, learners, arrive, lambda u, s, d, st: open_page(u, s, d, cached, st))
        report(f"{learners} learners open the page ({'files cached' if cached else 'first visit'}); CPU per learner",
               *pages)
        browser = hall(url, proc.pid, learners, arrive, press_sample)
        report("then each presses Sample: walks in their browsers", *browser)
        server = hall(url, proc.pid, learners, arrive, server_walk)
        report(f"the same {learners} presses with the server's walks", *server)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    latency = browser[0].latency.get("payload", [])
    errors = sum(len(v) for v in browser[0].errors.values())
    checks = [("payload p99", bool(latency) and percentile(latency, 99) <= TARGETS["payload_p99_s"], "<= 300 ms"),
              ("server CPU per browser walk", browser[1] <= TARGETS["cpu_per_walk_s"], "<= 20 ms"),
              ("errors", errors == TARGETS["errors"], "0")]
    print("\ntargets: " + "; ".join(f"{n} {want}: {'met' if ok else 'NOT met'}" for n, ok, want in checks))
    print(f"server CPU per walk: browser {browser[1] * 1e3:.1f} ms, server {server[1] * 1e3:.0f} ms "
          f"({100 * browser[1] / max(server[1], 1e-9):.1f} %); load average after the run: {os.getloadavg()[0]:.2f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--learners", type=int, default=200)
    ap.add_argument("--arrive", type=float, default=10.0, help="every learner presses within this many seconds")
    ap.add_argument("--cached", action="store_true", help="browsers have the runtime and model files already")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    if args.learners > 500:
        raise SystemExit("bounded on purpose: at most 500 learners")
    run(args.learners, args.arrive, args.cached, args.port)


if __name__ == "__main__":
    main()
