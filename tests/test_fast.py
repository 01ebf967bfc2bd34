"""Fast eps paths (explainer/accel/fast.py) compute the same function as eager ``model.eps``.

Each path is compared with the eager network directly and through full sampler runs with a fixed seed
(labels present and absent, several batch sizes and guidance scales). Fallbacks are forced by hiding
onnxruntime, by asking for CUDA on a CPU-only machine, and by a deliberately wrong fast path.
GPU tests run only where CUDA is present.
"""
from __future__ import annotations

import dataclasses
import gc
import sys
import threading
import weakref

import numpy as np
import pytest
import torch

from conftest import make_tiny_checkpoint
from explainer.accel import fast
from explainer.model.checkpoint import load_model
from explainer.diffusion.respacing import make_chain, network_timesteps
from explainer.diffusion.samplers import run

try:
    import onnxruntime  # noqa: F401
    HAVE_ORT = True
except ImportError:
    HAVE_ORT = False

CPU_BACKENDS = ["eager", "torchscript"] + (["onnx"] if HAVE_ORT else [])
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # (conftest.py) before the module's paths are built


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DDPM_EXPLAINER_CACHE", str(tmp_path_factory.getbasetemp() / "onnx-cache"))


@pytest.fixture(scope="module")
def paths(tiny_model):
    return {b: fast.fast_eps_fn(tiny_model, backend=b) for b in CPU_BACKENDS}


