"""End to end in a real browser: Playwright (the Python package) driving Debian's /usr/bin/chromium.

Moves the t slider, flips the schedule, runs a short reverse walk, and checks that the pictures change (the
forward views are painted by the page itself; tests/test_browser_forward.py checks their pixels).
Takes a screenshot of every tab. Uses the checkpoint in $DDPM_EXPLAINER_CHECKPOINT when it loads (the
real model makes the screenshots meaningful). With DDPM_EXPLAINER_SCREENSHOTS=1 and the real model they refresh
docs/screenshots/<tab>.png (for the README); otherwise they go to a temporary folder, so a test run never
changes tracked files. Never skips silently in CI: without Chromium it fails when $CI is set.
"""
from __future__ import annotations

import re
import time

import pytest

from browser import (app_page, app_slot, app_threads, assert_labels_clear, canvas_url, choose, drag_slider,
                     image_bytes, new_page, open_tab, painted_picture, require_browser, screenshot_dir,
                     shoot as shoot_into, wait_for_new_src, wait_for_view)

pytestmark = pytest.mark.browser
SHOTS = {}  # "dir": where the screenshots go (set by the page fixture)


@pytest.fixture(scope="module")
def page(tiny_ckpt, tmp_path_factory):
    require_browser()
    with app_threads():
        slot = app_slot(tiny_ckpt)
        SHOTS["dir"] = screenshot_dir(slot, tiny_ckpt, tmp_path_factory)
        with app_page(slot) as pg:
            yield pg


def shoot(page, name: str):
    shoot_into(page, SHOTS["dir"], name)


# each model tab's pictures that show its default result before any press
FIRST_LOOK = {"Reverse diffusion": ("rev-a", "rev-frame", "rev-step"),
              "Subtract all predicted noise": ("noise-triplet", "noise-grid"), "Architecture": ("arch-xt", "arch-maps")}


@pytest.mark.parametrize("tab", FIRST_LOOK)
def test_a_model_tab_opens_on_its_default_result(page, tab):
    """A fresh page, the tab opened for the first time, nothing pressed: its pictures are painted (pixels, not
    only elements). The time it took is reported, not asserted (the machine may be busy)."""
    started = time.perf_counter()
    fresh = new_page(page.context.browser, page.url)
    try:
        open_tab(fresh, tab)
        for elem_id in FIRST_LOOK[tab]:
            painted_picture(fresh, elem_id)
        print(f"\n{tab}: its default pictures painted {time.perf_counter() - started:.1f} s after the page was asked "
              "for")
    finally:
        fresh.close()


def test_the_second_walk_shows_in_a_side_by_side_mode_only(page):
    from playwright.sync_api import expect

    open_tab(page, "Reverse diffusion")
    second = [page.locator("#rev-b"), page.locator("#rev-steps-b")]
    for box in second:
        expect(box).to_be_hidden()
    choose(page, "rev-compare", "two step counts")
    expect(page.locator("#rev-steps-b")).to_be_visible()
    choose(page, "rev-compare", "off")
    for box in second:
        expect(box).to_be_hidden()


def test_the_tour_opens_on_what_the_app_is(page):
    open_tab(page, "Tour")
    page.locator("#tour-what").get_by_text("An interactive explainer of diffusion models").wait_for()
    assert painted_picture(page, "tour-strip").shape[1] > 300  # the forward process, live


def test_forward_tab_slider_and_schedule(page):
    open_tab(page, "Forward diffusion")  # (the tour is the first tab)
    wait_for_view(page, "forward", seed="0", t="500")  # x_0 and eps arrived; the page paints every t itself
    first = canvas_url(page, "fwd-xt")
    page.locator("#fwd-t input[type=range]").fill("900")
    wait_for_view(page, "forward", t="900")
    after_slider = canvas_url(page, "fwd-xt")
    assert after_slider != first
    page.locator("#fwd-numbers").get_by_text("at t = 900").wait_for()
    page.locator("#fwd-schedule").get_by_text("cosine").click()
    wait_for_view(page, "forward", schedule="cosine")
    assert canvas_url(page, "fwd-xt") != after_slider
    page.get_by_text("cosine (shown)").first.wait_for()
    hist = canvas_url(page, "fwd-hist")  # the pixel histogram follows the slider too
    page.locator("#fwd-t input[type=range]").fill("1000")
    wait_for_view(page, "forward", t="1000")
    assert canvas_url(page, "fwd-hist") != hist
    page.locator("#fwd-hist-text").get_by_text("at t = 1000").wait_for()
    page.locator("[data-ddpm-view=strips][data-drawn]").wait_for(state="attached")  # the strips, drawn in the page
    curves = canvas_url(page, "fwd-curves")
    drag_slider(page, "fwd-t", 0.3)  # a real drag: picture, numbers and curves follow
    value = int(page.locator("#fwd-t input[type=number]").input_value())
    assert 200 < value < 400
    wait_for_view(page, "forward", t=str(value))
    assert canvas_url(page, "fwd-curves") != curves
    page.get_by_text(f"at t = {value}").first.wait_for()
    assert_labels_clear(page)
    shoot(page, "forward")


def test_compare_tab(page):
    open_tab(page, "Compare schedules")
    wait_for_view(page, "compare", seed="0", t="300")
    lin, cos = canvas_url(page, "cmp-linear"), canvas_url(page, "cmp-cosine")
    page.locator("#cmp-t input[type=range]").fill("600")
    wait_for_view(page, "compare", t="600")
    assert canvas_url(page, "cmp-linear") != lin and canvas_url(page, "cmp-cosine") != cos
    shoot(page, "compare")


