"""The forward views painted by the page (explainer/views/static/forward.js), in a real Chromium.

Playwright drives Debian's /usr/bin/chromium (as tests/test_browser.py does). The canvases must show the
server's pictures: x_t within one grey level of ``forward.noised`` at several t for both schedules, the curves
with their cursor pixel for pixel, the histogram's numbers as ``histogram.pixel_histogram`` computes them, and
the numbers table as ``forward.numbers_at`` writes them. Moving t (dragging, keys, typing) sends no request.
"""
from __future__ import annotations

import base64
import io
import statistics
import time

import numpy as np
import pytest
from PIL import Image

from browser import app_page as serve_page, app_threads, new_page, open_tab, set_slider as set_t, wait_for_view

pytestmark = pytest.mark.browser
FORWARD, COMPARE = "[data-ddpm-view=forward]", "[data-ddpm-view=compare]"


@pytest.fixture(scope="module")
def app_page(tiny_ckpt):
    from explainer.ui import common as ui
    from explainer.views import model_slot as views

    requests = []
    with app_threads(), serve_page(views.load_slot(str(tiny_ckpt)),
                                   before_goto=lambda pg: pg.on("request", lambda r: requests.append(r.url))) as page:
        open_tab(page, "Forward diffusion")  # (the tour is the first tab)
        wait_for_view(page, "forward", seed="0")
        yield ui, page, requests


def canvas(page, css: str) -> np.ndarray:
    """A canvas's pixels (RGB), read back losslessly as PNG."""
    url = page.evaluate("sel => document.querySelector(sel).toDataURL('image/png')", css)
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as im:
        return np.asarray(im.convert("RGB"))


