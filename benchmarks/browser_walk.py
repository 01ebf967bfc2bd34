"""Reverse walks computed in the page against the server's: the page's timings and the server's CPU per walk.

    python benchmarks/browser_walk.py [--walks 5] [--steps 100]

Starts `python app.py` (its own process) and:

- in headless Chromium (Debian's /usr/bin/chromium), presses Sample on the reverse tab ``--walks`` times per model
  (after one uncounted walk that loads the runtime and the model) and reads the page's own clock: from the press
  to the first frame (x_T), to the first denoised frame and to the last frame; digits with guidance 3 and emoji
  with guidance 5 (clipped), 100 DDPM steps; then on the forward tab, from a new seed to both strips drawn;
- over HTTP, measures the server's CPU time (its process's user + system time) for ``--walks`` payloads
  (/reverse_walk_payload) and for ``--walks`` server walks (/reverse_walk) of the same settings, and prints
  their ratio.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import CHROMIUM, LAUNCH_ARGS, call, start_app  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"digits": ("3", 3.0, False), "emoji": ("Smileys & Emotion", 5.0, True)}


def cpu_seconds(pid: int) -> float:
    """The process's user + system CPU time so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cpu(url: str, pid: int, name: str, data: list, walks: int) -> float:
    """The server's CPU seconds per call of ``name`` (one warm-up call first), less what the idle server spends in
    the same time (its housekeeping)."""
    with httpx.Client(base_url=url, timeout=300) as client:
        call(client, name, data)
        before, t0 = cpu_seconds(pid), time.perf_counter()
        for _ in range(walks):
            call(client, name, data)
        busy, seconds = cpu_seconds(pid) - before, time.perf_counter() - t0
    return max(0.0, busy - idle_rate(pid) * seconds) / walks


def idle_rate(pid: int, seconds: float = 3.0) -> float:
    """The server's CPU seconds per second while nobody calls it."""
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / seconds


def settle(pid: int, limit: float = 0.02, timeout: float = 120.0) -> None:
    """Wait until the app's start-up work (its default results, the fast network path) is done."""
    deadline = time.time() + timeout
    while idle_rate(pid) > limit and time.time() < deadline:
        pass


@contextlib.contextmanager
def app_tab(url: str, tab: str):
    """A page of the app in headless Chromium, opened on ``tab``; the browser closes after the block."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(120_000)
        page.goto(url)
        page.get_by_role("tab", name=tab, exact=True).click()
        try:
            yield page
        finally:
            browser.close()


def page_walks(url: str, walks: int, steps: int) -> dict:
    """{model: [(first frame, first denoised frame, last frame) in ms]} from the page's own clock."""
    out = {}
    with app_tab(url, "Reverse diffusion") as page:
        for model, (label, guidance, clip) in MODELS.items():
            choose_model(page, model)
            set_walk(page, label, guidance, steps, clip)
            times = []
            for k in range(walks + 1):
                state = press(page)
                if k:  # (the first walk loads the runtime and the model: not counted)
                    times.append(tuple(float(state[key]) for key in ("firstMs", "firstStepMs", "lastMs")))
            out[model] = times
    return out


def page_strips(url: str, changes: int) -> list[tuple[float, float]]:
    """The forward tab's strips drawn in the page: per new seed, (ms from the seed's Enter to both strips drawn,
    ms the page spent drawing them)."""
    view, out = "[data-ddpm-view=strips]", []
    with app_tab(url, "Forward diffusion") as page:
        page.locator(f"{view}[data-drawn]").wait_for(state="attached")
        for seed in range(1, changes + 1):
            drawn = page.evaluate(f"() => document.querySelector('{view}').dataset.drawn")
            box = page.locator("#fwd-seed input[type=number]")
            box.fill(str(seed))
            t0 = page.evaluate("() => performance.now()")
            box.press("Enter")
            page.wait_for_function(f"() => document.querySelector('{view}').dataset.drawn !== '{drawn}'")
            d = page.evaluate(f"() => ({{...document.querySelector('{view}').dataset}})")
            out.append((float(d["drawnAt"]) - t0, float(d["ms"])))
    return out


def choose_model(page, model: str) -> None:
    page.locator("#model-picker input").click()
    page.get_by_role("option").filter(has_text="emoji" if model == "emoji" else "digits").first.click()
    page.wait_for_timeout(1500)  # (the model's followers reset the class, guidance and clipping)


def set_walk(page, label: str, guidance: float, steps: int, clip: bool) -> None:
    page.locator("#rev-class input").click()
    page.get_by_role("option", name=label, exact=True).click()
    for elem_id, value in (("rev-guidance", guidance), ("rev-steps", steps)):
        box = page.locator(f"#{elem_id} input[type=number]")
        box.fill(str(value))
        box.press("Enter")
    page.locator("#rev-clip input").set_checked(clip)
    page.wait_for_timeout(500)


def press(page) -> dict:
    view = "[data-ddpm-view=walk]"
    ticket = int(page.evaluate(f"() => document.querySelector('{view}').dataset.ticket || 0"))
    page.locator("#rev-run").click()
    page.wait_for_function(f"() => {{ const d = document.querySelector('{view}').dataset; "
                           f"return Number(d.ticket) > {ticket} && d.status === 'done'; }}")
    return page.evaluate(f"() => ({{...document.querySelector('{view}').dataset}})")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--walks", type=int, default=5)
    ap.add_argument("--steps", type=int, default=100)
    args = ap.parse_args()
    import socket
    import tempfile
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    print(f"{os.cpu_count()} CPU cores; load average before the run: {os.getloadavg()[0]:.2f}")
    proc = start_app(port, Path(tempfile.mkdtemp(prefix="browser-walk-")))
    url = f"http://127.0.0.1:{port}"
    try:
        # the reverse walk's arguments, then label_b, guidance_b, model_name
        walk = ["3", 3.0, "ddpm", args.steps, "training", 0, "off", 20, False, "3", 1.0, None]
        settle(proc.pid)
        payload_cpu = server_cpu(url, proc.pid, "reverse_walk_payload", walk + ["in your browser"],
                                 args.walks)
        walk_cpu = server_cpu(url, proc.pid, "reverse_walk", walk, args.walks)
        times = page_walks(url, args.walks, args.steps)
        strips = page_strips(url, args.walks)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    print(f"\nserver CPU per walk, 100 guided digit steps: payload {payload_cpu * 1e3:.1f} ms, server walk "
          f"{walk_cpu * 1e3:.0f} ms: {100 * payload_cpu / walk_cpu:.1f} % (target <= 5 %)")
    print(f"\n| model, {args.steps} DDPM steps, in the page | first frame (x_T) | first denoised frame | last frame |")
    print("|---|---:|---:|---:|")
    for model, rows in times.items():
        med = [statistics.median(r[i] for r in rows) for i in range(3)]
        print(f"| {model} (median of {len(rows)}) | {med[0]:.0f} ms | {med[1]:.0f} ms | {med[2]:.0f} ms |")
    shown, drawing = (statistics.median(s[i] for s in strips) for i in (0, 1))
    print(f"\nforward strips, a new seed (median of {len(strips)}): from the seed's Enter to both strips drawn "
          f"{shown:.0f} ms, of which drawing {drawing:.0f} ms")
    print(f"load average after the run: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
