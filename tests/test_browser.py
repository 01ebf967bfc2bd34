"""End to end in a real browser: Playwright (the Python package) driving Debian's /usr/bin/chromium.

Moves the t slider, flips the schedule, runs a short reverse walk, and checks that the pictures change (the
forward views are painted by the page itself; tests/test_browser_forward.py checks their pixels).
Takes a screenshot of every tab. Uses the checkpoint in $DDPM_EXPLAINER_CHECKPOINT when it loads (the
real model makes the screenshots meaningful). With DDPM_EXPLAINER_SCREENSHOTS=1 and the real model they refresh
docs/screenshots/<tab>.png (for the README); otherwise they go to a temporary folder, so a test run never
changes tracked files. Never skips silently in CI: without Chromium it fails when $CI is set.
"""
from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
ROOT = Path(__file__).resolve().parent.parent
SHOTS = {"dir": ROOT / "docs" / "screenshots"}  # set by the page fixture


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"browser test cannot run in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def page(tiny_ckpt, tmp_path_factory):
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
    slot = views.load_slot(os.environ.get(views.CHECKPOINT_ENV) or None)
    if not slot.ok:
        slot = views.load_slot(str(tiny_ckpt))
    # README's screenshots are refreshed only on request and with the real model; otherwise a test run
    # leaves the tracked files alone (they go to a temporary folder)
    refresh = os.environ.get("DDPM_EXPLAINER_SCREENSHOTS") == "1" and slot.path != str(tiny_ckpt)
    SHOTS["dir"] = ROOT / "docs" / "screenshots" if refresh else tmp_path_factory.mktemp("screenshots")
    demo = app.build_app(slot)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, url, _ = app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        pg = browser.new_page(viewport={"width": 1280, "height": 900})
        pg.set_default_timeout(60_000)
        pg.goto(url)
        yield pg
        browser.close()
    demo.close()
    torch.set_num_threads(threads)


def img_src(page, elem_id: str) -> str | None:
    loc = page.locator(f"#{elem_id} img")
    return loc.first.get_attribute("src") if loc.count() else None


def wait_for_new_src(page, elem_id: str, old: str | None, timeout: float = 60.0) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        src = img_src(page, elem_id)
        if src and src != old:
            return src
        time.sleep(0.05)
    raise AssertionError(f"#{elem_id} never showed a new image (still {old!r})")


def image_bytes(page, src: str) -> bytes:
    return page.request.get(src).body()


def drag_slider(page, elem_id: str, fraction: float):
    """Drag a slider's thumb with the mouse (fires .input/.change while moving and .release at the end)."""
    box = page.locator(f"#{elem_id} input[type=range]").bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.5, y)
    page.mouse.down()
    for k in range(1, 6):
        page.mouse.move(box["x"] + box["width"] * (0.5 + (fraction - 0.5) * k / 5), y)
        time.sleep(0.03)
    page.mouse.up()


def open_tab(page, name: str):
    page.get_by_role("tab", name=name).click()


def assert_labels_clear(page):
    """No picture on the open tab lies under its own floating label (Gradio puts labels over the image)."""
    hidden = page.evaluate("""() => [...document.querySelectorAll('.block')].flatMap(block => {
        const label = block.querySelector(':scope > label.float'), img = block.querySelector('.image-container img');
        if (!label || !img || !img.offsetParent) return [];
        const l = label.getBoundingClientRect(), i = img.getBoundingClientRect();
        const overlap = l.right > i.left && l.left < i.right && l.bottom > i.top + 1 && l.top < i.bottom;
        return overlap ? [label.textContent.trim()] : [];
    })""")
    assert not hidden, f"labels drawn over their pictures: {hidden}"


def shoot(page, name: str):
    SHOTS["dir"].mkdir(parents=True, exist_ok=True)
    # wait for pending events (a visible progress tracker) to finish, then let plots and images settle
    page.wait_for_function("""() => ![...document.querySelectorAll('[data-testid=status-tracker]')]
        .some(e => !e.classList.contains('hide') && e.getBoundingClientRect().height > 0)""")
    time.sleep(0.3)
    page.screenshot(path=str(SHOTS["dir"] / f"{name}.png"), full_page=True)


def view_state(page, mode: str) -> dict:
    """The data attributes of a view the page paints itself (explainer/views/static/forward.js)."""
    return page.evaluate(f"() => {{ const v = document.querySelector('[data-ddpm-view={mode}]'); "
                         "return v ? {...v.dataset} : {}; }")


def wait_for_view(page, mode: str, **data):
    """Wait until the painted view's data attributes (t, schedule, seed) hold ``data``."""
    cond = " && ".join(f"v.dataset.{k} === {str(v)!r}" for k, v in data.items()) or "true"
    page.wait_for_function(f"() => {{ const v = document.querySelector('[data-ddpm-view={mode}]'); "
                           f"return v && {cond}; }}")


def canvas_url(page, elem_id: str) -> str:
    return page.evaluate("id => document.getElementById(id).toDataURL('image/png')", elem_id)


def test_forward_tab_slider_and_schedule(page):
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
    wait_for_new_src(page, "fwd-strip10", None)
    curves = canvas_url(page, "fwd-curves")
    drag_slider(page, "fwd-t", 0.3)  # a real drag: picture, numbers and curves follow
    value = int(page.locator("#fwd-t input[type=number]").input_value())
    assert 200 < value < 400
    wait_for_view(page, "forward", t=str(value))
    assert canvas_url(page, "fwd-curves") != curves
    page.get_by_text(f"at t = {value}").first.wait_for()
    wait_for_new_src(page, "fwd-strip1000", None)
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
