"""`python -m explainer sample` end to end, in a subprocess, on the tiny checkpoint."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT


def cli(*args, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "explainer", "sample", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def two_runs(tiny_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli")
    results = []
    for run in ("a", "b"):
        r = cli("--checkpoint", tiny_ckpt, "--device", "cpu", "--label", 3, "--num", 5, "--steps", 4,
                "--guidance", 2.0, "--seed", 11, "--out", out / f"{run}.png", "--npz", out / f"{run}.npz")
        assert r.returncode == 0, r.stderr
        results.append((r, out / f"{run}.png", out / f"{run}.npz"))
    return results


def test_writes_png_and_npz(two_runs):
    r, png, npz = two_runs[0]
    assert png.exists() and npz.exists()
    assert "wrote" in r.stdout and "4 of 1000 steps" in r.stdout
    for part in ("DDPM", "sigma_t^2 = beta_tilde_t", "label 3", "w=2", "seed 11"):  # the walk as it ran
        assert part in r.stdout, part
    with Image.open(png) as im:
        assert im.size[0] >= 3 * 28 and im.size[1] >= 2 * 28  # a grid of 5 digits (3 per row)
    data = np.load(npz)
    assert data["images"].dtype == np.uint8 and data["images"].shape == (5, 28, 28)
    assert data["labels"].tolist() == [3] * 5
    assert data["images"].std() > 0  # not a blank image


def test_same_seed_same_output(two_runs, tiny_ckpt, tmp_path):
    (_, png_a, npz_a), (_, png_b, npz_b) = two_runs
    assert np.array_equal(np.load(npz_a)["images"], np.load(npz_b)["images"])
    assert png_a.read_bytes() == png_b.read_bytes()
    r = cli("--checkpoint", tiny_ckpt, "--device", "cpu", "--label", 3, "--num", 5, "--steps", 4, "--guidance", 2.0,
            "--seed", 12, "--out", tmp_path / "c.png", "--npz", tmp_path / "c.npz")
    assert r.returncode == 0, r.stderr
    assert not np.array_equal(np.load(tmp_path / "c.npz")["images"], np.load(npz_a)["images"])


@pytest.mark.parametrize("label", [10])
def test_bad_label(tiny_ckpt, tmp_path, label):
    r = cli("--checkpoint", tiny_ckpt, "--device", "cpu", "--label", label, "--steps", 2, "--out", tmp_path / "x.png")
    assert r.returncode != 0
    assert "--label must be in 0..9" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "x.png").exists()


def test_missing_checkpoint(tmp_path):
    r = cli("--checkpoint", tmp_path / "nope", "--device", "cpu", "--out", tmp_path / "x.png")
    assert r.returncode == 2 and "checkpoint not found" in r.stderr and "Traceback" not in r.stderr


def test_backends_draw_the_same_pictures(two_runs, tiny_ckpt, tmp_path):
    """The default (fastest agreeing) path and plain eager torch give the same images for a seed."""
    r_auto, _, npz_auto = two_runs[0]
    r = cli("--checkpoint", tiny_ckpt, "--device", "cpu", "--label", 3, "--num", 5, "--steps", 4, "--guidance", 2.0,
            "--seed", 11, "--out", tmp_path / "e.png", "--npz", tmp_path / "e.npz", "--backend", "eager")
    assert r.returncode == 0, r.stderr
    assert "eager torch" in r.stdout
    assert any(name in r_auto.stdout for name in ("onnxruntime", "torchscript", "eager"))
    a = np.load(npz_auto)["images"].astype(int)
    b = np.load(tmp_path / "e.npz")["images"].astype(int)
    assert np.abs(a - b).max() <= 1 and (a == b).mean() > 0.99  # fp32 paths: at most a rounding flip


def test_the_printed_sampler_follows_the_flags(two_runs, tiny_ckpt, tmp_path):
    r = cli("--checkpoint", tiny_ckpt, "--device", "cpu", "--label", 3, "--num", 5, "--steps", 4, "--guidance", 2.0,
            "--seed", 11, "--variance", "beta", "--out", tmp_path / "b.png", "--npz", tmp_path / "b.npz")
    assert r.returncode == 0, r.stderr
    assert "sigma_t^2 = beta_t," in r.stdout and "beta_tilde" not in r.stdout
    assert not np.array_equal(np.load(tmp_path / "b.npz")["images"], np.load(two_runs[0][2])["images"])
    r = cli("--checkpoint", tiny_ckpt, "--device", "cpu", "--num", 2, "--steps", 3, "--sampler", "ddim", "--eta", 0.5,
            "--out", tmp_path / "d.png")
    assert r.returncode == 0, r.stderr
    assert "DDIM" in r.stdout and "eta = 0.5" in r.stdout and "unconditional" in r.stdout and "sigma_t" not in r.stdout


def test_unknown_backend_is_refused(tiny_ckpt, tmp_path):
    r = cli("--checkpoint", tiny_ckpt, "--device", "cpu", "--backend", "tpu", "--out", tmp_path / "x.png")
    assert r.returncode == 2 and "invalid choice" in r.stderr and not (tmp_path / "x.png").exists()


# ---- a colour model: classes by name ----

@pytest.fixture(scope="module")
def colour_ckpt(tmp_path_factory):
    from test_views_colour import make_colour_checkpoint
    return make_colour_checkpoint(tmp_path_factory.mktemp("cli-colour") / "tiny-emoji")


def test_label_by_name_on_a_colour_model(colour_ckpt, tmp_path):
    r = cli("--checkpoint", colour_ckpt, "--device", "cpu", "--label", "Animals & Nature", "--num", 3, "--steps", 3,
            "--seed", 2, "--out", tmp_path / "g.png", "--npz", tmp_path / "g.npz")
    assert r.returncode == 0, r.stderr
    assert "label Animals & Nature" in r.stdout
    data = np.load(tmp_path / "g.npz")
    assert data["images"].shape == (3, 32, 32, 3) and data["labels"].tolist() == [2] * 3
    with Image.open(tmp_path / "g.png") as im:
        assert im.mode == "RGB" and im.size[0] >= 2 * 32
    by_index = cli("--checkpoint", colour_ckpt, "--device", "cpu", "--label", 2, "--num", 3, "--steps", 3, "--seed", 2,
                   "--out", tmp_path / "i.png", "--npz", tmp_path / "i.npz")
    folded = cli("--checkpoint", colour_ckpt, "--device", "cpu", "--label", "animals & nature", "--num", 3, "--steps",
                 3, "--seed", 2, "--out", tmp_path / "f.png", "--npz", tmp_path / "f.npz")
    for other in (by_index, folded):
        assert other.returncode == 0, other.stderr
    assert np.array_equal(np.load(tmp_path / "i.npz")["images"], data["images"])
    assert np.array_equal(np.load(tmp_path / "f.npz")["images"], data["images"])


@pytest.mark.parametrize("label,words", [("Dogs", "unknown --label 'Dogs'; this model's classes are: 0 = Smileys & "
                                                   "Emotion, 1 = People & Body, 2 = Animals & Nature"),
                                         ("9", "--label must be in 0..8 or a class name")])
def test_unknown_class_names_list_the_classes(colour_ckpt, tmp_path, label, words):
    r = cli("--checkpoint", colour_ckpt, "--device", "cpu", "--label", label, "--steps", 2, "--out", tmp_path / "x.png")
    assert r.returncode != 0 and words in r.stderr and "8 = Flags" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "x.png").exists()


def test_digit_names_are_their_indices(tiny_ckpt, tmp_path):
    r = cli("--checkpoint", tiny_ckpt, "--device", "cpu", "--label", "seven", "--steps", 2, "--out", tmp_path / "x.png")
    assert r.returncode != 0 and "unknown --label 'seven'" in r.stderr and "7 = 7" in r.stderr


@pytest.mark.slow
def test_figures_with_a_colour_model(colour_ckpt, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "explainer", "figures", "--checkpoint", str(colour_ckpt), "--device",
                        "cpu", "--out", str(tmp_path / "fig")], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    from test_views_colour import is_colour
    for name in ("reverse_10_steps.png", "full_noise_removal.png"):
        with Image.open(tmp_path / "fig" / name) as im:
            assert is_colour(np.asarray(im.convert("RGB")))
    with Image.open(tmp_path / "fig" / "reverse_walk.gif") as gif:
        assert gif.n_frames > 50 and gif.size[0] >= 5 * 64  # 9 emoji, 5 to a row, 2x
    captions = (tmp_path / "fig" / "captions.json").read_text()
    assert "labels Smileys & Emotion, People & Body" in captions and "Flags" in captions


def test_clipping_follows_the_card_unless_a_flag_says(colour_ckpt, tmp_path):
    """recommended_clip_x0 in config.json turns clipping on by default; --no-clip and --clip decide for themselves."""
    import json
    import shutil
    clipped = tmp_path / "clipped-model"
    shutil.copytree(colour_ckpt, clipped)
    config = json.loads((clipped / "config.json").read_text())
    (clipped / "config.json").write_text(json.dumps(config | {"recommended_clip_x0": True}))
    runs = {}
    for name, folder, flags in (("default", clipped, ()), ("off", clipped, ("--no-clip",)),
                                ("plain", colour_ckpt, ()), ("on", colour_ckpt, ("--clip",))):
        r = cli("--checkpoint", folder, "--device", "cpu", "--num", 2, "--steps", 5, "--seed", 3, *flags,
                "--out", tmp_path / f"{name}.png", "--npz", tmp_path / f"{name}.npz")
        assert r.returncode == 0, r.stderr
        runs[name] = (r.stdout, np.load(tmp_path / f"{name}.npz")["images"])
    assert "clipped" in runs["default"][0] and "clipped" in runs["on"][0]
    assert "clipped" not in runs["off"][0] and "clipped" not in runs["plain"][0]
    assert np.array_equal(runs["default"][1], runs["on"][1]) and np.array_equal(runs["off"][1], runs["plain"][1])


def test_sample_in_process(tiny_ckpt, tmp_path, capsys):
    """The command's steps without a subprocess's start-up: the label by index or by name, the walk it prints, the
    files it writes; a label out of range stops it before any sampling."""
    from explainer.__main__ import main

    npz = tmp_path / "x.npz"
    args = ["sample", "--checkpoint", str(tiny_ckpt), "--device", "cpu", "--num", "2", "--steps", "2",
            "--backend", "eager", "--out", str(tmp_path / "x.png"), "--npz", str(npz)]
    assert main(args + ["--label", "3", "--seed", "5"]) == 0
    out = capsys.readouterr().out
    assert "2 of 1000 steps" in out and "label 3" in out and "seed 5" in out and (tmp_path / "x.png").exists()
    assert np.load(npz)["labels"].tolist() == [3, 3]
    with pytest.raises(SystemExit, match="--label must be in 0..9"):
        main(args + ["--label", "10"])


@pytest.mark.parametrize("sampler, words", [("euler", "Euler (Karras et al. 2022"), ("euler-a", "Euler ancestral"),
                                            ("heun", "Heun (Karras et al. 2022"), ("dpmpp-2m", "DPM-Solver++(2M)")])
def test_every_sampler_by_name_at_its_own_spacing(tiny_ckpt, tmp_path, sampler, words):
    """``--sampler NAME --steps N`` alone gives the sampler at its authors' spacing (Karras levels here)."""
    r = cli("--checkpoint", tiny_ckpt, "--device", "cpu", "--num", 2, "--steps", 4, "--sampler", sampler,
            "--out", tmp_path / "s.png", "--npz", tmp_path / "s.npz")
    assert r.returncode == 0, r.stderr
    assert words in r.stdout and "4 Karras noise levels (rho = 7)" in r.stdout
    r2 = cli("--checkpoint", tiny_ckpt, "--device", "cpu", "--num", 2, "--steps", 4, "--sampler", sampler,
             "--spacing", "trailing", "--out", tmp_path / "t.png", "--npz", tmp_path / "t.npz")
    assert r2.returncode == 0, r2.stderr
    assert "4 of 1000 steps (trailing)" in r2.stdout
    assert not np.array_equal(np.load(tmp_path / "s.npz")["images"], np.load(tmp_path / "t.npz")["images"])


@pytest.mark.parametrize("args, words", [(("--sampler", "heun", "--steps", 1), "Heun needs at least 2 steps"),
                                         (("--sampler", "dpmpp-2m", "--steps", 1), "DPM++ 2M needs at least 2 steps"),
                                         (("--sampler", "dpm"), "invalid choice: 'dpm'")])
def test_a_sampler_that_cannot_run_is_refused_clearly(tiny_ckpt, tmp_path, args, words):
    r = cli("--checkpoint", tiny_ckpt, "--device", "cpu", "--num", 1, *args, "--out", tmp_path / "x.png")
    assert r.returncode != 0 and words in r.stderr and not (tmp_path / "x.png").exists()
