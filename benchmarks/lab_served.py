"""The 2D lab's walk as a served app streams it: a running `python app.py`, called over HTTP like a browser.

    python app.py &                                  # the app in its own process
    python benchmarks/lab_served.py --url http://127.0.0.1:7860/ [--walks 4]

Times the default 100-step DDPM walk of 2,000 particles (two moons, network and exact denoiser side by side)
through Gradio's HTTP API, reading the event stream without downloading the pictures: the first streamed update,
the end picture (the "Done" status) and the complete event (after the distances), and the server's CPU seconds
per walk (read from /proc, so the app must run on this computer; found by its command line, or --pid). Then the
same walk in this process through the backend alone (views.lab.walk, one torch thread), so the printed ratio is
what serving adds: picture encoding, the event stream, and the server's memory settings. The first walk warms the
server's caches and is left out of the medians.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ARGS = ["two moons", "DDPM", 100, 0, "training", 2000, "unconditional", 1, 0, None, None]  # lab_walk's inputs


def server_pid(pid: int | None) -> int | None:
    if pid is not None:
        return pid
    try:
        return int(subprocess.check_output(["pgrep", "-f", "python.* app.py"]).split()[0])
    except (subprocess.CalledProcessError, IndexError, FileNotFoundError):
        return None


def cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def served_walk(url: str) -> tuple[float, float, float, int]:
    """(first update, end picture, complete) seconds after the call, and the number of streamed updates."""
    base = url.rstrip("/") + "/gradio_api/call/lab_walk"
    t0 = time.perf_counter()
    req = urllib.request.Request(base, data=json.dumps({"data": ARGS}).encode(),
                                 headers={"Content-Type": "application/json"})
    event_id = json.loads(urllib.request.urlopen(req).read())["event_id"]
    first = end = None
    updates, event = 0, None
    with urllib.request.urlopen(f"{base}/{event_id}") as stream:
        for raw in stream:
            line = raw.decode().strip()
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
                if event == "error":
                    raise RuntimeError(f"the app answered with an error: {stream.read()[:300]!r}")
            elif line.startswith("data:") and event in ("generating", "complete"):
                now = time.perf_counter() - t0
                updates += 1
                first = now if first is None else first
                status = json.loads(line[5:])[1]
                if end is None and isinstance(status, str) and status.startswith("Done"):
                    end = now
                if event == "complete":
                    break
    return first, end, time.perf_counter() - t0, updates


def backend_walk() -> float:
    """Seconds to the end picture of the same walk through views.lab.walk in this process."""
    import torch
    from explainer.views import lab as vl
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    for u in vl.walk(*ARGS[:9]):
        if u.step == u.total and not u.finished:
            return time.perf_counter() - t0
    raise RuntimeError("the walk ended without its end picture")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:7860/")
    p.add_argument("--walks", type=int, default=4)
    p.add_argument("--pid", type=int, default=None, help="the server's process id (default: found by pgrep)")
    args = p.parse_args(argv)
    pid = server_pid(args.pid)
    rows = []
    for i in range(args.walks + 1):
        c0 = cpu_seconds(pid)
        first, end, done, updates = served_walk(args.url)
        cpu = cpu_seconds(pid) - c0
        print(f"walk {i}{' (warm-up)' if i == 0 else ''}: first update {first:.2f} s, end picture {end:.2f} s, "
              f"complete {done:.2f} s, {updates} updates, server CPU {cpu:.2f} s")
        if i:
            rows.append((end, done, cpu))
    backend = [backend_walk() for _ in range(3)][1:]
    end = statistics.median(r[0] for r in rows)
    print(f"served (median of {len(rows)}): end picture {end:.2f} s, complete "
          f"{statistics.median(r[1] for r in rows):.2f} s, server CPU {statistics.median(r[2] for r in rows):.2f} s "
          f"per walk; the backend alone in this process: {statistics.median(backend):.2f} s to the end picture; "
          f"served / backend = {end / statistics.median(backend):.2f}")


if __name__ == "__main__":
    main()