def settle(requests: list, quiet: float = 1.5, timeout: float = 60.0):
    """Wait until the page has sent no request for ``quiet`` seconds (events of earlier changes have finished)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        n = len(requests)
        time.sleep(quiet)
        if len(requests) == n:
            return
    raise AssertionError("the page never stopped sending requests")


def choose(page, schedule: str):
    page.locator("#fwd-schedule").get_by_text(schedule, exact=True).click()
    wait_for_view(page, "forward", schedule=schedule)


def assert_close(page_img: np.ndarray, server: np.ndarray):
    assert page_img.shape == server.shape
    diff = np.abs(page_img.astype(int) - server.astype(int))
    assert diff.max() <= 1, f"{(diff > 1).sum()} pixels differ by more than one grey level"
    assert (diff > 0).mean() < 0.02


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_x_t_numbers_and_curves_follow_t(app_page, schedule):
    ui, page, _ = app_page
    from explainer.views import forward as vf

    choose(page, schedule)
    for t in (0, 1, 137, 500, 999, 1000):
        set_t(page, "fwd-t", t)
        wait_for_view(page, "forward", t=str(t), schedule=schedule)
        assert_close(canvas(page, "#fwd-xt"), vf.noised(ui.PHOTOS[0], t, schedule, 0))
        assert np.array_equal(canvas(page, "#fwd-curves"), vf.schedule_curves_image(t, schedule))
        cells = page.evaluate("() => Object.fromEntries([...document.querySelectorAll('#fwd-numbers td[data-key]')]"
                              ".map(td => [td.dataset.key, td.textContent]))")
        keys = {"beta": "beta_t", "alpha_bar": "alpha_bar_t", "sqrt_alpha_bar": "sqrt_alpha_bar_t",
                "one_minus": "one_minus_alpha_bar_t", "snr": "snr"}
        for name in vf.SCHEDULE_NAMES:
            summary = vf.ARTICLE_SCHEDULES[name].summary_at(t)
            for key, full in keys.items():
                assert cells[f"{name}.{key}"] == vf._fmt(summary[full]), (name, key, t)
            assert f"at t = {t}" in page.locator("#fwd-numbers").inner_text()
        assert f"{schedule} (shown)" in page.locator("#fwd-numbers").inner_text()


@pytest.mark.parametrize("schedule,t", [("linear", 0), ("linear", 40), ("cosine", 500), ("linear", 1000)])
def test_histogram_is_the_servers(app_page, schedule, t):
    ui, page, _ = app_page
    from explainer.views import histogram as vh

    choose(page, schedule)
    set_t(page, "fwd-t", t)
    wait_for_view(page, "forward", t=str(t), schedule=schedule)
    got = page.evaluate(f"() => {{ const h = document.querySelector({FORWARD!r}).__ddpm.hist; return "
                        "{...h, observed: Array.from(h.observed), expected: Array.from(h.expected)}; }")
    want = vh.pixel_histogram(ui.PHOTOS[0], t, schedule, 0)
    assert np.allclose(got["expected"], want["expected"], rtol=0, atol=1e-9)  # the same Phi-sum
    n = 256 * 256 * 3
    width = np.diff(want["edges"])
    moved = np.abs(np.array(got["observed"]) - want["observed"]) * n * width
    assert moved.sum() < 0.01 * n  # (the int16 noise moves a few values across a bin edge)
    for key in ("mean", "std", "expected_mean", "expected_std", "outside"):
        assert got[key] == pytest.approx(want[key], abs=1e-3), key
    server_img, _ = vh.pixel_histogram_view(ui.PHOTOS[0], t, schedule, 0)
    assert (canvas(page, "#fwd-hist") != server_img).any(axis=-1).mean() < 0.01
    assert f"at t = {t}" in page.locator("#fwd-hist-text").inner_text()


def test_moving_t_sends_nothing_to_the_server(app_page):
    ui, page, requests = app_page
    choose(page, "linear")
    set_t(page, "fwd-t", 500)
    wait_for_view(page, "forward", t="500")
    settle(requests)
    before, paints = len(requests), int(page.evaluate(f"document.querySelector({FORWARD!r}).dataset.paints"))
    box = page.locator("#fwd-t input[type=range]").bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.5, y)
    page.mouse.down()
    for k in range(1, 21):  # a real drag
        page.mouse.move(box["x"] + box["width"] * (0.5 - 0.3 * k / 20), y)
        time.sleep(0.02)
    page.mouse.up()
    value = int(page.locator("#fwd-t input[type=number]").input_value())
    assert 150 < value < 250
    wait_for_view(page, "forward", t=str(value))
    page.locator("#fwd-t input[type=range]").focus()
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    wait_for_view(page, "forward", t=str(value + 3))  # keyboard arrows move it too
    time.sleep(0.5)
    assert int(page.evaluate(f"document.querySelector({FORWARD!r}).dataset.paints")) > paints + 10
    assert requests[before:] == [], requests[before:]
    # each move repaints at once: the painting happens inside the slider's input event
    times = page.evaluate("""() => {
        const input = document.querySelector('#fwd-t input[type=range]'), out = [];
        for (let k = 0; k < 30; k++) {
            input.value = String(100 + 29 * k);
            const t0 = performance.now();
            input.dispatchEvent(new Event('input', {bubbles: true}));
            out.push(performance.now() - t0);
        }
        return out;
    }""")
    assert page.evaluate(f"document.querySelector({FORWARD!r}).dataset.t") == str(100 + 29 * 29)
    assert statistics.median(times) < 50, times
    assert requests[before:] == [], requests[before:]


def test_a_new_seed_or_upload_sends_new_pixels(app_page):
    ui, page, _ = app_page
    from explainer.paths import ASSETS
    from explainer.views import forward as vf

    choose(page, "cosine")
    set_t(page, "fwd-t", 300)
    seed = page.locator("#fwd-seed input")
    seed.fill("11")
    seed.press("Enter")
    wait_for_view(page, "forward", seed="11", t="300")
    assert_close(canvas(page, "#fwd-xt"), vf.noised(ui.PHOTOS[0], 300, "cosine", 11))
    digit = str(ASSETS / "digit_7.png")
    page.locator("#fwd-image input[type=file]").set_input_files(digit)
    page.wait_for_function("() => document.querySelector('#fwd-xt').width === 28")
    assert_close(canvas(page, "#fwd-xt"), vf.noised(digit, 300, "cosine", 11))


def test_compare_tab_paints_both_schedules(app_page):
    ui, first_page, _ = app_page
    from explainer.views import forward as vf

    requests = []  # a fresh page: no event of the tests above is still under way
    page = new_page(first_page.context.browser, first_page.url,
                    before_goto=lambda pg: pg.on("request", lambda r: requests.append(r.url)))
    page.get_by_role("tab", name="Compare schedules").click()
    wait_for_view(page, "compare", seed="0")
    settle(requests)  # (the page's load events and pictures)
    before = len(requests)
    for t in (0, 300, 650, 1000):
        set_t(page, "cmp-t", t)
        wait_for_view(page, "compare", t=str(t))
        for name in vf.SCHEDULE_NAMES:
            assert_close(canvas(page, f"#cmp-{name}"), vf.noised(ui.PHOTOS[0], t, name, 0))
        assert np.array_equal(canvas(page, "#cmp-curves"), vf.compare_curves_image(t))
        text = page.locator("#cmp-text").inner_text()
        assert f"at t = {t}" in text and "327 of 1000" in text and "65 of 1000" in text
        sqrt_ab = np.sqrt(float(vf.ARTICLE_SCHEDULES["cosine"].alpha_bar_at(t)))
        assert f"keeps √ᾱ_t = {sqrt_ab:.3f}" in text
    assert requests[before:] == [], requests[before:]
    page.close()


def test_the_t_slider_works_from_the_keyboard(app_page):
    """Focus the slider and press arrow keys: t moves one step per key and the painted view follows."""
    _, page, _ = app_page
    set_t(page, "fwd-t", 500)
    wait_for_view(page, "forward", t="500")
    slider = page.locator("#fwd-t input[type=range]")
    slider.focus()
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    wait_for_view(page, "forward", t="503")
    page.keyboard.press("ArrowLeft")
    wait_for_view(page, "forward", t="502")
    page.keyboard.press("End")
    wait_for_view(page, "forward", t="1000")
    assert slider.input_value() == "1000"