def _inputs(model, b, seed=0, labels=True, steps=False):
    """x, a noise level per row (the levels of random training steps; ``steps``: those steps instead), labels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, model.channels, model.image_size, model.image_size, generator=g)
    t = torch.randint(1, model.schedule.T + 1, (b,), generator=g)
    y = torch.randint(0, model.num_classes + 1, (b,), generator=g) if labels else None
    return x, t if steps else torch.from_numpy(model.schedule.alpha_bars[t.numpy() - 1]), y


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_backend_is_the_one_asked_for(paths, backend):
    assert paths[backend].backend == backend
    assert "skipped" not in paths[backend].description


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("b", [1, 2, 5])
@pytest.mark.parametrize("labels", [True, False])
def test_one_call_matches_eager(tiny_model, paths, backend, b, labels):
    x, t, y = _inputs(tiny_model, b, seed=b, labels=labels)
    with torch.inference_mode():
        ref = tiny_model.eps(x, t, y)
    out = paths[backend](x, t, y)
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert ref.abs().max() > 1e-3  # the tiny model's output is not trivially zero
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_a_level_between_steps_runs_the_network_at_its_fractional_step(tiny_model, paths, backend):
    """Every path is told a noise level and maps it as model.eps does: to its training step of the same sigma,
    interpolated in log sigma between the two steps around it (brute force below)."""
    sch = tiny_model.schedule
    log_sigma = 0.5 * (np.log1p(-sch.alpha_bars) - np.log(sch.alpha_bars))
    for level in (float(np.sqrt(sch.alpha_bars[99] * sch.alpha_bars[100])), 0.3, 1e-6):  # between steps, beyond T
        target = 0.5 * (np.log1p(-level) - np.log(level))
        k = int(np.searchsorted(log_sigma, target)) - 1  # log_sigma[k] < target <= log_sigma[k + 1]
        step = sch.T if k >= sch.T - 1 else k + 1 + (target - log_sigma[k]) / (log_sigma[k + 1] - log_sigma[k])
        x, _, y = _inputs(tiny_model, 2)
        with torch.inference_mode():
            ref = tiny_model.net(x, torch.full((2,), float(step)), y)
        torch.testing.assert_close(paths[backend](x, level, y), ref, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("backend", [b for b in CPU_BACKENDS if b != "eager"])
@pytest.mark.parametrize("b,labels,guidance", [(1, True, 3.0), (3, True, 0.0), (3, True, 1.0), (2, False, 1.0),
                                               (4, True, 7.5)])
def test_sampler_run_matches_eager(tiny_model, paths, backend, b, labels, guidance):
    chain = make_chain(tiny_model.schedule, 15)
    y = torch.arange(b) % 10 if labels else None
    kw = dict(labels=y, guidance=guidance, null_label=tiny_model.null_label, seed=123)
    ref = run(tiny_model.eps, chain, (b, 1, 28, 28), **kw)
    out = run(paths[backend], chain, (b, 1, 28, 28), **kw)
    assert not torch.equal(ref, run(tiny_model.eps, chain, (b, 1, 28, 28), **{**kw, "seed": 124}))
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_auto_picks_a_verified_fast_path_on_cpu(tiny_model):
    fn = fast.fast_eps_fn(tiny_model)
    assert fn.backend == ("onnx" if HAVE_ORT else "torchscript")
    assert fn.skipped == []


def test_fallback_when_onnxruntime_is_missing(tiny_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` raise ImportError
    fn = fast.fast_eps_fn(tiny_model, backend="onnx")
    assert fn.backend == "eager" and "onnxruntime is not installed" in fn.description
    auto = fast.fast_eps_fn(tiny_model)
    assert auto.backend == "torchscript" and "onnx" in auto.skipped[0]


@pytest.mark.skipif(not HAVE_ORT, reason="onnxruntime not installed")
def test_fallback_when_the_onnx_exporter_fails(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("DDPM_EXPLAINER_CACHE", str(tmp_path / "empty-cache"))  # forces a fresh export
    monkeypatch.setitem(sys.modules, "onnx", None)  # torch.onnx.export needs the onnx package
    fn = fast.fast_eps_fn(tiny_model, backend="onnx")
    assert fn.backend == "eager" and "ONNX export failed" in fn.description
    assert not list((tmp_path / "empty-cache").glob("*"))  # no half-written file left in the cache


def test_fallback_when_cuda_is_missing(tiny_model):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    fn = fast.fast_eps_fn(tiny_model, backend="cuda")
    assert fn.backend == "eager" and "cuda" in fn.description
    x, t, y = _inputs(tiny_model, 2)
    torch.testing.assert_close(fn(x, t, y), tiny_model.eps(x, t, y))


def test_a_wrong_fast_path_is_rejected(tiny_model, monkeypatch):
    def wrong(model):
        return fast.FastEps(lambda x, alpha_bar, y: model.eps(x, alpha_bar, y) + 0.01, "off by 0.01", "torchscript")
    monkeypatch.setattr(fast, "torchscript_eps_fn", wrong)
    fn = fast.fast_eps_fn(tiny_model, backend="torchscript")
    assert fn.backend == "eager" and "disagrees with eager" in fn.description
    with pytest.raises(fast.FastPathError):
        fast.check_agrees(tiny_model, wrong(tiny_model), 1e-3)


def test_a_failing_fast_path_falls_back(tiny_model, monkeypatch):
    def broken(model):
        raise RuntimeError("boom")
    monkeypatch.setattr(fast, "torchscript_eps_fn", broken)
    fn = fast.fast_eps_fn(tiny_model, backend="torchscript")
    assert fn.backend == "eager" and "boom" in fn.description


def test_unknown_backend_is_a_clear_error(tiny_model):
    with pytest.raises(ValueError, match="unknown backend"):
        fast.fast_eps_fn(tiny_model, backend="tpu")


def test_best_eps_fn_is_cached_per_model(tiny_model, tmp_path):
    a = fast.best_eps_fn(tiny_model)
    assert fast.best_eps_fn(tiny_model) is a
    other = load_model(make_tiny_checkpoint(tmp_path / "other", seed=1), device="cpu")
    assert fast.best_eps_fn(other) is not a
    assert a.name and isinstance(a.name, str)


def test_best_eps_fn_is_kept_on_the_model_and_leaves_with_it(tmp_path):
    model = load_model(make_tiny_checkpoint(tmp_path / "m", seed=3), device="cpu")
    fn = fast.best_eps_fn(model, backend="eager")
    assert list(model.fast_paths.values()) == [fn]  # a declared field of DiffusionModel
    assert dataclasses.replace(model, path="elsewhere").fast_paths == {}  # a copy builds its own
    assert fn.skipped == [] and fn.capture_errors == []  # declared FastEps fields (no CUDA graphs on CPU)
    gone = weakref.ref(model)
    del model, fn
    gc.collect()
    assert gone() is None  # the built path does not keep its model alive


@pytest.mark.skipif(not HAVE_ORT, reason="onnxruntime not installed")
def test_onnx_cache_is_keyed_by_weights(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("DDPM_EXPLAINER_CACHE", str(tmp_path / "cache"))
    p1 = fast.export_onnx(tiny_model)
    mtime = p1.stat().st_mtime_ns
    assert fast.export_onnx(tiny_model) == p1 and p1.stat().st_mtime_ns == mtime  # reused, not re-exported
    other = load_model(make_tiny_checkpoint(tmp_path / "other", seed=2), device="cpu")
    assert fast.export_onnx(other) != p1
    p1.write_bytes(b"not an onnx file")  # a damaged cache entry is re-exported
    fn = fast.fast_eps_fn(tiny_model, backend="onnx")
    assert fn.backend == "onnx"
    x, t, y = _inputs(tiny_model, 3)
    torch.testing.assert_close(fn(x, t, y), tiny_model.eps(x, t, y), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("backend", [b for b in CPU_BACKENDS if b != "eager"])
def test_unconditional_model(tmp_path, backend):
    model = load_model(make_tiny_checkpoint(tmp_path / "uncond", seed=3, num_classes=0), device="cpu")
    fn = fast.fast_eps_fn(model, backend=backend)
    assert fn.backend == backend
    x, t, _ = _inputs(model, 3, labels=False)
    torch.testing.assert_close(fn(x, t, None), model.eps(x, t, None), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("backend", [b for b in CPU_BACKENDS if b != "eager"] + (["onnx-2"] if HAVE_ORT else []))
def test_concurrent_calls_give_the_sequential_results(tiny_model, paths, backend):
    if backend == "onnx-2":  # two ORT threads per call: calls are serialised by the lock
        paths = {backend: fast.onnx_eps_fn(tiny_model, threads=2)}
        assert paths[backend].serialize
    else:
        assert not paths[backend].serialize  # one thread per call: nothing to oversubscribe, run in parallel
    inputs = [_inputs(tiny_model, b, seed=10 + b) for b in (1, 2, 3, 4)]
    expected = [tiny_model.eps(*args) for args in inputs]
    results = [None] * len(inputs)

    def work(i):
        for _ in range(3):
            results[i] = paths[backend](*inputs[i])
    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for out, ref in zip(results, expected):
        torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)


def test_host_frames_every_k_and_last(tiny_model):
    from explainer.diffusion.samplers import sample
    chain = make_chain(tiny_model.schedule, 12)
    records = list(sample(tiny_model.eps, chain, (2, 1, 28, 28), seed=0))
    frames = list(fast.host_frames(iter(records), every=5, attr="x_prev"))
    assert [i for i, _, _ in frames] == [0, 5, 10, 11]
    for i, frame, rec in frames:
        assert frame.device.type == "cpu" and torch.equal(frame, records[i].x_prev) and rec is records[i]
    with pytest.raises(ValueError):
        list(fast.host_frames(iter(records), every=0))


# ------------------------------------------------------------------------------------------------ GPU

@pytest.fixture(scope="module")
def cuda_model(tiny_ckpt):
    return load_model(tiny_ckpt, device="cuda")


@needs_cuda
def test_cuda_path_matches_eager_within_bf16(cuda_model, exact_fp32):
    fn = fast.fast_eps_fn(cuda_model, backend="cuda")
    assert fn.backend == "cuda", fn.name
    for b, labels, guidance in [(1, True, 3.0), (4, True, 1.0), (3, False, 1.0), (8, True, 0.0)]:
        chain = make_chain(cuda_model.schedule, 25)
        y = torch.arange(b) % 10 if labels else None
        kw = dict(labels=y, guidance=guidance, null_label=cuda_model.null_label, seed=5, device="cuda")
        ref = run(cuda_model.eps, chain, (b, 1, 28, 28), **kw)
        out = run(fn, chain, (b, 1, 28, 28), **kw)
        other_seed = run(cuda_model.eps, chain, (b, 1, 28, 28), **{**kw, "seed": 6})
        err = (out - ref).abs().mean().item()
        assert err < 1e-2 and err < 0.05 * (other_seed - ref).abs().mean().item()


@needs_cuda
def test_cuda_graph_outputs_are_not_aliased(cuda_model, exact_fp32):
    fn = fast.fast_eps_fn(cuda_model, backend="cuda")
    a_in = [t.cuda() if t is not None else None for t in _inputs(cuda_model, 4, seed=1)]
    b_in = [t.cuda() if t is not None else None for t in _inputs(cuda_model, 4, seed=2)]
    a = fn(*a_in)
    b = fn(*b_in)  # same graph key: replays into the same static output
    assert not torch.equal(a, b)
    torch.testing.assert_close(a, fn(*a_in))
    assert (a - cuda_model.eps(*a_in)).abs().max() < 5e-2


def test_exact_fp32_turns_tf32_off_and_restores_it():
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        with pytest.raises(KeyError):
            with fast.exact_fp32():
                assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
                raise KeyError("restored even when the block fails")
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def test_bf16_network_copy_matches_within_bf16(tiny_model):
    """The whole-network bf16 cast used on the GPU path, checked on CPU (bf16 kernels exist there too)."""
    import copy
    call = fast.bf16_net_call(tiny_model, copy.deepcopy(tiny_model.net))
    at_level = lambda x, alpha_bar, y: call(x, network_timesteps(alpha_bar, tiny_model.schedule, x), y).float()
    wrapped = fast.FastEps(at_level, "bf16 cpu", "test", "bf16")
    assert fast.check_agrees(tiny_model, wrapped, fast.TOLERANCE["bf16"]) > 1e-4  # really bf16, really close
    assert next(tiny_model.net.parameters()).dtype == torch.float32  # the model itself is untouched


def test_gpu_network_call_traces_as_one_graph(tiny_model):
    """torch.compile on the GPU path needs the bf16 network call to trace whole: no graph break, no host sync."""
    import copy
    torch._dynamo.reset()
    call = fast.bf16_net_call(tiny_model, copy.deepcopy(tiny_model.net))
    x, t, y = _inputs(tiny_model, 3, seed=0, steps=True)
    with torch.inference_mode():
        explained = torch._dynamo.explain(call)(x, t, y)
        unconditional = torch._dynamo.explain(call)(x, t, None)
    torch._dynamo.reset()
    assert explained.graph_count == 1 and explained.graph_break_count == 0, explained.break_reasons
    assert unconditional.graph_count == 1 and unconditional.graph_break_count == 0, unconditional.break_reasons
