"""The payload of a walk computed in the page (explainer/views/browser_walk.py), checked without a browser.

Its steps, run here in float32 as static/walk.js runs them (the affine form, torch's draws from the seed, the
network through eager PyTorch), must end on the server walk's picture; walks the page cannot run must say why;
the vendored runtime must be the one its README names, and its folder cached for a year.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from explainer.views import browser_walk as vb
from explainer.views import reverse as vr


def page_walk(model, payload: dict) -> np.ndarray:
    """The payload's walk as the page computes it; returns the last frame as uint8 (views' to_uint8)."""
    coefs = vb.decode_coefs(payload).astype(np.float32)
    shape = (1, *payload["shape"])
    noise = torch.Generator().manual_seed(payload["seed"])  # x_T first, then every step's z from the same stream
    x = torch.randn(shape, generator=noise)
    labels = torch.tensor(payload["labels"])
    for i in range(payload["steps"]):
        batch = torch.cat([x, x]) if payload["doubled"] else x
        with torch.inference_mode():
            out = model.net(batch, torch.full((len(batch),), payload["model_t"][i]).long(), labels)
        eps = out[1:] + np.float32(payload["guidance"]) * (out[:1] - out[1:]) if payload["doubled"] else out
        a, b, c1, c2, sigma = coefs[i]
        x0 = a * x - b * eps
        x0 = x0.clamp(-1, 1) if payload["clip"] else x0
        x = c1 * x0 + c2 * x
        if payload["draws"][i]:
            x = x + sigma * torch.randn(shape, generator=noise)
    return ((x[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).movedim(0, -1).squeeze(-1).numpy()


@pytest.mark.parametrize("sampler,guidance,clip", [("DDPM", 3.0, False), ("DDIM", 1.0, True), ("DDPM", 0.0, True)])
def test_the_payloads_walk_ends_on_the_servers_picture(tiny_model, tmp_path, sampler, guidance, clip):
    payload = vb.walk_payload(tiny_model, "4", guidance, sampler, 20, "training", 9, "off", 20, clip, folder=tmp_path)
    assert payload["run"] == "browser" and payload["doubled"] == (guidance not in (0.0, 1.0))
    server = list(vr.reverse_walk(tiny_model, "4", guidance, sampler, 20, "training", 9, "off", 20, clip))[-1]
    diff = np.abs(page_walk(tiny_model, payload).astype(int) - server.walks[0].frames[-1].astype(int))
    assert diff.max() <= 1


def test_the_payload_is_small_and_names_the_models_file(tiny_model, tmp_path):
    import json

    payload = vb.walk_payload(tiny_model, "4", 2.0, "DDPM", 1000, "training", 0, "off", 20, folder=tmp_path)
    assert len(json.dumps(payload)) < 100_000  # (the noise is a seed, not 1000 pictures of it)
    path = tmp_path / payload["model"]["file"]["path"].rsplit("/", 1)[-1]
    assert path.exists() and payload["model"]["inputs"]["x"] == "float32"
    assert vb.model_file(tiny_model, tmp_path) == path  # (exported once, kept on the model)


@pytest.mark.parametrize("kwargs,reason", [
    (dict(where=vb.WHERE[1]), "you chose the server"),
    (dict(compare="DDPM vs DDIM"), "side-by-side walks run on the server"),
    (dict(sampler="euler"), "the euler sampler's steps are not in the affine form the page runs"),
])
def test_walks_the_page_cannot_run_say_why(tiny_model, tmp_path, kwargs, reason):
    args = dict(label="4", guidance=2.0, sampler="DDPM", steps=20, schedule="training", seed=0, compare="off",
                steps_b=20) | kwargs
    payload = vb.walk_payload(tiny_model, args.pop("label"), args.pop("guidance"), args.pop("sampler"),
                              args.pop("steps"), args.pop("schedule"), args.pop("seed"), folder=tmp_path, **args)
    assert payload["reason"] == reason
    assert payload == {"run": "server", "reason": reason, "ticket": payload["ticket"]}  # (nothing else sent)


def test_bad_settings_are_refused_with_a_message(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="steps"):
        vb.walk_payload(tiny_model, "4", 2.0, "DDPM", 5, "training", 0, "off", 20, folder=tmp_path)


def test_the_vendored_runtime_is_the_one_its_readme_names():
    from explainer.ui.browser import ORT_DIR, RUNTIME

    readme = (ORT_DIR / "README.md").read_text()
    assert "1.30.0" in readme and (ORT_DIR / "LICENSE").read_text().startswith("MIT License")
    for name in RUNTIME.values():
        data = (ORT_DIR / name).read_bytes()
        assert f"{len(data):,}" in readme
        digest = hashlib.sha256(data).hexdigest()
        assert f"`{digest[:8]}…{digest[-4:]}`" in readme


def test_static_folders_are_cached_for_a_year(tmp_path):
    import asyncio

    from explainer.server import guard

    guard.cache_for_a_year(tmp_path)
    assert guard.long_cached(f"/gradio_api/file={tmp_path}/a.wasm")
    assert not guard.long_cached(f"/gradio_api/file={tmp_path.parent}/other/a.wasm")
    sent = []

    async def send(message):
        sent.append(message)
    for status, cached in ((200, True), (404, False)):
        sent.clear()
        asyncio.run(guard.nosniff(send, guard.YEAR)({"type": "http.response.start", "status": status,
                                                     "headers": [(b"cache-control", b"no-cache")]}))
        headers = dict(sent[0]["headers"])
        assert headers[b"x-content-type-options"] == b"nosniff"
        assert (headers[b"cache-control"] == guard.YEAR) == cached
