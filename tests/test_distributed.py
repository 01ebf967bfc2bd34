"""Training with several processes (torchrun, gloo on CPU): the step of one process on the whole batch, the
process count in the checkpoint, resume across a change in process count, and a clear error for a batch
that does not split evenly."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from explainer.__main__ import build_parser, train_config
from explainer.model.training import STATE, Trainer, World, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parent.parent


def flags(out, steps: int, batch: int = 8) -> list[str]:
    """`train` flags of a tiny run (the same config in one process and under torchrun)."""
    return ["--out", str(out), "--base-channels", "8", "--channel-mults", "1", "2", "--attention-levels", "1",
            "--batch-size", str(batch), "--warmup", "2", "--sample-every", "0", "--save-every", "2",
            "--device", "cpu", "--train-steps", str(steps), "--quiet"]


def train_here(out, steps: int) -> None:
    """One process, in this one."""
    train(train_config(build_parser().parse_args(["train", *flags(out, steps)])), progress=False)


def torchrun(args: list[str], nproc: int = 2) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node=nproc -m explainer train ARGS` on 127.0.0.1, one torch thread per process."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
           f"--master_port={port}", "-m", "explainer", "train", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def training(out) -> dict:
    return json.loads((Path(out) / "config.json").read_text())["training"]


def grads(state: dict, before: dict | None = None) -> torch.Tensor:
    """The last step's gradient of every parameter, from AdamW's first moment m = 0.9 m_prev + 0.1 g."""
    m = [state["opt"]["state"][i]["exp_avg"] for i in sorted(state["opt"]["state"])]
    if before is not None:
        m = [a - 0.9 * before["opt"]["state"][i]["exp_avg"] for i, a in zip(sorted(state["opt"]["state"]), m)]
    return torch.cat([x.reshape(-1) for x in m]) / 0.1


def test_world_from_torchrun_environment(monkeypatch):
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    assert World.from_env() == World() and World().launcher == "python -m explainer"
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    world = World.from_env()
    assert (world.rank, world.local_rank, world.size, world.local_size, world.is_main) == (3, 1, 4, 2, False)
    assert world.launcher == "torchrun --nnodes=2 --nproc_per_node=2 -m explainer"
    assert world.shard(8) == slice(6, 8) and world.device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="cannot be split evenly over 4 processes"):
        world.shard(10)


def test_rank_shards_make_up_the_batch_of_one_process(tmp_path):
    """Every rank draws the whole global batch and keeps its rows; together they are one process's batch."""
    cfg = train_config(build_parser().parse_args(["train", *flags(tmp_path / "run", 1)]))
    whole = Trainer(cfg, progress=False).batch()
    for rank in range(2):
        trainer = Trainer(cfg, progress=False)
        trainer.mine = World(rank=rank, size=2).shard(cfg.batch_size)  # a rank's rows, without a process group
        part = trainer.batch()
        for a, b in zip(part, whole):
            assert torch.equal(a, b[4 * rank:4 * rank + 4])


@pytest.mark.slow
def test_two_processes_take_the_step_of_one_process(tmp_path):
    """One optimiser step of 2 processes with half batches = one process with the whole batch."""
    r = torchrun(flags(tmp_path / "two", 1))
    assert r.returncode == 0, r.stderr
    train_here(tmp_path / "one", 1)
    two, one = (torch.load(tmp_path / d / STATE, weights_only=True) for d in ("two", "one"))
    for k, w in one["model"].items():
        torch.testing.assert_close(two["model"][k], w, rtol=1e-6, atol=1e-9, msg=k)
    g2, g1 = grads(two), grads(one)
    assert g1.norm() > 0 and (g2 - g1).norm() <= 1e-5 * g1.norm()  # DDP's average = the whole batch's gradient
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-6)  # the mean over the ranks is recorded
    assert torch.equal(two["gen"], one["gen"])  # the same draws
    assert training(tmp_path / "two")["world_size"] == 2 and training(tmp_path / "one")["world_size"] == 1
    assert training(tmp_path / "two")["command"].startswith("torchrun --nproc_per_node=2 -m explainer train ")


@pytest.mark.slow
def test_resume_across_a_change_in_process_count(tmp_path, capsys):
    """1 process to step 2, 2 processes to step 3, 1 process to step 4: each continues where the last stopped."""
    a, b = tmp_path / "a", tmp_path / "b"
    train_here(a, 2)
    shutil.copytree(a, b)
    at2 = torch.load(a / STATE, weights_only=True)
    r = torchrun(flags(a, 3))
    assert r.returncode == 0, r.stderr
    assert f"resumed from {a / STATE} at step 2" in r.stdout and r.stdout.count("resumed from") == 1  # rank 0 speaks
    assert (training(a)["world_size"], training(a)["steps"], training(a)["final"]) == (2, 3, True)
    train_here(b, 3)  # the same step in one process
    two, one = (torch.load(d / STATE, weights_only=True) for d in (a, b))
    g2, g1 = grads(two, at2), grads(one, at2)
    assert (g2 - g1).norm() <= 1e-5 * g1.norm()  # the gradient of a trained model, not only of the output layer
    assert two["losses"][:2] == at2["losses"] and two["losses"][2] == pytest.approx(one["losses"][2], rel=1e-6)

    capsys.readouterr()
    train_here(a, 4)  # the 2-process state, resumed by one process
    assert f"resumed from {a / STATE} at step 3" in capsys.readouterr().out
    assert (training(a)["world_size"], training(a)["steps"]) == (1, 4)
    after = torch.load(a / STATE, weights_only=True)
    assert len(after["losses"]) == 4 and after["losses"][:3] == two["losses"]
    train_here(b, 4)
    assert torch.equal(after["gen"], torch.load(b / STATE, weights_only=True)["gen"])  # batches drawn alike


def test_a_batch_that_does_not_split_evenly_is_refused(tmp_path):
    r = torchrun(flags(tmp_path / "run", 2, batch=7))
    assert r.returncode != 0
    assert "error: --batch-size 7 cannot be split evenly over 2 processes: use a multiple of 2" in r.stderr
    assert "training.py" not in r.stderr and not (tmp_path / "run").exists()  # no traceback of ours, no files
