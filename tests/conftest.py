"""Shared fixtures: a tiny randomly initialised checkpoint, so tests never need the shipped model."""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Respect OMP_NUM_THREADS when set: when other processes share the cores, two torch threads per process
# can thrash on tiny tensors.
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or min(2, os.cpu_count() or 1)))
# App tests run on eager model.eps: a background ONNX export per test app would only add CPU load.
# tests/test_app_client.py::test_app_switches_to_the_fast_path turns it on for one app.
os.environ.setdefault("DDPM_EXPLAINER_FAST", "0")

from explainer.model.checkpoint import load_model, save_checkpoint  # noqa: E402
from explainer.model.unet import UNet, UNetConfig  # noqa: E402

def free_port() -> int:
    """A free TCP port on 127.0.0.1 for a test server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TINY = dict(image_size=28, in_channels=1, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
            attention_levels=(1,), num_heads=2, num_classes=10, groups=4)


def make_tiny_checkpoint(folder, seed: int = 0, schedule: str = "linear", num_steps: int = 1000, **overrides):
    """Write a tiny random (but not all-zero) conditional U-Net checkpoint to ``folder``."""
    torch.manual_seed(seed)
    net = UNet(UNetConfig(**{**TINY, **overrides}))
    with torch.no_grad():  # zero-initialised output layers would make eps identically 0: perturb them
        for p in net.parameters():
            p.add_(0.02 * torch.randn_like(p))
    names = [str(i) for i in range(net.config.num_classes)]
    return save_checkpoint(folder, net, {"name": schedule, "num_steps": num_steps, "zero_terminal_snr": False}, names,
                           {"data": {"source": "random"}, "training": {"steps": 0}})


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a whole test module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``).

    As the app runs with half the cores on a 2-core CPU (server.launch.configure_threads); the checks do not depend
    on the thread count, and tiny ops can stall with 2 OpenMP threads when other processes share the cores.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def exact_fp32():
    """fp32 really in fp32 for a CUDA equivalence test (cuDNN's default TF32 would differ by about 1e-3)."""
    from explainer.accel.fast import exact_fp32 as exact
    with exact():
        yield


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="session")
def tiny_model(tiny_ckpt):
    return load_model(tiny_ckpt, device="cpu")


class StepCounter:
    """Counts the reverse steps the walks of a view module compute, by wrapping its ``samplers.sample`` (so a test
    can see that Stop stopped them); ``steps`` is read from any thread."""

    def __init__(self, monkeypatch, module):
        import threading
        self.steps, self._lock, inner = 0, threading.Lock(), module.sample

        def counted(*args, **kwargs):
            for record in inner(*args, **kwargs):
                with self._lock:
                    self.steps += 1
                yield record
        monkeypatch.setattr(module, "sample", counted)
