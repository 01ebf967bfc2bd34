"""The 2D lab tab on a launched app, driven by gradio_client: every lab_ endpoint, streaming, Stop, drawings, errors."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
gr = pytest.importorskip("gradio")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from conftest import StepCounter, free_port  # noqa: E402
from explainer.views import lab as vl  # noqa: E402
from explainer.views import model_slot as views  # noqa: E402
from explainer.server import launch as serving  # noqa: E402
from explainer.ui import CSS, build_app  # noqa: E402

DOCUMENTED = {"/lab_forward", "/lab_field", "/lab_walk", "/lab_train"}
SESSION_HELPERS = {"/lab_scrub", "/lab_classes", "/lab_use_drawing"}  # UI helpers: callable, not in the API docs
PRIVATE = {"/lab_stop"}  # the Stop button: cancels, nothing to call


@pytest.fixture(scope="module")
def served(tiny_ckpt):
    """The whole app (the tiny U-Net for the digit tabs; the 2D lab with whatever checkpoints/lab holds)."""
    threads = torch.get_num_threads()
    serving.configure_threads()
    demo = build_app(views.load_slot(str(tiny_ckpt), fast=False))
    _, url, _ = serving.launch(demo, css=CSS, server_name="127.0.0.1", server_port=free_port(),
                               prevent_thread_lock=True, quiet=True)
    yield demo, url
    demo.close()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def server(served):
    return served[1]


@pytest.fixture(scope="module")
def client(server):
    return Client(server, verbose=False)


@pytest.fixture(scope="module")
def circle(tmp_path_factory) -> str:
    """A drawing as the sketchpad sends it: black strokes on a transparent canvas."""
    path = tmp_path_factory.mktemp("drawing") / "circle.png"
    img = Image.new("RGBA", (400, 400), (0, 0, 0, 0))
    ImageDraw.Draw(img).ellipse([100, 100, 300, 300], outline=(0, 0, 0, 255), width=6)
    img.save(path)
    return str(path)


def sketch(path: str) -> dict:
    return {"background": None, "layers": [], "composite": handle_file(path)}


def read(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_lab_endpoints_are_named_lab_and_documented(client, served):
    names = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert {n for n in names if "lab" in n} == DOCUMENTED
    demo, _ = served
    ours = {f"/{fn.api_name}" for fn in demo.fns.values() if fn.api_name and "lab" in fn.api_name}
    assert ours == DOCUMENTED | SESSION_HELPERS | PRIVATE and all(n.startswith("/lab_") for n in ours)


def test_lab_forward_with_its_defaults(client):
    pic, text = client.predict(api_name="/lab_forward")
    assert read(pic).shape == (vl.PANEL, vl.PANEL, 3) and "t = 100" in text and "q(x_t)" in text


def test_lab_field_with_its_defaults(client):
    pic, text = client.predict(api_name="/lab_field")
    assert read(pic).shape == (vl.PANEL, 2 * vl.PANEL + 8, 3) and "t = 100" in text


def test_lab_walk_streams_and_the_scrubber_reads_it(server):
    c = Client(server, verbose=False)
    job = c.submit("8 Gaussians", "DDPM", 20, 0, "training", 300, "unconditional", 1.0, 2, api_name="/lab_walk")
    outputs = list(job)
    assert len(outputs) >= 2
    pic, status, scrub, metrics = outputs[-1]
    assert status.startswith("Done") and "20 steps" in status
    assert scrub["maximum"] == 20 and "sliced Wasserstein" in metrics and "exact denoiser" in metrics
    assert read(pic).shape[1] == 2 * vl.PANEL + 8
    frame, text, t, schedule = c.predict(5, api_name="/lab_scrub")
    assert read(frame).shape == read(pic).shape and "Step 5 of 20" in text and 0 < t < 1000 and schedule == "linear"
    with pytest.raises(AppError, match="frame|less than|greater than"):
        c.predict(21, api_name="/lab_scrub")
    classes = c.predict("8 Gaussians", None, api_name="/lab_classes")
    assert [v for v, _ in classes["choices"]][:2] == ["unconditional", "E"]


def test_train_a_drawing_then_walk_with_it(server, circle):
    c = Client(server, verbose=False)
    with pytest.raises(AppError, match="nothing drawn yet"):
        c.predict(vl.DRAWN, 100, 0, None, api_name="/lab_train")
    status = c.predict(vl.DRAWN, 100, 0, sketch(circle), api_name="/lab_train")
    assert status.startswith("Trained on your drawing: 100 steps")
    _, status, _, metrics = c.predict(vl.DRAWN, "DDIM", 10, 0, "other", 300, sketch=sketch(circle),
                                      api_name="/lab_walk")
    assert "trained here" in status and "cosine" in status and "network (MLP)" in metrics
    _, text = c.predict(vl.DRAWN, 50, sketch=sketch(circle), api_name="/lab_field")
    assert "trained here" in text
    pic, text = c.predict(vl.DRAWN, 0, "linear", 0, sketch(circle), api_name="/lab_forward")
    assert read(pic).shape == (vl.PANEL, vl.PANEL, 3) and "t = 0" in text


def test_stop_cancels_the_walk(client, monkeypatch):
    counter = StepCounter(monkeypatch, vl)
    start = counter.steps
    job = client.submit("two moons", "DDPM", 1000, 0, "training", 5000, api_name="/lab_walk")
    deadline = time.time() + 60
    while len(job.outputs()) < 2 and time.time() < deadline:
        time.sleep(0.05)
    assert len(job.outputs()) >= 2, "the walk never streamed"
    job.cancel()
    time.sleep(1.5)
    stopped_at = counter.steps
    time.sleep(1.5)
    assert counter.steps == stopped_at, "the walk kept running after Stop"
    # four walks count (each denoiser's particles and its tracked companions): 4,000 steps would be the end
    assert 0 < stopped_at - start < 4 * 1000


@pytest.mark.parametrize("args,words", [
    (("two moons", "DDPM", 100, 0, "training", 2000, "N"), "has no classes"),
    (("two moons", "DDPM", 100, 0, "training", 20000), "particles"),
    (("two moons", "Euler"), "sampler"),
])
def test_bad_walk_arguments_get_clear_errors(client, args, words):
    with pytest.raises(AppError, match=words):
        client.predict(*args, api_name="/lab_walk")


@pytest.mark.slow
def test_lab_walk_with_its_defaults(client):
    pic, status, scrub, metrics = client.predict(api_name="/lab_walk")
    assert status.startswith("Done") and "100 steps" in status and "2000 particles" in status
    assert scrub["maximum"] == 100 and "fresh data (the floor)" in metrics


@pytest.mark.slow
def test_lab_train_with_its_defaults(server):
    c = Client(server, verbose=False)
    status = c.predict(api_name="/lab_train")
    assert status.startswith("Trained on two moons")
    _, text = c.predict(api_name="/lab_field")
    assert "trained here" in text
