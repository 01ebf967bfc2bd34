"""The browser tests' shared harness: Playwright (the Python package) driving Debian's /usr/bin/chromium.

Not a test module: tests/test_browser*.py import it (pytest puts tests/ on sys.path, as tests/ has no
__init__.py). ``app_page`` serves an app on a free port and yields a Chromium page that shows it; the helpers
wait for pictures, drag sliders, open tabs, read the views the page paints itself and take screenshots.
Without Chromium or Playwright the tests skip, except in CI ($CI set), where they fail.
"""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import pytest

from conftest import free_port

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
ROOT = Path(__file__).resolve().parent.parent
README_SHOTS = ROOT / "docs" / "screenshots"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 60_000


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"browser test cannot run in CI: {reason}")
    pytest.skip(reason)


def require_browser():
    """Playwright's ``sync_playwright``, or skip (fail in CI) where Chromium or the package is missing."""
    if not Path(CHROMIUM).exists():
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright Python package is missing (pip install playwright)")
    return sync_playwright


@contextlib.contextmanager
def app_threads():
    """Torch's threads as the app sets them (``configure_threads``) for the block, then as they were."""
    import torch

    from explainer.server.launch import configure_threads

    threads = torch.get_num_threads()
    configure_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def app_slot(tiny_ckpt, shipped: bool = True, **kwargs):
    """The model slot of $DDPM_EXPLAINER_CHECKPOINT when it is set and loads, else (``shipped``) of the shipped
    checkpoint when it loads, else of the tiny test checkpoint. ``kwargs`` go to ``load_slot``."""
    from explainer.views import model_slot as views

    path = os.environ.get(views.CHECKPOINT_ENV) or None
    if path is not None or shipped:
        slot = views.load_slot(path, **kwargs)
        if slot.ok:
            return slot
    return views.load_slot(str(tiny_ckpt), **kwargs)


def screenshot_dir(slot, tiny_ckpt, tmp_path_factory) -> Path:
    """docs/screenshots with DDPM_EXPLAINER_SCREENSHOTS=1 and the real model (the README's pictures), else a
    temporary folder: a test run leaves the tracked files alone."""
    refresh = os.environ.get("DDPM_EXPLAINER_SCREENSHOTS") == "1" and slot.path != str(tiny_ckpt)
    return README_SHOTS if refresh else tmp_path_factory.mktemp("screenshots")


@contextlib.contextmanager
def served(models):
    """Serve ``build_app(models)`` as ``python app.py`` does, on a free port; yields its URL."""
    from explainer.server.launch import launch
    from explainer.ui import CSS, build_app

    demo = build_app(models)
    _, url, _ = launch(demo, css=CSS, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                           quiet=True)
    try:
        yield url
    finally:
        demo.close()


@contextlib.contextmanager
def chromium():
    """A headless Chromium (Playwright's Browser)."""
    sync_playwright = require_browser()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser, url: str, viewport: dict = DESKTOP, before_goto=None):
    """A page in a fresh context showing ``url``; ``before_goto(page)`` runs first (to listen to requests)."""
    page = browser.new_page(viewport=viewport)
    page.set_default_timeout(TIMEOUT_MS)
    if before_goto is not None:
        before_goto(page)
    page.goto(url)
    return page


@contextlib.contextmanager
def app_page(models, viewport: dict = DESKTOP, before_goto=None):
    """Serve the app of ``models`` (a model slot or registry) and yield a Chromium page that shows it."""
    require_browser()  # (before any server starts)
    with served(models) as url, chromium() as browser:
        yield new_page(browser, url, viewport, before_goto)


# ---------------------------------------------------------------- helpers


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


def painted_picture(page, elem_id: str, timeout: float = 120.0):
    """The pixels the page shows in the picture ``#elem_id`` (a screenshot of its img element), once it shows a
    picture that is not blank (more than one shade); an AssertionError after ``timeout`` seconds."""
    import io

    import numpy as np
    from PIL import Image

    deadline = time.time() + timeout
    while True:
        img = page.locator(f"#{elem_id} img").first
        if img.count() and img.is_visible() and img.evaluate("e => e.complete && e.naturalWidth > 0"):
            with Image.open(io.BytesIO(img.screenshot())) as im:
                pixels = np.asarray(im.convert("RGB"))
            if pixels.size and pixels.std() > 5:
                return pixels
        if time.time() > deadline:
            raise AssertionError(f"#{elem_id} shows no picture after {timeout:.0f} s")
        time.sleep(0.1)


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


