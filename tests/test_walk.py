"""The one walk pipeline (explainer/views/walk.py): requests, the inference schedule, the pacer, kept frames;
and the reverse and lab walks streamed through it."""
from __future__ import annotations

import numpy as np
import pytest

from explainer.diffusion.schedules import make_schedule
from explainer.views import lab as vl
from explainer.views import walk as vw
from explainer.views.reverse import ReverseRequest


def test_other_schedule_and_chain():
    linear, cosine = make_schedule("linear", 1000), make_schedule("cosine", 1000)
    assert vw.inference_schedule(linear, "training") is None
    assert vw.inference_schedule(linear, "other").name == "cosine"
    assert vw.inference_schedule(cosine, "other").name == "linear"
    chain = vw.walk_chain(linear, 10, "other")
    # the chain walks the cosine schedule's noise levels at the kept steps (linspace over 1..T)
    kept = np.round(np.linspace(1000, 1, 10)).astype(int)
    assert np.allclose(chain.alpha_bar, cosine.alpha_bars[kept - 1])
    assert np.allclose(vw.walk_chain(linear, 10).alpha_bar, linear.alpha_bars[kept - 1])


def test_common_settings_are_checked_with_their_names():
    ok = vw.WalkRequest.check_common("DDIM", 20, "other", 2.5, 7, 1000, "steps")
    assert ok == dict(sampler="DDIM", steps=20, schedule="other", guidance=2.5, seed=7)
    for args, words in [(("PLMS", 20, "training", 1, 0), "sampler"), (("DDPM", 9, "training", 1, 0), "steps"),
                        (("DDPM", 20, "cosine", 1, 0), "inference schedule"),
                        (("DDPM", 20, "training", 11, 0), "guidance"), (("DDPM", 20, "training", 1, -1), "seed")]:
        with pytest.raises(ValueError, match=words):
            vw.WalkRequest.check_common(*args, 1000, "steps")


def test_a_side_by_side_request_differs_in_exactly_one_setting():
    base = ReverseRequest(sampler="ddim", steps=50, schedule="training", guidance=2.0, seed=3, label="7",
                          compare="off", steps_b=20, clip_x0=False)
    assert base.walks() == [base]
    from dataclasses import replace
    pairs = {"DDPM vs DDIM": ("sampler", ["ddpm", "ddim"]), "two step counts": ("steps", [50, 20]),
             "training vs other schedule": ("schedule", ["training", "other"])}
    for mode, (name, values) in pairs.items():
        walks = replace(base, compare=mode).walks()
        assert [getattr(w, name) for w in walks] == values
        others = [{k: v for k, v in vars(w).items() if k != name} for w in walks]
        assert others[0] == others[1]


def test_pacer_pictures_and_updates(monkeypatch):
    monkeypatch.setattr(vw, "MIN_FRAME_S", 0.0)
    monkeypatch.setattr(vw, "YIELD_EVERY_S", 1e9)  # fast steps: an update only with a picture
    pacer = vw.Pacer([100, 10], shown_frames=5)
    due = [pacer.due(0, k) for k in range(1, 101)]
    assert [k for k, (update, pic) in enumerate(due, 1) if update] == list(range(20, 101, 20))
    assert all(update == pic for update, pic in due)
    assert pacer.due(1, 2) == (True, True) and pacer.due(1, 3) == (False, False)  # the second walk: every 2 steps
    assert pacer.due(0, 7, first_or_last=True) == (True, True)
    monkeypatch.setattr(vw, "YIELD_EVERY_S", 0.0)  # slow steps: an update after every step, pictures as paced
    assert pacer.due(0, 7) == (True, False)
    monkeypatch.setattr(vw, "MIN_FRAME_S", 1e9)  # a picture was just sent: the next waits
    pacer.sent(0, True)
    assert pacer.due(0, 20) == (True, False)


def test_kept_steps():
    assert vw.kept_steps(5) == [0, 1, 2, 3, 4, 5] == vw.kept_steps(5, 100)
    kept = vw.kept_steps(1000, 100)
    assert len(kept) == 101 and kept[0] == 0 and kept[-1] == 1000 and np.all(np.diff(kept) == 10)


def test_the_lab_walk_is_paced_like_the_reverse_walk(monkeypatch):
    monkeypatch.setattr(vw, "SHOWN_FRAMES", 4)
    monkeypatch.setattr(vw, "MIN_FRAME_S", 0.0)
    monkeypatch.setattr(vw, "YIELD_EVERY_S", 0.0)
    updates = list(vl.walk("two moons", "DDIM", 20, 0.0, "training", 200, seed=1))
    steps = [u.step for u in updates]
    assert steps[:20] == list(range(20)) and steps[-2:] == [20, 20]  # every step but the last, then the end
    shown = [u.step for u in updates if u.picture is not None]
    assert shown[:6] == [0, 1, 5, 10, 15, 20]
    assert updates[-1].finished and updates[-1].walk.done == 20


def test_lab_walk_request_names_bad_settings():
    for kwargs, words in [(dict(particles=10), "particles"), (dict(eta=2), "eta"), (dict(steps=5), "number of steps"),
                          (dict(sampler="Euler"), "sampler"), (dict(cls="north"), "no classes")]:
        args = dict(dataset="two moons", sampler="DDPM", steps=20, eta=0.0, schedule="training", particles=200,
                    cls_name="unconditional", guidance=1.0, seed=0, sketch=None)
        if "cls" in kwargs:
            kwargs = {"cls_name": kwargs["cls"]}
        with pytest.raises(ValueError, match=words):
            vl.LabWalkRequest.checked(**{**args, **kwargs})
