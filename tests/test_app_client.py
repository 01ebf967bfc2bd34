"""The real app on a free local port, driven by gradio_client: every endpoint, streaming, Stop, bad input."""
from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import time
import urllib.request
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no phoning home from tests
gr = pytest.importorskip("gradio")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from conftest import StepCounter, free_port  # noqa: E402
from explainer.views import reverse as vr  # noqa: E402
from explainer.views import tour  # noqa: E402
from explainer.views import model_slot as views  # noqa: E402
from explainer.server import launch as serving  # noqa: E402
from explainer.ui import CSS, build_app  # noqa: E402

from explainer.paths import ROOT  # noqa: E402
from explainer.paths import ASSETS  # noqa: E402
PHOTO = str(ASSETS / "camera.png")
ENDPOINTS = ["/forward_noise", "/forward_curves", "/forward_histogram", "/forward_strips", "/compare_schedules",
             "/compare_curves", "/reverse_walk", "/noise_removal", "/feature_maps", "/select_model", "/tour_step",
             "/tour_previous", "/tour_next", "/tour_show", "/tour_reveal", "/reverse_default", "/noise_removal_default",
             "/feature_maps_default"]


def launch(slot=None):
    demo = build_app(slot)
    _, url, _ = serving.launch(demo, css=CSS, server_name="127.0.0.1", server_port=free_port(),
                               prevent_thread_lock=True, quiet=True)
    return demo, url


@pytest.fixture(scope="module")
def server(tiny_ckpt):
    """The app with the tiny checkpoint, found through $DDPM_EXPLAINER_CHECKPOINT as `python app.py` would."""
    threads = torch.get_num_threads()
    serving.configure_threads()
    old = os.environ.get(views.CHECKPOINT_ENV)
    os.environ[views.CHECKPOINT_ENV] = str(tiny_ckpt)
    try:
        demo, url = launch()
    finally:
        if old is None:
            del os.environ[views.CHECKPOINT_ENV]
        else:
            os.environ[views.CHECKPOINT_ENV] = old
    yield url
    demo.close()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def client(server):
    return Client(server, verbose=False)


def png_with_size(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims width x height pixels (a decompression bomb's header)."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    raw = bytearray(buf.getvalue())
    raw[16:24] = struct.pack(">II", width, height)
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(raw[12:29])) & 0xFFFFFFFF)
    return bytes(raw)