def set_slider(page, elem_id: str, value):
    """Move a slider to ``value`` (its range input's own input event; the page-painted views follow it)."""
    page.locator(f"#{elem_id} input[type=range]").fill(str(value))


def set_number(page, elem_id: str, value) -> None:
    """Type ``value`` into a number box (or a slider's number box) and press Enter."""
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def choose(page, elem_id: str, option: str):
    """Pick ``option`` in a Gradio dropdown."""
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def open_tab(page, name: str):
    """Open a tab by its label (from the "More tabs" menu where a narrow page has moved the tab there)."""
    page.locator("#tabs [role=tab]").first.wait_for()  # (the page has loaded)
    tab = page.get_by_role("tab", name=name, exact=True)
    if tab.count() and tab.is_visible():
        tab.click()
    else:
        page.locator("#tabs .overflow-menu > button").click()
        page.locator("#tabs .overflow-dropdown button").get_by_text(name, exact=True).click()
    page.get_by_role("tab", name=name, exact=True).and_(page.locator("[aria-selected=true]")).wait_for()


def wait_until_idle(page, timeout_ms: float = TIMEOUT_MS):
    page.wait_for_function("""() => ![...document.querySelectorAll('[data-testid=status-tracker]')]
        .some(e => !e.classList.contains('hide') && e.getBoundingClientRect().height > 0)""", timeout=timeout_ms)


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


def assert_labels_uncovered(page):
    """No label's text on the open tab lies under another element of its block (a toolbar, a button, a picture)."""
    covered = page.evaluate("""() => [...document.querySelectorAll('.block label, .block [data-testid=block-info]')]
        .filter(label => label.checkVisibility()).flatMap(label => {
            const range = document.createRange();
            range.selectNodeContents(label);
            const lines = [...range.getClientRects()].filter(r => r.width > 0 && r.height > 0);
            const over = [...label.closest('.block').querySelectorAll('button, .icon-button-wrapper, img, canvas')]
                .filter(el => !label.contains(el) && !el.contains(label) && el.checkVisibility())
                .find(el => {
                    const o = el.getBoundingClientRect();
                    return lines.some(l => l.right > o.left + 1 && l.left < o.right - 1 && l.bottom > o.top + 1
                                           && l.top < o.bottom - 1);
                });
            return over ? [`${label.textContent.trim().slice(0, 60)} (under ${over.tagName.toLowerCase()}.`
                           + `${String(over.className).split(' ')[0]})`] : [];
        })""")
    assert not covered, f"labels hidden by other elements: {covered}"


def load_images(page):
    """Load the pictures that the page loads only when scrolled to (a full-page screenshot does not scroll)."""
    page.evaluate("() => document.querySelectorAll('img[loading=lazy]').forEach(img => { img.loading = 'eager'; })")
    page.wait_for_function("() => [...document.images].every(img => img.complete || !img.checkVisibility())")


def shoot(page, folder: Path, name: str):
    """A full-page screenshot ``folder/name.png`` once pending events have finished and pictures settled."""
    folder.mkdir(parents=True, exist_ok=True)
    wait_until_idle(page)
    load_images(page)
    time.sleep(0.3)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def view_state(page, mode: str) -> dict:
    """The data attributes of a view the page paints itself (explainer/views/static/forward.js)."""
    return page.evaluate(f"() => {{ const v = document.querySelector('[data-ddpm-view={mode}]'); "
                         "return v ? {...v.dataset} : {}; }")


def wait_for_view(page, mode: str, **data):
    """Wait until the painted view's data attributes (t, schedule, seed, size) hold ``data``."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    cond = " && ".join(f"v.dataset.{k} === {str(v)!r}" for k, v in data.items()) or "true"
    try:
        page.wait_for_function(f"() => {{ const v = document.querySelector('[data-ddpm-view={mode}]'); "
                               f"return v && {cond}; }}")
    except PlaywrightTimeout:
        raise AssertionError(f"the {mode} view shows {view_state(page, mode)}, not {data}") from None


def canvas_url(page, elem_id: str) -> str:
    return page.evaluate("id => document.getElementById(id).toDataURL('image/png')", elem_id)
