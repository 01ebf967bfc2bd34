"""The reverse walk computed in the page (explainer/views/static/walk.js, ONNX Runtime Web), in a real Chromium.

The page must draw torch's own noise, and its last frame must equal the server's walk with the same seed and
settings within 2 grey levels: the shipped digits and emoji models (the tiny ones where those do not load),
DDPM and DDIM, guided and not. Where the learner chooses the server, where the sampler mode cannot run in the page,
and where the runtime fails to load, the server's walk runs and its status line says so.
"""
from __future__ import annotations

import base64
import io
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from browser import app_page, app_threads, choose, new_page, open_tab, set_number, wait_until_idle

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parent.parent
VIEW = "[data-ddpm-view=walk]"


@pytest.fixture(scope="module")
def models(tiny_ckpt, tmp_path_factory):
    """{"digits": path, "emoji": path}: the shipped models, or tiny stand-ins where they do not load."""
    from test_views_colour import make_colour_checkpoint

    from explainer.views import model_slot as views

    paths = {"digits": ROOT / "checkpoints" / "mnist-ddpm", "emoji": ROOT / "checkpoints" / "emoji-ddpm"}
    tiny = {"digits": tiny_ckpt, "emoji": make_colour_checkpoint(tmp_path_factory.mktemp("walk") / "tiny-emoji")}
    return {k: str(p if views.load_slot(str(p), device="cpu", fast=False).ok else tiny[k]) for k, p in paths.items()}


@pytest.fixture(scope="module")
def page(models):
    from explainer.views import model_slot as views

    registry = views.ModelRegistry({k: v for k, v in models.items()}, device="cpu", fast=False)
    words = {name: label for label, name in registry.choices()}
    with app_threads(), app_page(registry) as pg:
        open_tab(pg, "Reverse diffusion")
        pg.locator(VIEW).wait_for(state="attached")
        yield pg, words


def walk_state(page) -> dict:
    return page.evaluate(f"() => ({{...document.querySelector('{VIEW}').dataset}})")


def press_sample(page, timeout_ms: float = 120_000) -> dict:
    """Press Sample; wait for the walk it starts to finish (in the page) or to be handed to the server."""
    ticket = int(walk_state(page).get("ticket") or 0)
    page.locator("#rev-run").click()
    page.wait_for_function(f"() => {{ const d = document.querySelector('{VIEW}').dataset; return Number(d.ticket) > "
                           f"{ticket} && ['done', 'server'].includes(d.status); }}", timeout=timeout_ms)
    return walk_state(page)


def last_frame(page) -> np.ndarray:
    url = page.evaluate(f"() => document.querySelector('{VIEW} canvas[data-role=xt]').toDataURL('image/png')")
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as im:
        return np.asarray(im.convert("RGB"))


def settings(page, words, model: str, label: str, sampler: str, guidance: float, seed: int, steps: int, clip: bool):
    if page.locator("#model-picker input").input_value() != words[model]:
        choose(page, "model-picker", words[model])  # (its followers then reset the class, guidance and clipping)
        wait_until_idle(page)
        time.sleep(1.0)
    choose(page, "rev-class", label)
    page.locator("#rev-sampler").get_by_text(sampler, exact=True).click()
    set_number(page, "rev-guidance", guidance)
    set_number(page, "rev-steps", steps)
    set_number(page, "rev-seed", seed)
    page.locator("#rev-clip input").set_checked(clip)
    page.locator("#rev-where").get_by_text("in your browser", exact=True).click()


def test_the_page_draws_torchs_noise(page):
    pg, _ = page
    for seed, n in ((0, 784), (12345, 3072), (2**31 - 1, 4000), (7, 100)):
        drawn = pg.evaluate("([s, n]) => { const g = window.__ddpmWalk.torchGenerator(s); "
                            "return [Array.from(g.randn(n)), Array.from(g.randn(n))]; }", [seed, n])
        gen = torch.Generator().manual_seed(seed)
        for got in drawn:
            want = torch.randn(n, generator=gen).numpy()
            assert np.abs(np.array(got, dtype=np.float32) - want).max() <= 1e-6


