"""What the page gets to paint the forward views itself (explainer/views/client.py), against the server's views.

The page's arithmetic is repeated in numpy by ``client.client_x_t``; the browser itself is checked in
tests/test_browser_forward.py.
"""
from __future__ import annotations

import base64
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from explainer.paths import ASSETS
from explainer.views import client as vc
from explainer.views import forward as vf
from explainer.views import histogram as vh

PHOTO = str(ASSETS / "astronaut.jpg")
DIGIT = str(ASSETS / "digit_3.png")


def png(data_url: str) -> np.ndarray:
    head, b64 = data_url.split(",", 1)
    assert head == "data:image/png;base64"
    with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
        return np.asarray(im)


@pytest.mark.parametrize("image", [PHOTO, DIGIT])
def test_payload_holds_x0_exactly_and_the_seeds_noise(image):
    payload = vc.pixels_payload(image, 7)
    x0, eps = vc.decode_pixels(payload)
    ref_x0 = vf.prepare_image(image)
    ref_eps = vf.noise_like(ref_x0, 7)
    assert (payload["height"], payload["width"], 3) == ref_x0.shape and payload["seed"] == 7
    assert np.array_equal(x0, ref_x0)  # the 8-bit levels give x_0 back bit for bit
    inside = np.abs(ref_eps) < vc.EPS_LIMIT
    assert inside.mean() > 0.9999
    assert np.abs(eps - ref_eps)[inside].max() <= 0.5 / vc.EPS_SCALE + 1e-7  # int16 steps of 1/4096


@pytest.mark.parametrize("schedule", vf.SCHEDULE_NAMES)
@pytest.mark.parametrize("t", [0, 1, 2, 100, 250, 500, 750, 999, 1000])
def test_page_arithmetic_gives_the_servers_x_t(schedule, t):
    """x_t from the payload is the server's x_t (forward.noised) within one grey level, nearly everywhere equal."""
    ab = float(vf.ARTICLE_SCHEDULES[schedule].alpha_bar_at(t))
    for image in (PHOTO, DIGIT):
        page = vc.client_x_t(vc.pixels_payload(image, 0), ab).astype(int)
        server = vf.noised(image, t, schedule, 0).astype(int)
        assert page.shape == server.shape
        assert np.abs(page - server).max() <= 1
        assert (page != server).mean() < 0.02


def test_seeds_and_images_give_their_own_payload_and_repeats_are_cached():
    a = vc.pixels_payload(PHOTO, 0)
    assert len(json.dumps(a)) < 500  # the session keeps this dict; the pixels travel as a file
    assert vc.pixels_payload(PHOTO, 0) == a
    data = lambda p: open(p["file"]["path"], "rb").read()  # noqa: E731
    b = vc.pixels_payload(PHOTO, 1)
    n = 256 * 256 * 3
    assert data(b)[:n] == data(a)[:n] and data(b)[n:] != data(a)[n:]  # the same x_0, another eps
    assert vc.pixels_payload(DIGIT, 0)["file"]["path"] != a["file"]["path"]


def test_payload_files_are_bounded(tmp_path):
    for seed in range(vc.PAYLOAD_FILES + 8):
        p = vc.pixels_payload(DIGIT, seed, folder=tmp_path)
        assert open(p["file"]["path"], "rb").read()  # the newest is always there
    assert len(list(tmp_path.glob("*.bin"))) <= vc.PAYLOAD_FILES
    assert not list(tmp_path.glob("*.tmp"))


def test_folders_of_processes_that_are_gone_are_removed(tmp_path):
    gone, alive = tmp_path / "ddpm-explainer-pixels-99999999", tmp_path / f"ddpm-explainer-pixels-{os.getpid()}"
    for folder in (gone, alive):
        folder.mkdir()
        (folder / "pixels-x.bin").write_bytes(b"x")
    vc.remove_stale_pixel_dirs(tmp_path)
    assert not gone.exists() and alive.exists()


@pytest.mark.parametrize("kwargs,words", [(dict(seed=-1), "seed"), (dict(seed="x"), "seed must be a number"),
                                          (dict(image=None), "no image given")])
def test_payload_refuses_bad_inputs(kwargs, words):
    with pytest.raises(ValueError, match=words):
        vc.pixels_payload(**(dict(image=PHOTO, seed=0) | kwargs))


def test_tables_are_the_schedules_float64_values():
    tables = vc.schedule_tables()
    assert tables["T"] == vf.T and tables["names"] == list(vf.SCHEDULE_NAMES)
    for name in vf.SCHEDULE_NAMES:
        s, got = vf.ARTICLE_SCHEDULES[name], tables["schedules"][name]
        betas, abar = vc.from_b64(got["betas"], "<f8"), vc.from_b64(got["alpha_bars"], "<f8")
        assert np.array_equal(betas, s.betas) and np.array_equal(abar, s.alpha_bars)
        assert np.array_equal(vc.from_b64(got["log_snr"], "<f8"), s.log_snr)
        assert got["near_noise"] == s.steps_near_pure_noise(vf.NEAR_NOISE)
        # what the page derives is one IEEE operation each, so it equals the schedule's own numbers exactly
        for t in (1, 2, 300, 999, 1000):
            want = s.summary_at(t)
            ab = abar[t - 1]
            assert betas[t - 1] == want["beta_t"] and ab == want["alpha_bar_t"]
            assert float(np.sqrt(ab)) == want["sqrt_alpha_bar_t"] and 1 - ab == want["one_minus_alpha_bar_t"]
            assert ab / (1 - ab) == want["snr"]


def test_plot_specs_carry_the_cached_pictures_and_their_axes():
    for name in vf.SCHEDULE_NAMES:
        plot, spec = vf._schedule_plot(name), vc.forward_props()["curves"][name]
        assert np.array_equal(png(spec["png"]), plot.base)
        assert (spec["height"], spec["width"]) == plot.base.shape[:2]
        for a, s in zip(plot.axes, spec["axes"]):
            assert tuple(s["rows"]) == a["rows"] and tuple(s["cols"]) == a["cols"]
            assert s["x"] == pytest.approx(a["x"], abs=0) and s["y"] == pytest.approx(a["y"], abs=0)
        hist, hspec = vh._plot(name), vc.forward_props()["hist"][name]
        assert np.array_equal(png(hspec["png"]), hist.plot.base)
        over = png(hspec["over"])
        assert np.array_equal(np.flatnonzero(over[..., 3].reshape(-1)), hist.normal_at)
        assert hspec["edge_cols"] == list(hist.edge_cols) and hspec["bar_rgb"] == list(hist.bar_rgb)
    assert np.array_equal(png(vc.compare_props()["curves"]["png"]), vf._compare_plot().base)
    assert vc.forward_props()["bins"]["edges"] == list(vh.EDGES)


def test_props_are_json_and_the_page_code_is_there():
    for props in (vc.forward_props(), vc.compare_props()):
        json.dumps(props)
    js, css = vc.page_code()
    assert "watch(" in js and "getImageData" not in js  # the page writes pixels; tests read them
    assert "${" not in css and "{{" not in css  # (gr.HTML evaluates its CSS as a template)
