"""The forward tab's strips drawn in the page (explainer/views/static/strips.js), in a real Chromium.

The closed-form strip must equal the server's frames within one grey level; the Markov chain, drawn with the
page's own noise, must have the closed form's statistics: at several t, the per-pixel mean sqrt(abar_t) x_0 and
variance 1 - abar_t within the sampling error. A schedule flip redraws both without a server call.
"""
from __future__ import annotations

import base64
import io
import time

import numpy as np
import pytest
from PIL import Image

from browser import app_page, app_threads, open_tab

pytestmark = pytest.mark.browser
VIEW = "[data-ddpm-view=strips]"


@pytest.fixture(scope="module")
def page(tiny_ckpt):
    from explainer.views import model_slot as views

    requests = []
    with app_threads(), app_page(views.load_slot(str(tiny_ckpt)),
                                 before_goto=lambda pg: pg.on("request", lambda r: requests.append(r.url))) as pg:
        open_tab(pg, "Forward diffusion")
        pg.locator(f"{VIEW}[data-drawn]").wait_for(state="attached")
        yield pg, requests


def frame(page, role: str, t: int) -> np.ndarray:
    url = page.evaluate(f"() => document.querySelector('{VIEW} [data-role={role}] canvas[data-t=\"{t}\"]')"
                        ".toDataURL('image/png')")
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as im:
        return np.asarray(im.convert("RGB"))


def test_the_closed_form_strip_is_the_servers(page):
    from explainer.ui.common import PHOTOS
    from explainer.views import forward as vf
    from explainer.views import strips

    pg, _ = page
    x0 = vf.prepare_image(PHOTOS[0], max_side=vf.STRIP_SIDE)
    eps = vf.noise_like(x0, 0)
    for t in strips.strip_props()["closed_ts"]:
        want = vf.closed_form_uint8(x0, eps, float(vf.ARTICLE_SCHEDULES["linear"].alpha_bar_at(t)))
        got = frame(pg, "closed", t)
        assert got.shape == want.shape and np.abs(got.astype(int) - want.astype(int)).max() <= 1, t


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_the_chain_has_the_closed_forms_statistics(page, schedule):
    from explainer.views import forward as vf

    pg, _ = page
    n = 96 * 96 * 3
    x0 = np.where(np.arange(n) % 2 == 0, -0.8, 0.6)
    keep = [0, 100, 300, 500, 1000]
    betas = vf.ARTICLE_SCHEDULES[schedule].betas.tolist()
    frames = pg.evaluate("([x0, betas, keep]) => { const f = window.__ddpmStrips.chain(x0, betas, 7, keep); "
                         "return Object.fromEntries(keep.map(t => [t, Array.from(f[t])])); }", [x0.tolist(), betas, keep])
    for t in keep:
        ab = float(vf.ARTICLE_SCHEDULES[schedule].alpha_bar_at(t))
        x = np.array(frames[str(t)])
        for value in (-0.8, 0.6):
            v = x[x0 == value]
            mean, var = np.sqrt(ab) * value, 1.0 - ab
            if t == 0:
                assert np.allclose(v, value, atol=1e-6)
                continue
            assert abs(v.mean() - mean) <= 5 * np.sqrt(var / len(v)), (t, value)
            assert abs(v.var() - var) <= 5 * var * np.sqrt(2 / (len(v) - 1)), (t, value)
    assert abs(np.corrcoef(np.array(frames["500"])[:-2:2], np.array(frames["500"])[2::2])[0, 1]) < 0.05


def test_a_schedule_flip_redraws_without_the_server(page):
    pg, requests = page
    before = pg.evaluate(f"() => document.querySelector('{VIEW}').dataset.drawn")
    time.sleep(1.0)
    sent = len(requests)
    chain = frame(pg, "chain", 500)
    pg.locator("#fwd-schedule").get_by_text("cosine", exact=True).click()
    pg.wait_for_function(f"() => document.querySelector('{VIEW}').dataset.schedule === 'cosine' && "
                         f"document.querySelector('{VIEW}').dataset.drawn !== '{before}'")
    assert not np.array_equal(frame(pg, "chain", 500), chain)
    assert not [u for u in requests[sent:] if "strip" in u]
    pg.locator("#fwd-schedule").get_by_text("linear", exact=True).click()
