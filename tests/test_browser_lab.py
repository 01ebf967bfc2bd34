"""The 2D lab in a real browser: Playwright (the Python package) driving Debian's /usr/bin/chromium.

Draws a shape on the sketchpad with the mouse, trains the network on it, runs a walk and checks that the particles
move (the streamed pictures change), then scrubs back through the recorded walk. Never skips silently in CI:
without Chromium it fails when $CI is set.
"""
from __future__ import annotations

import math
import os
import socket
import time
from pathlib import Path

import pytest

from test_browser import img_src, wait_for_new_src  # noqa: E402  the same waiting helpers

pytestmark = pytest.mark.browser
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"browser test cannot run in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def page(tiny_ckpt):
    if not Path(CHROMIUM).exists():
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright Python package is missing (pip install playwright)")
    import torch

    import app
    from explainer.views import model_slot as views

    threads = torch.get_num_threads()
    app.configure_threads()
    demo = app.build_app(views.load_slot(str(tiny_ckpt), fast=False))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, url, _ = app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        pg = browser.new_page(viewport={"width": 1280, "height": 1000})
        pg.set_default_timeout(60_000)
        pg.goto(url)
        pg.get_by_role("tab", name="2D lab").click()
        yield pg
        browser.close()
    demo.close()
    torch.set_num_threads(threads)


def set_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def draw_circle(page) -> None:
    """Pick the brush and draw a closed circle with the mouse on the sketchpad's canvas."""
    page.locator("#lab-sketch button[aria-label=Brush]").click()
    box = page.locator("#lab-sketch canvas").last.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    r = 0.3 * min(box["width"], box["height"])
    page.mouse.move(cx + r, cy)
    page.mouse.down()
    for k in range(1, 21):  # few, long moves: headless Chromium repaints the canvas on every one
        a = 2 * math.pi * k / 20
        page.mouse.move(cx + r * math.cos(a), cy + r * math.sin(a))
    page.mouse.up()


def test_draw_train_and_watch_the_particles_move(page):
    forward = wait_for_new_src(page, "lab-forward", None)
    wait_for_new_src(page, "lab-field", None)
    page.locator("#lab-data input").click()
    page.get_by_role("option", name="draw your own").click()
    page.locator("#lab-forward-text").get_by_text("nothing drawn yet").wait_for()
    draw_circle(page)
    # the drawing reaches the server: the forward view shows its noised points
    page.locator("#lab-forward-text").get_by_text("training points noised in one go").wait_for(timeout=60_000)
    assert wait_for_new_src(page, "lab-forward", forward) != forward
    set_number(page, "lab-train-steps", 150)
    page.locator("#lab-train").click()
    page.locator("#lab-train-status").get_by_text("Trained on your drawing").wait_for(timeout=120_000)
    page.locator("#lab-field-text").get_by_text("trained here").wait_for()
    set_number(page, "lab-particles", 500)
    set_number(page, "lab-steps", 80)
    page.evaluate("""() => {
        window.__lab = {srcs: [], status: []};
        const push = (list, v) => { if (v && list[list.length - 1] !== v) list.push(v); };
        new MutationObserver(() => {
            const img = document.querySelector('#lab-walk img');
            push(window.__lab.srcs, img && img.src);
            const status = document.querySelector('#lab-status');
            push(window.__lab.status, status && status.textContent.trim());
        }).observe(document.body, {subtree: true, childList: true, characterData: true, attributes: true,
                                    attributeFilter: ['src']});
    }""")
    page.locator("#lab-run").click()
    page.locator("#lab-status").get_by_text("Done").wait_for(timeout=120_000)
    seen = page.evaluate("window.__lab")
    assert len(seen["srcs"]) >= 3, seen["status"]  # x_T, streamed frames, the end: the particles moved
    assert "trained here" in seen["status"][-1]
    first_bytes = page.request.get(seen["srcs"][0]).body()
    last_bytes = page.request.get(seen["srcs"][-1]).body()
    assert first_bytes != last_bytes
    page.locator("#lab-metrics").get_by_text("fresh data (the floor)").wait_for()
    # scrub back to the start: the picture changes and t follows the frame
    walk = img_src(page, "lab-walk")
    page.locator("#lab-scrub input[type=range]").fill("0")
    assert wait_for_new_src(page, "lab-walk", walk) != walk
    page.locator("#lab-frame-text").get_by_text("Step 0 of 80").wait_for()
    assert page.locator("#lab-t input[type=number]").input_value() == "1000"
