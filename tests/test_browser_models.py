"""The model picker in a real browser: switch to a colour model, see colour pictures on every model tab.

Playwright (the Python package) drives Debian's /usr/bin/chromium (tests/browser.py). The app offers a tiny
digit model (the default), a tiny colour model with the emoji classes, and a damaged checkpoint.
"""
from __future__ import annotations

import io
import json
import shutil
import time

import numpy as np
import pytest
from PIL import Image

from browser import (app_page, app_threads, choose, img_src, open_tab, painted_picture, require_browser,
                     wait_for_new_src)
from test_views_colour import is_colour, make_colour_checkpoint

pytestmark = pytest.mark.browser
DIGITS, EMOJI = "handwritten digits, 28x28", "emoji, 32x32 colour (tiny-emoji)"  # the menu's words for the models


@pytest.fixture(scope="module")
def page(tiny_ckpt, tmp_path_factory):
    require_browser()
    from explainer.views import model_slot as views

    root = tmp_path_factory.mktemp("browser-models")
    colour = make_colour_checkpoint(root / "tiny-emoji")
    config = json.loads((colour / "config.json").read_text())
    (colour / "config.json").write_text(json.dumps(config | {"recommended_clip_x0": True,  # as the emoji card
                                                             "recommended_guidance": 5.0}))
    damaged = root / "damaged"
    shutil.copytree(colour, damaged)
    (damaged / "model.safetensors").write_bytes(b"not safetensors")
    registry = views.ModelRegistry({"tiny": str(tiny_ckpt), "tiny-emoji": str(colour), "damaged": str(damaged)},
                                   device="cpu", fast=False)
    with app_threads(), app_page(registry) as pg:
        yield pg


def wait_for_colour(page, elem_id: str, timeout: float = 120.0) -> None:
    """Wait until the picture ``#elem_id`` is painted in colour."""
    deadline = time.time() + timeout
    while not is_colour(painted_picture(page, elem_id, timeout)):
        assert time.time() < deadline, f"#{elem_id} never showed a colour picture"
        time.sleep(0.2)


def picture(page, src: str) -> np.ndarray:
    with Image.open(io.BytesIO(page.request.get(src).body())) as im:
        return np.asarray(im.convert("RGB"))


def test_switch_to_the_colour_model_and_walk(page):
    from playwright.sync_api import expect
    open_tab(page, "Reverse diffusion")
    page.locator("#reverse-notice").get_by_text("28x28x1").wait_for()
    gray = painted_picture(page, "rev-frame")  # the default walk, before any press
    assert not is_colour(gray)
    choose(page, "model-picker", EMOJI)
    page.locator("#reverse-notice").get_by_text("32x32x3").wait_for()
    for elem_id in ("rev-a", "rev-frame", "rev-step"):  # the default walk follows the model
        wait_for_colour(page, elem_id)
    page.locator("#rev-class").get_by_text("class", exact=True).wait_for()  # the label no longer says "digit"
    assert page.locator("#rev-class input").input_value() == "Smileys & Emotion"
    expect(page.locator("#rev-clip input")).to_be_checked()  # its card recommends clipping x0_hat
    expect(page.locator("#rev-guidance input[type=number]")).to_have_value("5")  # and w = 5
    choose(page, "rev-class", "Animals & Nature")
    steps = page.locator("#rev-steps input[type=number]")
    steps.fill("20")
    steps.press("Enter")
    old = img_src(page, "rev-a")
    page.locator("#rev-where").get_by_text("on the server", exact=True).click()  # the server's walk
    page.locator("#rev-run").click()
    page.locator("#rev-status").get_by_text("Done").wait_for(timeout=120_000)
    src = wait_for_new_src(page, "rev-a", old)
    assert is_colour(picture(page, src)), "the walk of the colour model is not in colour"
    assert is_colour(picture(page, wait_for_new_src(page, "rev-frame", None)))
    assert is_colour(picture(page, wait_for_new_src(page, "rev-step", None)))
    page.locator("#rev-step-text").get_by_text("clipped to [−1, 1]").first.wait_for()  # the step, as it was taken


def test_noise_removal_offers_held_out_emoji(page):
    open_tab(page, "Subtract all predicted noise")
    page.locator("#noise-source").get_by_text("real image").wait_for()
    wait_for_colour(page, "noise-triplet")  # the default result, before any press
    assert page.locator("#noise-model-picker input").input_value() == EMOJI  # the tab's menu followed the switch
    page.get_by_text("held-out emoji").first.wait_for()
    assert not page.get_by_text("held-out digits").first.is_visible()
    page.locator("#noise-run").click()
    triplet = wait_for_new_src(page, "noise-triplet", None)
    assert is_colour(picture(page, triplet))
    page.locator("#noise-text").get_by_text("one scale").wait_for()


def test_architecture_shows_a_colour_x_t(page):
    open_tab(page, "Architecture")
    page.locator("#arch-cond").get_by_text("0..8").wait_for()  # the colour model's nine classes
    wait_for_colour(page, "arch-xt")  # the default x_t, before any press
    assert page.locator("#arch-model-picker input").input_value() == EMOJI
    page.locator("#arch-run").click()
    assert is_colour(picture(page, wait_for_new_src(page, "arch-xt", None)))
    wait_for_new_src(page, "arch-maps", None)


def test_a_damaged_model_says_so_and_the_first_still_works(page):
    open_tab(page, "Reverse diffusion")
    choose(page, "model-picker", "emoji, 32x32 colour (damaged)")
    page.locator("#reverse-notice").get_by_text("The model tabs are unavailable with").wait_for()
    page.locator("#rev-run").click()
    page.get_by_text("cannot be read").first.wait_for()
    choose(page, "model-picker", DIGITS)
    page.locator("#reverse-notice").get_by_text("28x28x1").wait_for()
    assert page.locator("#rev-class input").input_value() == "3"
    old = img_src(page, "rev-frame")
    page.locator("#rev-where").get_by_text("on the server", exact=True).click()  # the server's walk
    page.locator("#rev-run").click()
    last = wait_for_new_src(page, "rev-frame", old, timeout=120)  # the scrubber shows the finished walk's last frame
    assert picture(page, last).shape[0] == 28 * 6 + 14 + 16 and not is_colour(picture(page, last))
