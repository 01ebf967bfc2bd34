"""Memory and disk over many sessions: does `python app.py` stay bounded?

    python benchmarks/sessions.py [--sessions 10000] [--soak 0] [--walkers 2] [--workers 8]

Starts the app as `python app.py` (its own process and temp folder), warms it up (a few sessions of every
kind: cheap calls, pixels files, walks, pages that open and close), and measures its RSS: the reference. Then:

1. ``--sessions`` short sessions, each one cheap call from a new session (raw POST /gradio_api/call/tour_step and
   its result stream; one in ten also opens a page heartbeat and closes it, as a browser tab would), from
   ``--workers`` threads; RSS is printed every tenth of the way and at the end, as a ratio to the reference.
2. With ``--soak M``: M minutes of mixed traffic (new sessions calling cheap views and pixels files, ``--walkers``
   sessions running 100-step walks back to back, pages opening and closing), sampling RSS and the temp folder's
   size every 30 s, and the slope of both over the second half.

Targets (issue "a whole class at once"): RSS after 10,000 short sessions within 1.2x the warm reference; a soak
ends with flat RSS and the temp folder under the app's bound (explainer/server/sessions.py: CACHE_BYTES).
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from load import call, folder_mb, rss_mb, start_app, upload  # noqa: E402

from explainer.server.sessions import CACHE_BYTES, CACHE_ENV, SESSION_CAPACITY  # noqa: E402


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


IMAGE: dict = {}  # the uploaded photo (FileData), set in main


def page_visit(url: str, seconds: float = 0.3) -> None:
    """A browser tab: its heartbeat stream opens, one call is made in its session, the tab closes."""
    session = f"page{random.getrandbits(48):012x}"
    with httpx.Client(base_url=url, timeout=30) as c:
        with c.stream("GET", f"/gradio_api/heartbeat/{session}") as hb:
            r = c.post("/gradio_api/queue/join", json={"data": [2], "fn_index": fn_index(url, "tour_step"),
                                                       "session_hash": session})
            r.raise_for_status()
            with c.stream("GET", f"/gradio_api/queue/data?session_hash={session}") as s:
                for line in s.iter_lines():
                    if "process_completed" in line:
                        break
            time.sleep(seconds)
            hb.close()


_FN = {}


def fn_index(url: str, name: str) -> int:
    if name not in _FN:
        config = httpx.get(f"{url}/config", timeout=30).json()
        for d in config["dependencies"]:
            if d.get("api_name"):
                _FN[d["api_name"]] = d["id"]
    return _FN[name]


def short_session(url: str, i: int) -> str | None:
    try:
        if i % 10 == 0:
            page_visit(url, 0.05)
        else:
            with httpx.Client(base_url=url, timeout=60) as c:
                call(c, "tour_step", [i % 13])
        return None
    except Exception as e:  # noqa: BLE001 (counted and reported)
        return f"{type(e).__name__}: {e}"[:120]


def walker(url: str, deadline: float, seed: int, errors: list) -> None:
    with httpx.Client(base_url=url, timeout=600) as c:
        while time.time() < deadline:
            try:
                call(c, "reverse_walk", ["3", 3.0, "ddpm", 100, "training", seed, "off", 20])
            except Exception as e:  # noqa: BLE001
                errors.append(f"walk: {e}"[:120])
            seed += 1


def mixed(url: str, deadline: float, errors: list) -> None:
    k = 0
    with httpx.Client(base_url=url, timeout=120) as c:
        while time.time() < deadline:
            k += 1
            try:
                if k % 5 == 0:
                    page_visit(url, 1.0)
                elif k % 5 == 1:
                    res = call(c, "forward_pixels", [IMAGE, random.randrange(10**6)])[2]
                    c.get(res[0]["file"]["url"]).raise_for_status()
                elif k % 5 == 2:
                    call(c, "forward_noise", [IMAGE, random.randrange(1001), "cosine", random.randrange(100)])
                else:
                    call(c, "tour_step", [k % 13])
            except Exception as e:  # noqa: BLE001
                errors.append(f"{type(e).__name__}: {e}"[:120])
            time.sleep(random.uniform(0.05, 0.3))


def slope_per_min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope (units per minute) over the second half of (seconds, value) samples."""
    half = samples[len(samples) // 2:]
    if len(half) < 2:
        return float("nan")
    n = len(half)
    mx = sum(t for t, _ in half) / n
    my = sum(v for _, v in half) / n
    num = sum((t - mx) * (v - my) for t, v in half)
    den = sum((t - mx) ** 2 for t, _ in half) or 1.0
    return 60.0 * num / den


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=10_000)
    ap.add_argument("--soak", type=float, default=0.0, help="minutes of mixed traffic afterwards (0: none)")
    ap.add_argument("--walkers", type=int, default=2)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--cache-mb", type=float, default=None,
                    help="the app's bound on cached files (its $DDPM_EXPLAINER_CACHE_MB; default 256)")
    args = ap.parse_args()
    if args.cache_mb is not None:
        os.environ[CACHE_ENV] = str(args.cache_mb)  # (start_app passes the environment on)
    bound_mb = args.cache_mb if args.cache_mb is not None else CACHE_BYTES / 2 ** 20

    temp = Path(tempfile.mkdtemp(prefix="sessions-bench-"))
    port = free_port()
    proc = start_app(port, temp)
    url = f"http://127.0.0.1:{port}"
    try:
        errors: list = []
        IMAGE.update(upload(url, "camera.png"))
        # warm-up: every kind of session once or a few times
        warm_deadline = time.time() + 1
        for i in range(3):
            walker(url, warm_deadline, i, errors)
        for i in range(40):
            short_session(url, i)
        mixed(url, time.time() + 20, errors)
        time.sleep(2)
        ref = rss_mb(proc.pid)
        print(f"warm reference: RSS {ref:.0f} MB, temp folder {folder_mb(temp):.1f} MB "
              f"(session cap {SESSION_CAPACITY}, cache bound {bound_mb:.0f} MB)")

        t0 = time.time()
        step = max(1, args.sessions // 10)
        with ThreadPoolExecutor(args.workers) as pool:
            for start in range(0, args.sessions, step):
                fails = [e for e in pool.map(lambda i: short_session(url, i), range(start, start + step)) if e]
                errors += fails
                done = min(start + step, args.sessions)
                rss = rss_mb(proc.pid)
                print(f"{done:6d} sessions  {time.time() - t0:6.0f} s  RSS {rss:6.0f} MB = {rss / ref:.2f}x  "
                      f"errors {len(errors)}", flush=True)
        rss = rss_mb(proc.pid)
        verdict = "met" if rss <= 1.2 * ref else "NOT met"
        print(f"after {args.sessions} short sessions: RSS {rss:.0f} MB = {rss / ref:.2f}x the warm reference "
              f"(target <= 1.2x: {verdict}); {args.sessions / (time.time() - t0):.0f} sessions/s")

        if args.soak > 0:
            deadline = time.time() + 60 * args.soak
            threads = [threading.Thread(target=walker, args=(url, deadline, 100 + k, errors)) for k in
                       range(args.walkers)]
            threads += [threading.Thread(target=mixed, args=(url, deadline, errors)) for _ in range(4)]
            for th in threads:
                th.start()
            rss_s, disk_s = [], []
            s0 = time.time()
            while time.time() < deadline:
                time.sleep(min(30, max(0.0, deadline - time.time())))
                rss_s.append((time.time() - s0, rss_mb(proc.pid)))
                disk_s.append((time.time() - s0, folder_mb(temp)))
                print(f"soak {rss_s[-1][0] / 60:5.1f} min  RSS {rss_s[-1][1]:6.0f} MB  temp {disk_s[-1][1]:6.1f} MB  "
                      f"errors {len(errors)}", flush=True)
            for th in threads:
                th.join()
            print(f"soak of {args.soak:g} min: RSS {rss_s[0][1]:.0f} -> {rss_s[-1][1]:.0f} MB "
                  f"(slope over the second half {slope_per_min(rss_s):+.1f} MB/min), temp folder "
                  f"{disk_s[-1][1]:.0f} MB (max {max(v for _, v in disk_s):.0f}, bound {bound_mb:.0f} MB "
                  f"+ the last {120:.0f} s of files; slope {slope_per_min(disk_s):+.1f} MB/min)")
        if errors:
            print(f"{len(errors)} errors, first: {errors[:3]}")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except Exception:  # noqa: BLE001
            proc.kill()
        shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    main()
