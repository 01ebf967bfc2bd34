"""The 2D lab in a real browser: Playwright (the Python package) driving Debian's /usr/bin/chromium.

Draws a shape on the sketchpad with the mouse, trains the network on it, runs a walk and checks that the particles
move (the streamed pictures change), then scrubs back through the recorded walk. Never skips silently in CI:
without Chromium it fails when $CI is set.
"""
from __future__ import annotations

import math
import os

import pytest

from browser import README_SHOTS, app_page, app_threads, img_src, open_tab, set_number, shoot, wait_for_new_src

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def page(tiny_ckpt):
    from explainer.views import model_slot as views

    with app_threads(), app_page(views.load_slot(str(tiny_ckpt), fast=False),
                                 viewport={"width": 1280, "height": 1000}) as pg:
        open_tab(pg, "2D lab")
        yield pg


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


def test_a_preset_walk_for_the_readme(page, tmp_path):
    """The shipped two-moons model and the exact denoiser side by side after a walk (the README's picture with
    DDPM_EXPLAINER_SCREENSHOTS=1; otherwise the screenshot goes to a temporary folder)."""
    page.locator("#lab-data input").click()
    page.get_by_role("option", name="two moons", exact=True).click()
    page.locator("#lab-field-text").get_by_text("shipped").wait_for(timeout=60_000)
    set_number(page, "lab-particles", 2000)
    set_number(page, "lab-steps", 100)
    walk = img_src(page, "lab-walk")
    page.locator("#lab-run").click()
    page.locator("#lab-status").get_by_text("Done").wait_for(timeout=120_000)
    assert wait_for_new_src(page, "lab-walk", walk) != walk
    page.locator("#lab-metrics").get_by_text("fresh data (the floor)").wait_for()
    folder = README_SHOTS if os.environ.get("DDPM_EXPLAINER_SCREENSHOTS") == "1" else tmp_path
    shoot(page, folder, "lab")
    assert (folder / "lab.png").stat().st_size > 10_000
