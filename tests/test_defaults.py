"""The model tabs' default results (views/defaults.py): computed once per model, shared, equal to a fresh run."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

from explainer.views import defaults as vd
from explainer.views import noise as vn
from explainer.views import reverse as vr
from explainer.views.inputs import default_class, default_example

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def pixels(picture) -> np.ndarray:
    """A picture as an array: a default result's PNG file, or an array as the views return it."""
    if isinstance(picture, str):
        with Image.open(picture) as im:
            return np.asarray(im)
    return np.asarray(picture)


def same(a, b) -> bool:
    a, b = pixels(a), pixels(b)
    return a.shape == b.shape and np.array_equal(a, b)


def test_the_cached_defaults_equal_a_fresh_computation(tiny_model):
    cached, fresh = vd.of(tiny_model), vd.compute(tiny_model)
    r, f = cached.reverse, fresh.reverse
    assert r.index == f.index == vd.STEPS // 2 and r.status == f.status and r.step_text == f.step_text
    for a, b in ((r.panel, f.panel), (r.strip, f.strip), (r.frame, f.frame), (r.step, f.step),
                 (cached.noise.grid, fresh.noise.grid), (cached.noise.triplet, fresh.noise.triplet),
                 (cached.x_t, fresh.x_t), (cached.maps, fresh.maps)):
        assert same(a, b)
    assert all(same(x, y) for x, y in zip(r.walks[0].frames, f.walks[0].frames))
    assert cached.noise.text == fresh.noise.text


def test_the_defaults_are_the_tabs_own_results(tiny_model):
    """What the Sample and Compute buttons give at the default settings (seed 0)."""
    d = vd.of(tiny_model)
    for update in vr.reverse_walk(tiny_model, default_class(tiny_model), None, "DDPM", 100, "training", 0):
        pass
    assert same(d.reverse.panel, update.panels[0]) and d.reverse.walks[0].done == 100
    assert same(d.reverse.frame, vr.walk_frame(update.walks, 50))
    res = vn.noise_removal(tiny_model, vn.REAL_IMAGE, default_example(tiny_model), "unconditional", 1.0, 50, 0)
    assert same(d.noise.triplet, vn.noise_triplet(res, 0)[0])
    assert "press **Sample**" in d.reverse.status


def test_one_computation_per_model_however_many_ask(tiny_ckpt, monkeypatch):
    from explainer.model.checkpoint import load_model

    model = load_model(tiny_ckpt, device="cpu")
    calls, inner = [], vd.compute
    monkeypatch.setattr(vd, "compute", lambda m: calls.append(m) or inner(m))
    found = []
    threads = [threading.Thread(target=lambda: found.append(vd.of(model))) for _ in range(4)]
    started = vd.start(model)
    for th in threads:
        th.start()
    for th in [started, *threads]:
        th.join(120)
    assert len(calls) == 1 and len(found) == 4 and all(d is found[0] for d in found)