def read(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_every_documented_endpoint_is_tested(client):
    names = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    names = {n for n in names if not n.startswith("/lab_")}  # the 2D lab's endpoints: tests/test_lab_app.py
    assert names == set(ENDPOINTS)  # the session-state helpers (scrubber, timestep slider) are undocumented


@pytest.mark.parametrize("name", ENDPOINTS)
def test_every_endpoint_works_with_its_defaults(client, name):
    out = client.predict(api_name=name)
    out = out if isinstance(out, tuple) else (out,)
    if name == "/forward_noise":
        assert read(out[0]).shape == (256, 256, 3) and "at t = 500" in out[1]
    elif name == "/compare_schedules":
        assert read(out[0]).shape == read(out[1]).shape and "327 of 1000" in out[2]
    elif name in ("/forward_curves", "/compare_curves"):
        assert read(out[0]).shape[1] >= 500
    elif name == "/forward_histogram":
        assert read(out[0]).shape[1] >= 500 and "t = 500" in out[1] and "N(0, 1)" in out[1]
    elif name == "/forward_strips":
        assert read(out[0]).shape[1] > 900 and read(out[1]).shape[1] > 900
    elif name == "/reverse_walk":
        panel_a, panel_b, status, scrub, strip, gif = out
        assert read(panel_a).ndim == 3 and not isinstance(panel_b, str)  # one walk: no second picture
        assert status.startswith("Done") and "100 network calls" in status
        assert scrub["maximum"] == 100 and read(strip).shape[1] > 500
        with Image.open(gif) as g:
            assert g.n_frames > 10
    elif name == "/noise_removal":
        grid, index, triplet, text, curve = out
        assert read(grid).shape[0] > 500 and index["maximum"] == 49 and "t = 1000" in text
    elif name == "/feature_maps":
        x_t, sheet = out
        assert read(x_t).ndim == 3 and read(sheet).shape[0] > 5 * 84
    elif name == "/reverse_default":  # what the tab opens on: the default walk, scrubbed to its middle step
        panel_a, panel_b, status, scrub, strip, gif, frame, step, text = out
        assert read(panel_a).ndim == 3 and not isinstance(panel_b, str) and "press Sample" in status.replace("*", "")
        assert scrub["maximum"] == 100 and scrub["value"] == 50 and read(strip).shape[1] > 500
        assert read(frame).ndim == 3 and read(step).ndim == 3 and "step 51 of 100" in text
    elif name == "/noise_removal_default":
        grid, index, triplet, text, curve = out
        assert read(grid).shape[0] > 500 and index["maximum"] == 49 and "t = 1000" in text and "real digit" in text
    elif name == "/feature_maps_default":
        x_t, sheet = out
        assert read(x_t).ndim == 3 and read(sheet).shape[0] > 5 * 84
    elif name == "/select_model":  # the default model (tests/test_app_models.py switches between several)
        assert out[0].startswith("Model: `tiny`")
    elif name == "/tour_step":  # the first step's text; its answer cleared
        assert out[0] == tour.step_markdown(0) and out[1] == ""
    elif name in ("/tour_previous", "/tour_next"):  # from the first step: stays, or the second
        assert out == (0 if name == "/tour_previous" else 1,)
    elif name == "/tour_show":  # the bar's question and cleared answer, then the widgets the step sets
        keys = tour.setting_keys()
        assert out[0].startswith("**Tour, 1.") and out[1] == ""
        assert len(out) == 2 + len(keys)
        values = dict(zip(keys, out[2:]))
        assert values["forward.t"] == 1000 and values["forward.schedule"] == "linear"
    elif name == "/tour_reveal":  # in the tour and in the bar, the same live answer
        assert out[0] == out[1] == tour.reveal(0, None)


def test_session_state_scrubber(server):
    c = Client(server, verbose=False)
    c.predict("3", 2.0, "DDIM", 12, "training", 1, "off", 20, api_name="/reverse_walk")
    first, last = read(c.predict(0, api_name="/reverse_scrub")), read(c.predict(12, api_name="/reverse_scrub"))
    assert first.shape == last.shape and (first != last).any()
    step, text = c.predict(5, api_name="/reverse_step")  # the step from frame 5, taken apart
    assert read(step).shape[1] > 5 * 28 and "step 6 of 12" in text and "√ᾱ_t'" in text
    with pytest.raises(AppError, match="less than|greater than|frame"):
        c.predict(13, api_name="/reverse_scrub")
    c.predict("real digit", handle_file(str(ASSETS / "digit_5.png")), "5", 2.0, 20, 0, api_name="/noise_removal")
    triplet, text = c.predict(19, api_name="/noise_removal_at")
    assert read(triplet).shape[1] > 4 * 168 and "t = 1**" in text


def test_the_defaults_fill_the_sessions_results(server):
    """A page opens on the default walk and noise removal: the scrubber and the timestep slider work on them."""
    c = Client(server, verbose=False)
    c.predict(api_name="/reverse_default")
    first, last = read(c.predict(0, api_name="/reverse_scrub")), read(c.predict(100, api_name="/reverse_scrub"))
    assert first.shape == last.shape and (first != last).any()
    assert "step 100 of 100" in c.predict(100, api_name="/reverse_step")[1]
    c.predict(api_name="/noise_removal_default")
    triplet, text = c.predict(49, api_name="/noise_removal_at")
    assert read(triplet).ndim == 3 and "timestep 50 of 50" in text


def test_the_samplers_by_name_and_their_network_calls(client):
    """The endpoint takes the CLI's sampler names; the status counts network calls (Heun's 10 steps are 19)."""
    out = client.predict("3", 2.0, "heun", 10, "training", 1, "off", 20, api_name="/reverse_walk")
    assert "Heun, 10 Karras levels (19 network calls)" in out[2] and "19 network calls" in out[2]
    out = client.predict("3", 2.0, "dpmpp-2m", 10, "training", 1, "DDPM vs DDIM", 20, api_name="/reverse_walk")
    assert "DDPM, 10 steps" in out[2] and "DDIM, 10 steps" in out[2]  # the mode names its two samplers
    with pytest.raises(AppError, match="sampler"):
        client.predict("3", 2.0, "dpm", 10, "training", 1, "off", 20, api_name="/reverse_walk")


def test_walk_streams_several_outputs(client):
    job = client.submit("7", 2.0, "DDPM", 20, "training", 0, "DDPM vs DDIM", 20, api_name="/reverse_walk")
    outputs = list(job)
    assert len(outputs) >= 4
    assert outputs[-1][2].startswith("Done") and "DDIM" in outputs[-1][2]
    assert outputs[0][0] is not None and outputs[-1][1] is not None  # both panels filled


def test_stop_really_stops_the_generator(client, monkeypatch):
    counter = StepCounter(monkeypatch, vr)
    start = counter.steps
    total = 2000  # two 1000-step walks
    job = client.submit("1", 3.0, "DDPM", 1000, "training", 0, "two step counts", 1000, api_name="/reverse_walk")
    deadline = time.time() + 60
    while len(job.outputs()) < 2 and time.time() < deadline:
        time.sleep(0.05)
    assert len(job.outputs()) >= 2, "the walk never streamed"
    job.cancel()
    time.sleep(1.5)  # at most one more step after the cancel
    stopped_at = counter.steps
    time.sleep(2.0)
    assert counter.steps == stopped_at, "the sampler kept running after Stop"
    assert 0 < stopped_at - start < total, "the walk ran to the end: Stop did not stop it"


@pytest.mark.parametrize("content,words", [
    (b"just text, no picture\n", "not an image"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "cannot be opened|not an image|damaged"),
])
def test_bad_uploads_give_clear_errors(client, tmp_path, content, words):
    bad = tmp_path / "upload.png"
    bad.write_bytes(content)
    for args, name in (((handle_file(str(bad)), 10, "linear", 0), "/forward_noise"),
                       (("real digit", handle_file(str(bad)), "unconditional", 1.0, 10, 0), "/noise_removal")):
        with pytest.raises(AppError, match=words):
            client.predict(*args, api_name=name)


def test_decompression_bomb_upload(client, tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_with_size(30000, 30000))
    with pytest.raises(AppError, match="pixels"):
        client.predict(handle_file(str(bomb)), 10, "linear", 0, api_name="/forward_noise")


def test_odd_uploads_work(client, tmp_path):
    frames = [Image.new("RGB", (600, 300), c) for c in ((0, 0, 255), (255, 0, 0))]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=40)
    img = read(client.predict(handle_file(str(gif)), 0, "linear", 0, api_name="/forward_noise")[0])
    assert img.shape == (128, 256, 3) and img[..., 2].mean() > 200  # first frame, downscaled
    tif = tmp_path / "deep.tif"
    Image.fromarray((np.arange(64 * 64, dtype=np.uint16) * 16).reshape(64, 64)).save(tif)
    assert read(client.predict(handle_file(str(tif)), 0, "cosine", 0, api_name="/forward_noise")[0]).shape == (64, 64, 3)


