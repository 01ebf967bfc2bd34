"""benchmarks/gpu_check.py's --device cpu dry run: the GPU check must not crash on a path that needs no GPU.

This runs every code path of the script that does not need CUDA (variant building, equivalence walks,
per-call and whole-walk timings, the diffusers reference, the table), so a GPU run fails only on CUDA.
"""
from __future__ import annotations

import argparse
import sys

import torch

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402


def test_gpu_check_dry_run_on_cpu(tiny_ckpt, capsys):
    threads = torch.get_num_threads()
    try:
        rc = gpu_check.main(["--device", "cpu", "--checkpoint", str(tiny_ckpt), "--steps", "4", "--n", "2",
                             "--equiv-steps", "3"])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "FAIL" not in out and "Traceback" not in out, out
    assert out.count("PASS") >= 10  # every variant's equivalence walks ran
    for row in ("eager fp32", "onnx", "torchscript", "walk graph (eager steps)", "diffusers reference"):
        assert row in out, row
    assert "none judged here" in out  # no target is claimed off the GPU


def test_the_table_judges_the_targets_only_where_they_apply(capsys):
    """The targets (<= 0.5 s a walk, >= 20x diffusers) are for 64 digits x 1000 steps on a CUDA GPU, nowhere else."""
    rows = {"eager fp32": (4.0, 2.0), "bf16 + graphs": (0.4, 0.8)}
    gpu_check.speed_table(rows, {}, 10.0, argparse.Namespace(n=64, steps=1000), torch.device("cuda"))
    out = capsys.readouterr().out
    assert ("fastest guided w=3 (128 per call): bf16 + graphs: 0.400 s (target <= 0.5 s: MET); 25.0x diffusers "
            "(target >= 20x: MET)") in out
    assert "bf16 + graphs: 0.800 s (target <= 0.5 s: MISSED); 12.5x diffusers (target >= 20x: MISSED)" in out
    gpu_check.speed_table(rows, {}, None, argparse.Namespace(n=2, steps=4), torch.device("cpu"))
    out = capsys.readouterr().out
    assert "none judged here" in out and "MET" not in out and "MISSED" not in out and "diffusers:" not in out