def test_reverse_walk_runs_streams_and_scrubs(page):
    open_tab(page, "Reverse diffusion")
    steps = page.locator("#rev-steps input[type=number]")
    steps.fill("300")  # long enough (about a second or more) that several streamed frames get painted
    steps.press("Enter")
    # record every status line and picture the walk shows while it streams (a poll could miss them)
    page.evaluate("""() => {
        window.__rev = {status: [], srcs: []};
        const push = (list, v) => { if (v && list[list.length - 1] !== v) list.push(v); };
        const note = () => {  // observe the whole page: Gradio may re-create the panel's elements
            const img = document.querySelector('#rev-a img');
            push(window.__rev.srcs, img && img.src);
            const status = document.querySelector('#rev-status');
            push(window.__rev.status, status && status.textContent.trim());
        };
        new MutationObserver(note).observe(document.body, {subtree: true, childList: true, characterData: true,
                                                  attributes: true, attributeFilter: ['src']});
    }""")
    page.locator("#rev-where").get_by_text("on the server", exact=True).click()  # the server's walk
    page.locator("#rev-run").click()
    page.locator("#rev-status").get_by_text("Done").wait_for(timeout=120_000)
    seen = page.evaluate("window.__rev")
    progress = [s for s in seen["status"] if re.search(r"step \d+/\d+", s) or "pure noise" in s]
    assert progress and seen["status"][-1].startswith("Done"), seen["status"]  # it streamed, then finished
    assert seen["srcs"], "the walk panel never showed a picture"
    frame = wait_for_new_src(page, "rev-frame", None)  # the scrubber jumps to the last frame
    step = wait_for_new_src(page, "rev-step", None)  # the last step, taken apart
    page.locator("#rev-scrub input[type=range]").fill("0")
    assert image_bytes(page, wait_for_new_src(page, "rev-frame", frame)) != image_bytes(page, frame)
    assert wait_for_new_src(page, "rev-step", step) != step
    page.locator("#rev-step-text").get_by_text("step 1 of 300").wait_for()
    assert_labels_clear(page)
    shoot(page, "reverse")


def test_two_classes_from_one_noise_and_when_the_picture_is_decided(page):
    """The two-condition mode: its second class shows, the walk runs on the server, and the curve and its words
    appear under the two walks; back to "off", they go."""
    from playwright.sync_api import expect

    open_tab(page, "Reverse diffusion")
    steps = page.locator("#rev-steps input[type=number]")
    steps.fill("20")
    steps.press("Enter")
    expect(page.locator("#rev-class-b")).to_be_hidden()
    choose(page, "rev-compare", "two classes")
    expect(page.locator("#rev-class-b")).to_be_visible()
    expect(page.locator("#rev-guidance-b")).to_be_hidden()
    page.locator("#rev-run").click()
    page.locator("#rev-status").get_by_text("Done").wait_for(timeout=120_000)
    text = page.locator("#rev-decided-text")
    text.get_by_text("start from the same noise").wait_for(timeout=60_000)
    assert "digit 3, w = " in text.inner_text() and "digit 8, w = " in text.inner_text()
    expect(page.locator("#rev-decided")).to_be_visible()
    choose(page, "rev-compare", "two guidance scales")
    expect(page.locator("#rev-guidance-b")).to_be_visible()
    choose(page, "rev-compare", "off")
    expect(page.locator("#rev-decided")).to_be_hidden()
    expect(page.locator("#rev-decided-text")).to_be_hidden()


def test_a_heun_walk_counts_its_network_calls(page):
    open_tab(page, "Reverse diffusion")
    choose(page, "rev-compare", "off")
    steps = page.locator("#rev-steps input[type=number]")
    steps.fill("10")
    steps.press("Enter")
    page.locator("#rev-sampler").get_by_text("Heun", exact=True).click()
    page.locator("#rev-run").click()
    page.locator("#rev-status").get_by_text("19 network calls").first.wait_for(timeout=120_000)
    # quality against network calls: the walk marked on the model's measured chart, or, for a model without
    # measurements, how to make them
    page.locator("#rev-quality-text").get_by_text(
        re.compile("Your walk: Heun, 19 network calls|evaluate-samplers")).first.wait_for()
    page.locator("#rev-step-text").get_by_text("Euler's step alone").wait_for()  # the last step, taken apart
    page.locator("#rev-sampler").get_by_text("DDPM", exact=True).click()


def test_noise_removal_tab(page):
    open_tab(page, "Subtract all predicted noise")
    page.locator("#noise-run").click()
    wait_for_new_src(page, "noise-grid", None)
    triplet = wait_for_new_src(page, "noise-triplet", None)
    page.locator("#noise-index input[type=range]").fill("40")
    assert wait_for_new_src(page, "noise-triplet", triplet) != triplet
    assert_labels_clear(page)
    shoot(page, "noise")


def test_architecture_tab(page):
    open_tab(page, "Architecture")
    page.locator("#arch-cond").get_by_text("sinusoidal").wait_for()
    page.locator("#arch-run").click()
    wait_for_new_src(page, "arch-xt", None)
    wait_for_new_src(page, "arch-maps", None)
    assert_labels_clear(page)
    shoot(page, "architecture")


def test_math_tab_renders_latex(page):
    open_tab(page, "Math")
    page.locator("#math .katex").first.wait_for()
    assert page.locator("#math .katex").count() > 10
    # every formula parsed: KaTeX paints unknown commands red and leaves a formula it cannot parse as "$...$" text
    assert page.locator("#math .katex [style*='rgb(204, 0, 0)']").count() == 0
    assert "$" not in page.locator("#math").inner_text()
    shoot(page, "math")
