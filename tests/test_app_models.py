"""The app with several models, driven by gradio_client: the model picker, every model endpoint in colour, sessions,
and a damaged or missing second checkpoint that leaves the first one working."""
from __future__ import annotations

import json
import os
import shutil
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
gr = pytest.importorskip("gradio")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from explainer.model.emoji import CLASS_NAMES  # noqa: E402
from explainer.paths import ASSETS  # noqa: E402
from explainer.views import model_slot as views  # noqa: E402
from explainer.server import launch as serving  # noqa: E402
from explainer.ui import CSS, build_app  # noqa: E402
from test_app_client import free_port, read  # noqa: E402
from test_views_colour import is_colour, make_colour_checkpoint  # noqa: E402

FROG = str(ASSETS / "emoji" / "2-frog-noto.png")
MODELS = ["tiny", "tiny-emoji", "damaged", "missing"]


@pytest.fixture(scope="module")
def registry(tiny_ckpt, tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    colour = make_colour_checkpoint(root / "tiny-emoji")
    config = json.loads((colour / "config.json").read_text())
    (colour / "config.json").write_text(json.dumps(config | {"recommended_clip_x0": True,  # as the emoji card
                                                             "recommended_guidance": 5.0}))
    damaged = root / "damaged"
    shutil.copytree(colour, damaged)
    (damaged / "config.json").write_text("{ this is not json")
    return views.ModelRegistry({"tiny": str(tiny_ckpt), "tiny-emoji": str(colour), "damaged": str(damaged),
                                "missing": str(root / "missing")}, device="cpu", fast=False)


@pytest.fixture(scope="module")
def server(registry):
    threads = torch.get_num_threads()
    serving.configure_threads()
    demo = build_app(registry)
    _, url, _ = serving.launch(demo, css=CSS, server_name="127.0.0.1", server_port=free_port(),
                               prevent_thread_lock=True, quiet=True)
    yield url
    demo.close()
    torch.set_num_threads(threads)


@pytest.fixture
def emoji(server):
    """A client whose session has switched to the colour model."""
    c = Client(server, verbose=False)
    out = c.predict("tiny-emoji", api_name="/select_model")
    assert "32x32x3" in out[0]
    return c


def test_the_picker_offers_every_model(server, registry):
    api = Client(server, verbose=False).view_api(return_format="dict", print_info=False)["named_endpoints"]
    picker = api["/select_model"]["parameters"][0]
    assert picker["type"]["enum"] == MODELS and picker["parameter_default"] == "tiny"
    assert registry.loaded("tiny") and not registry.loaded("tiny-emoji")  # the others load on first use
    for name, params in (("/reverse_walk", 11), ("/noise_removal", 6), ("/feature_maps", 4)):
        assert len(api[name]["parameters"]) == params  # the model is session state: the endpoints keep their inputs


def test_switching_updates_the_class_menus_and_labels(server):
    c = Client(server, verbose=False)
    out = c.predict("tiny-emoji", api_name="/select_model")
    notice = out[0]
    menus = [o for o in out if isinstance(o, dict) and "choices" in o and len(o["choices"]) == 10]
    assert len(menus) == 4  # reverse (and its second walk's), noise-removal and architecture tabs
    for menu in menus:
        assert [v for _, v in menu["choices"]] == ["unconditional", *CLASS_NAMES]
    labels = {m["label"] for m in menus}
    assert labels == {"class", "second walk's class ('two classes')", "condition on class",
                      "class given to the network"}  # "class", never "digit"
    images = [o for o in out if isinstance(o, dict) and str(o.get("label", "")).startswith(("real image", "image"))]
    assert len(images) == 2 and all("32x32 colour" in o["label"] for o in images)
    assert "Model: `tiny-emoji` (32x32x3, 9 classes" in notice
    clip = [o["value"] for o in out if isinstance(o, dict) and isinstance(o.get("value"), bool)]
    assert clip == [True]  # the reverse tab's clip checkbox: the card recommends clipping
    back = c.predict("tiny", api_name="/select_model")
    assert back[0].startswith("Model: `tiny`") and any(isinstance(o, dict) and o.get("label") == "digit class"
                                                        for o in back)
    assert [o["value"] for o in back if isinstance(o, dict) and isinstance(o.get("value"), bool)] == [False]
    # the reverse and noise-removal tabs' guidance sliders follow the card's recommended w (the reverse tab's second
    # guidance, for "two guidance scales", sits at the other end: w = 1 beside 5, 5 beside 1)
    guidance = [o["value"] for o in out if isinstance(o, dict) and o.get("__type__") == "update"
                and isinstance(o.get("value"), float) and set(o) <= {"__type__", "value"}]
    assert guidance == [5.0, 1.0, 5.0]
    assert [o["value"] for o in back if isinstance(o, dict) and isinstance(o.get("value"), float)
            and set(o) <= {"__type__", "value"}] == [1.0, 5.0, 1.0]


def test_the_defaults_follow_the_model(emoji):
    """After a switch, the tabs' default results are the new model's (colour pictures of the emoji model)."""
    panel, _, status, scrub, strip, gif, frame, step, text = emoji.predict(api_name="/reverse_default")
    assert is_colour(read(panel)) and is_colour(read(frame)) and is_colour(read(strip)) and is_colour(read(step))
    assert "Smileys & Emotion" in status and scrub["value"] == 50
    grid, _, triplet, text, _ = emoji.predict(api_name="/noise_removal_default")
    assert is_colour(read(triplet)) and "real image" in text
    x_t, _ = emoji.predict(api_name="/feature_maps_default")
    assert is_colour(read(x_t))


def test_colour_walk_scrubber_step_strip_and_gif(emoji):
    panel, _, status, scrub, strip, gif = emoji.predict("Animals & Nature", 2.0, "DDPM", 20, "training", 1, "off", 20,
                                                        api_name="/reverse_walk")
    assert status.startswith("Done") and "20 network calls" in status
    assert is_colour(read(panel)) and is_colour(read(strip)) and scrub["maximum"] == 20
    with Image.open(gif) as g:
        assert g.n_frames == 21 and is_colour(np.asarray(g.convert("RGB")))
    frame = read(emoji.predict(10, api_name="/reverse_scrub"))
    step, text = emoji.predict(10, api_name="/reverse_step")
    assert is_colour(frame) and is_colour(read(step)) and "step 11 of 20" in text


def test_a_clipped_walk_says_so_and_differs(emoji):
    plain = emoji.predict("Flags", 2.0, "DDPM", 20, "training", 5, "off", 20, False, api_name="/reverse_walk")
    clipped = emoji.predict("Flags", 2.0, "DDPM", 20, "training", 5, "off", 20, True, api_name="/reverse_walk")
    assert "clipped" not in plain[2] and "x0_hat clipped to [-1, 1]" not in plain[2]
    assert clipped[2].startswith("Done") and (read(plain[0]) != read(clipped[0])).any()
    step, text = emoji.predict(10, api_name="/reverse_step")
    assert "clipped to [−1, 1]" in text and "c_0 = " in text


def test_colour_walks_side_by_side_stream(emoji):
    outputs = list(emoji.submit("Flags", 1.0, "DDPM", 20, "training", 0, "DDPM vs DDIM", 20,
                                api_name="/reverse_walk"))
    assert len(outputs) >= 3 and outputs[-1][2].startswith("Done") and "DDIM" in outputs[-1][2]
    assert is_colour(read(outputs[-1][0])) and is_colour(read(outputs[-1][1]))


def test_colour_noise_removal_of_a_held_out_emoji(emoji):
    grid, index, triplet, text, _ = emoji.predict("real digit", handle_file(FROG), "Animals & Nature", 1.0, 10, 0,
                                                  api_name="/noise_removal")
    assert index["maximum"] == 9 and "source: real image" in text and "one scale" in text
    assert is_colour(read(grid)) and is_colour(read(triplet))
    assert read(triplet).shape[1] == 5 * 32 * 6 + 4 * 6  # x0_hat, x_t, eps_hat, true x_0, true eps
    triplet, text = emoji.predict(9, api_name="/noise_removal_at")
    assert "t = 1**" in text and is_colour(read(triplet))
    photo = emoji.predict("real digit", handle_file(str(ASSETS / "coffee.jpg")), "unconditional", 1.0, 5, 0,
                          api_name="/noise_removal")  # any upload: centre-cropped and resized to 32x32 colour
    assert read(photo[2]).shape[0] == 32 * 6 + 14
    walk = emoji.predict("reverse walk", None, "Flags", 2.0, 5, 0, api_name="/noise_removal")
    assert "source: reverse walk" in walk[3] and is_colour(read(walk[2]))


def test_colour_feature_maps(emoji):
    x_t, sheet = emoji.predict(handle_file(FROG), 300, "Food & Drink", 0, api_name="/feature_maps")
    assert is_colour(read(x_t)) and read(x_t).shape[1] == 6 * 32 and read(sheet).shape[0] > 5 * 84


def test_classes_are_checked_against_the_sessions_model(server, emoji):
    with pytest.raises(AppError, match="must be one of unconditional, Smileys & Emotion"):
        emoji.predict("3", 2.0, "DDPM", 10, "training", 0, "off", 20, api_name="/reverse_walk")
    with pytest.raises(AppError, match="Animals & Nature"):  # a new session starts with the default (digit) model
        Client(server, verbose=False).predict("Animals & Nature", 2.0, "DDPM", 10, "training", 0, "off", 20,
                                              api_name="/reverse_walk")
    with pytest.raises(AppError, match="model must be one of tiny, tiny-emoji, damaged, missing"):
        Client(server, verbose=False).predict("no-such-model", api_name="/select_model")


def test_sessions_keep_their_own_model(server, emoji):
    digits = Client(server, verbose=False)
    panel = digits.predict("3", 2.0, "DDIM", 10, "training", 0, "off", 20, api_name="/reverse_walk")[0]
    assert read(panel).ndim == 3 and not is_colour(read(panel))  # gray: the default digit model
    assert is_colour(read(emoji.predict("Flags", 2.0, "DDIM", 10, "training", 0, "off", 20,
                                        api_name="/reverse_walk")[0]))


def test_old_raw_http_calls_keep_working(server):
    """The endpoints' inputs did not change: a raw call with the old values runs on the default model."""
    req = urllib.request.Request(server + "gradio_api/call/reverse_walk",
                                 data=json.dumps({"data": ["3", 2.0, "DDIM", 10, "training", 0, "off", 20]}).encode(),
                                 headers={"Content-Type": "application/json"})
    eid = json.loads(urllib.request.urlopen(req).read())["event_id"]
    out = urllib.request.urlopen(server + f"gradio_api/call/reverse_walk/{eid}").read().decode()
    assert "event: complete" in out and "Done: DDIM, 10 steps" in out


@pytest.mark.parametrize("name,words", [("damaged", "not valid JSON"), ("missing", "checkpoint not found")])
def test_a_broken_second_model_leaves_the_first_working(server, name, words):
    c = Client(server, verbose=False)
    notice = c.predict(name, api_name="/select_model")[0]
    assert f"The model tabs are unavailable with `{name}`" in notice and words in notice
    assert "Pick another model" in notice
    for args, endpoint in ((("3", 2.0, "DDPM", 10, "training", 0, "off", 20), "/reverse_walk"),
                           (("real digit", handle_file(FROG), "unconditional", 1.0, 5, 0), "/noise_removal"),
                           ((handle_file(FROG), 300, "unconditional", 0), "/feature_maps")):
        with pytest.raises(AppError, match=words):
            c.predict(*args, api_name=endpoint)
    assert c.predict("tiny", api_name="/select_model")[0].startswith("Model: `tiny`")  # pick the first one again
    status = c.predict("3", 2.0, "DDIM", 10, "training", 0, "off", 20, api_name="/reverse_walk")[2]
    assert status.startswith("Done")
    other = Client(server, verbose=False)  # and other sessions never noticed
    assert other.predict("3", 2.0, "DDIM", 10, "training", 0, "off", 20, api_name="/reverse_walk")[2].startswith("Done")