@pytest.mark.parametrize("args,name,words", [
    ((handle_file(PHOTO), 5000, "linear", 0), "/forward_noise", "maximum"),
    ((handle_file(PHOTO), 10, "sigmoid", 0), "/forward_noise", "sigmoid"),
    ((handle_file(PHOTO), 10, "linear", -5), "/forward_noise", "minimum"),
    ((handle_file(PHOTO), 1001, "cosine", 0), "/forward_histogram", "maximum"),
    ((-1,), "/compare_curves", "minimum"),
    (("3", 2.0, "DDPM", 5, "training", 0, "off", 20), "/reverse_walk", "minimum"),
    (("3", 99.0, "DDPM", 10, "training", 0, "off", 20), "/reverse_walk", "maximum"),
    (("12", 2.0, "DDPM", 10, "training", 0, "off", 20), "/reverse_walk", "12"),
    (("3", 2.0, "PLMS", 10, "training", 0, "off", 20), "/reverse_walk", "PLMS"),
    (("real digit", handle_file(PHOTO), "unconditional", 1.0, 1000, 0), "/noise_removal", "maximum"),
])
def test_out_of_range_values_are_refused(client, args, name, words):
    with pytest.raises(AppError, match=words):
        client.predict(*args, api_name=name)


def test_missing_checkpoint(tmp_path):
    slot = views.load_slot(str(tmp_path / "no-such-checkpoint"))
    demo, url = launch(slot)
    try:
        c = Client(url, verbose=False)
        img, text = c.predict(handle_file(PHOTO), 100, "cosine", 0, api_name="/forward_noise")
        assert read(img).shape == (256, 256, 3)  # the forward tabs still work
        assert len(c.predict(api_name="/compare_schedules")) == 3
        for name in ("/reverse_walk", "/noise_removal", "/feature_maps"):
            with pytest.raises(AppError, match="checkpoint not found") as e:
                c.predict(api_name=name)
            assert views.CHECKPOINT_ENV in str(e.value) and "python -m explainer train" in str(e.value)
        assert "The model tabs are unavailable" in str(demo.config)  # the notice on the model tabs
    finally:
        demo.close()


