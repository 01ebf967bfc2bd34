"""benchmarks/gpu_check.py's --device cpu dry run: the GPU check must not crash on a path that needs no GPU.

This runs every code path of the script that does not need CUDA (variant building, equivalence walks,
per-call and whole-walk timings, the diffusers reference, the table), so a GPU run fails only on CUDA.
"""
from __future__ import annotations

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
