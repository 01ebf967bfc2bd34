"""benchmarks/gpu_train.py's CPU dry run: the one GPU training call must not fail on a path that needs no GPU.

Tiny networks and a few steps of both models: the probe, the run (a step budget, so it ends on its last step
however busy the CPU is), the evaluation with each model's judge, and the files brought back (weights, config,
report; never the training state). How a time budget sizes the run is checked without running it.
"""
from __future__ import annotations

import argparse
import json
import sys

import pytest
import torch

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_train  # noqa: E402


@pytest.mark.slow
def test_gpu_train_dry_run_on_cpu(tmp_path):
    threads = torch.get_num_threads()
    try:
        rc = gpu_train.main(["--dry-run", "--steps", "6", "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    log = (tmp_path / "gpu_train.log").read_text()
    assert rc == 0, log[-3000:]
    for name in ("emoji-ddpm", "mnist-ddpm"):
        files = sorted(p.name for p in (tmp_path / name).iterdir())
        assert files == ["config.json", "eval.json", "model.safetensors"], files
        report = json.loads((tmp_path / name / "eval.json").read_text())["summary"]
        guidance = gpu_train.MODELS[name]["guidance"]
        assert f"acc_5steps_g{guidance}" in report
        # sampled as the shipped model's own report was, so that the two compare
        shipped = json.loads((ROOT / "checkpoints" / name / "eval.json").read_text())
        assert f"acc_100steps_g{guidance}" in shipped["summary"]
        sampling = json.loads((tmp_path / name / "eval.json").read_text())["sampling"]
        assert sampling["clip_x0"] == shipped["sampling"]["clip_x0"]
        assert json.loads((tmp_path / name / "config.json").read_text())["training"]["final"] is True
        assert f"{name}: shipped" in log  # compared with the shipped model's report
        assert json.loads((tmp_path / name / "config.json").read_text())["training"]["steps"] == 6
    assert "--max-minutes" not in log  # a step budget: no time cap
    assert len(list(tmp_path.rglob("*"))) <= 8 + 2  # the output stays small: at most 8 files (+ 2 folders)


def test_the_run_is_sized_by_steps_or_by_the_probed_rate():
    def args(steps=None, minutes=2.0):
        return argparse.Namespace(steps=steps, minutes=minutes, probe_steps=150)
    steps, cap, timeout = gpu_train.sized_run(args(steps=6), rate=0.01)  # a step budget, whatever the rate
    assert (steps, cap) == (6, []) and timeout >= 600
    steps, cap, timeout = gpu_train.sized_run(args(), rate=10.0)  # 10 steps/s x 120 s
    assert steps == 1200 and cap == ["--max-minutes", str(2.0 * 1.15)] and timeout == 60 * 2.0 * 1.5 + 120
    assert gpu_train.sized_run(args(), rate=0.1)[0] == 150  # never fewer than the probe's steps


def test_bigger_size_fits_what_one_call_brings_back():
    from explainer.model.unet import UNet, UNetConfig

    args = gpu_train.SIZES["bigger"]
    base, blocks = int(args[args.index("--base-channels") + 1]), int(args[args.index("--num-res-blocks") + 1])
    net = UNet(UNetConfig(image_size=32, in_channels=3, base_channels=base, channel_mults=(1, 2, 4),
                          num_res_blocks=blocks, attention_levels=(2,), num_heads=4, num_classes=9))
    assert 4 * sum(p.numel() for p in net.parameters()) < 15 * 2 ** 20  # float32 weights, under 16 MiB
