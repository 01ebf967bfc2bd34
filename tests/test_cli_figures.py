"""`python -m explainer figures` end to end, in a subprocess (as a user runs it)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import ROOT, make_tiny_checkpoint

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def run(*args, code=None):
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "explainer", *args]
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)


def test_cli_figures_with_a_checkpoint(tmp_path):
    ckpt = make_tiny_checkpoint(tmp_path / "tiny", num_steps=20)
    out = tmp_path / "figs"
    r = run("figures", "--checkpoint", str(ckpt), "--device", "cpu", "--out", str(out), "--seed", "1",
            "--variance", "beta")
    assert r.returncode == 0, r.stderr
    printed = [Path(line) for line in r.stdout.split()]
    names = sorted(p.name for p in printed)
    assert names == sorted(["forward_10_steps.png", "forward_linear_strip.png", "forward_cosine_strip.png",
                            "schedule_curves.png", "reverse_10_steps.png", "reverse_walk.gif",
                            "full_noise_removal.png", "captions.json"])
    assert all(p.is_file() and p.stat().st_size > 500 for p in printed)
    with Image.open(out / "reverse_walk.gif") as gif:
        assert gif.n_frames > 20
    caps = json.loads((out / "captions.json").read_text())
    for name in ("reverse_10_steps.png", "reverse_walk.gif", "full_noise_removal.png"):  # the walk that ran
        assert "sigma_t^2 = beta_t," in caps[name] and "beta_tilde" not in caps[name] and "seed 1" in caps[name]
    assert "Image: astronaut.jpg" in caps["forward_10_steps.png"]  # the default image: the bundled photo


def test_cli_figures_without_a_model(tmp_path):
    out = tmp_path / "figs"
    r = run("figures", "--checkpoint", str(tmp_path / "missing"), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "writing only the figures that need no model" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["forward_10_steps.png", "forward_linear_strip.png", "forward_cosine_strip.png", "schedule_curves.png",
         "captions.json"])
    caps = json.loads((out / "captions.json").read_text())
    assert "Image: astronaut.jpg" in caps["forward_10_steps.png"] and "MNIST" not in caps["forward_10_steps.png"]
    with Image.open(out / "forward_10_steps.png") as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.float64)
    assert np.abs(rgb[..., 0] - rgb[..., 2]).mean() > 3  # the photo's colour frames, not a gray digit


def test_cli_figures_bad_image(tmp_path):
    r = run("figures", "--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path / "f"),
            "--image", str(tmp_path / "nope.png"))
    assert r.returncode == 2 and "error: image not found" in r.stderr and "Traceback" not in r.stderr


def test_figures_leave_no_pyplot_state(tmp_path):
    code = ("import sys; from explainer.render.figures import make_figures; "
            f"make_figures(None, {str(tmp_path / 'f')!r}); "
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'")
    r = run(code=code)
    assert r.returncode == 0, r.stderr


def test_figures_in_process_refuse_a_missing_image(tmp_path, capsys):
    """The command's error path without a subprocess's start-up: no model, a missing image, exit 2 with a message."""
    from explainer.__main__ import main

    rc = main(["figures", "--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path / "f"),
               "--image", str(tmp_path / "nope.png")])
    err = capsys.readouterr().err
    assert rc == 2 and "writing only the figures that need no model" in err and "error: image not found" in err