def test_python_app_py_serves_on_gradio_server_port(tiny_ckpt):
    port = free_port()
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1",
               **{views.CHECKPOINT_ENV: str(tiny_ckpt)}, GRADIO_ANALYTICS_ENABLED="False", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        deadline, ok = time.time() + 90, False
        while time.time() < deadline and not ok and proc.poll() is None:
            try:
                ok = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).status == 200
            except OSError:
                time.sleep(0.5)
        assert ok, f"app.py did not serve on port {port}: {proc.stdout.read().decode() if proc.poll() is not None else ''}"
        c = Client(f"http://127.0.0.1:{port}/", verbose=False)
        assert "at t = 10" in c.predict(handle_file(PHOTO), 10, "linear", 0, api_name="/forward_noise")[1]
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_app_switches_to_the_fast_path(tiny_ckpt, tmp_path, monkeypatch):
    """The app builds explainer.accel.fast's path in the background, switches to it, and walks as eager does."""
    monkeypatch.setenv("DDPM_EXPLAINER_CACHE", str(tmp_path / "cache"))  # a fresh export, not a cached file
    threads = torch.get_num_threads()
    serving.configure_threads()
    slot = views.load_slot(str(tiny_ckpt), device="cpu", fast=True)
    eager = views.load_slot(str(tiny_ckpt), device="cpu", fast=False).require()
    try:
        assert views.fast_path(eager) is None and views.eps_fn_for(eager) == eager.eps
        assert views.fast_path(slot.model).wait(120), views.fast_path(slot.model).error
        fn = views.eps_fn_for(slot.model)
        assert fn is not slot.model.eps and fn.backend in ("onnx", "torchscript")
        assert list((tmp_path / "cache").glob("*.onnx")) or fn.backend == "torchscript"
        demo, url = launch(slot)
        try:
            args = ("4", 2.0, "DDPM", 25, "training", 5, "off", 20)
            panel, _, status, _, _, _ = Client(url, verbose=False).predict(*args, api_name="/reverse_walk")
        finally:
            demo.close()
        assert status.startswith("Done") and f"Network: {fn.name}." in status
        ref = list(vr.reverse_walk(eager, *args))[-1]
        assert "eager PyTorch" in ref.status
        fast_img, eager_img = read(panel).astype(int), ref.panels[0].astype(int)
        assert fast_img.shape == eager_img.shape
        assert np.abs(fast_img - eager_img).max() <= 1  # float rounding can move a pixel by one level at most
        assert (fast_img != eager_img).mean() < 0.01
    finally:
        torch.set_num_threads(threads)