CASES = [("digits", "3", "DDPM", 3.0, False, 11), ("digits", "7", "DDIM", 1.0, False, 12),
         ("digits", "5", "DDPM", 1.0, False, 13), ("digits", "2", "DDIM", 2.0, True, 14),
         ("emoji", None, "DDPM", 5.0, True, 15), ("emoji", None, "DDIM", 1.0, True, 16),
         ("emoji", None, "DDPM", 1.0, False, 17), ("emoji", None, "DDIM", 3.0, False, 18)]


@pytest.mark.parametrize("model,label,sampler,guidance,clip,seed", CASES)
def test_the_pages_walk_ends_on_the_servers_picture(page, models, model, label, sampler, guidance, clip, seed):
    from explainer.views import browser_walk as vb
    from explainer.views import model_slot as views
    from explainer.views import reverse as vr
    from explainer.views.inputs import class_choices

    pg, words = page
    net = views.load_slot(models[model], device="cpu", fast=False).require()
    label = label if label is not None else class_choices(net)[1 + seed % 8]  # (the emoji: a category)
    req = vr.ReverseRequest.checked(net, label, guidance, sampler, 25, "training", seed, "off", 20, clip)
    labels = ",".join(map(str, vb.network_call(net, req)["labels"]))
    wanted = f"{req.name(net)}|{seed}|{guidance:g}|{str(clip).lower()}|{labels}"
    for _ in range(3):  # (the settings the walk ran with, from its payload; a late event may undo one: again)
        settings(pg, words, model, label, sampler, guidance, seed, 25, clip)
        state = press_sample(pg)
        if state.get("walk") == wanted:
            break
    assert state["walk"] == wanted, (state, wanted)
    assert state["status"] == "done", state
    assert "computed in your browser" in pg.locator(f"{VIEW} [data-role=status]").inner_text()
    server = list(vr.reverse_walk(net, label, guidance, sampler, 25, "training", seed, "off", 20, clip))[-1]
    want = server.walks[0].frames[-1]
    want = np.repeat(want[..., None], 3, axis=2) if want.ndim == 2 else want
    got = last_frame(pg)
    assert got.shape == want.shape
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 2, f"{(diff > 2).sum()} values differ by more than 2 grey levels (max {diff.max()})"


def test_the_server_walks_when_asked_or_when_the_page_cannot(page):
    pg, words = page
    settings(pg, words, "digits", "4", "DDPM", 1.0, 3, 10, False)
    pg.locator("#rev-where").get_by_text("on the server", exact=True).click()
    for reason in ("you chose the server", "side-by-side walks run on the server"):
        if reason.startswith("side"):
            pg.locator("#rev-where").get_by_text("in your browser", exact=True).click()
            choose(pg, "rev-compare", "DDPM vs DDIM")
        state = press_sample(pg)
        assert state["status"] == "server" and state["reason"] == reason
        pg.locator("#rev-status").get_by_text("Computed on the server.").wait_for(timeout=120_000)
        assert reason in pg.locator("#rev-server-out-note").inner_text()
        assert pg.locator("#rev-server-out").is_visible() and not pg.locator("#rev-browser-out").is_visible()
    choose(pg, "rev-compare", "off")


def test_a_runtime_that_fails_to_load_hands_the_walk_to_the_server(page):
    pg, _ = page
    other = new_page(pg.context.browser, pg.url, before_goto=lambda p: p.route("**/*.wasm", lambda r: r.abort()))
    try:
        open_tab(other, "Reverse diffusion")
        set_number(other, "rev-steps", 10)
        state = press_sample(other)
        assert state["status"] == "server" and state["reason"].startswith("the browser could not run the walk")
        other.locator("#rev-status").get_by_text("Computed on the server.").wait_for(timeout=120_000)
    finally:
        other.close()


def test_the_runtime_is_served_for_a_year(page):
    pg, words = page
    settings(pg, words, "digits", "1", "DDIM", 1.0, 0, 10, False)
    assert press_sample(pg)["status"] == "done"
    urls = pg.evaluate("() => performance.getEntriesByType('resource').map(e => e.name)"
                       ".filter(u => u.includes('/static/ort/') || u.endsWith('.onnx'))")
    assert any(u.endswith("ort-wasm-simd-threaded.wasm") for u in urls) and any(u.endswith(".onnx") for u in urls)
    for url in urls:
        response = pg.request.get(url)
        assert response.ok and "max-age=31536000" in response.headers["cache-control"], url
