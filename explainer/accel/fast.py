"""Fast eps-model callables: the same function as ``model.eps``, computed by the fastest correct path.

``fast_eps_fn(model, backend=...)`` returns a ``FastEps``, a denoiser (``eps_fn(x_t, alpha_bar, labels) -> eps``,
samplers.py) that the samplers take unchanged; ``best_eps_fn(model)`` keeps the automatic choice for each model.
Every path is told the noise level and maps it to the network's training step as ``model.eps`` does
(``respacing.network_timesteps``). A ``FastEps`` declares ``name`` (the path chosen, and why faster ones were
skipped), ``backend`` and ``skipped``.

Paths, in the order they are tried on each kind of device (benchmarks/speed.py and benchmarks/gpu_check.py
time them; docs/performance.md lists the results):

- ``cuda``: a bf16 (whole-network, else autocast) channels_last copy of the network, optionally
  ``torch.compile``, and one CUDA graph per (batch size, labels present) key replayed from static input
  buffers; no host sync per call.
- ``onnx`` (CPU): the network exported once to ONNX (cached on disk, keyed by the weights' hash) and run
  with ONNX Runtime. onnxruntime is optional.
- ``torchscript`` (CPU): ``torch.jit.freeze(torch.jit.trace(...))``.
- ``eager``: ``model.eps`` itself under ``inference_mode``.

Each candidate is checked against ``model.eps`` on a small random batch before it is used (fp32 paths to
1e-3, bf16 to 5e-2, relative to the output scale); a path that fails to build or to agree is skipped,
and the next one is tried. Calls into one callable are serialised by a lock: two requests running at
once then interleave their steps instead of oversubscribing the cores (CPU) or clobbering the static
buffers of a CUDA graph (GPU). With one thread per call on CPU there is nothing to oversubscribe, so
those calls are not serialised: two requests then use two cores.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

from ..model.checkpoint import DiffusionModel
from ..diffusion.respacing import network_timesteps
from ..diffusion.samplers import Denoiser, StepRecord

BACKENDS = ("auto", "eager", "cuda", "onnx", "torchscript")
TOLERANCE = {"fp32": 1e-3, "bf16": 5e-2}  # max |fast - eager| / (1 + max |eager|)
ONNX_OPSET = 17


class FastPathError(RuntimeError):
    """A fast path cannot be built (missing backend, export failure, or disagreement with eager)."""


@dataclass(eq=False, repr=False)
class FastEps:
    """A denoiser computed by one path, and what describes it; calls are serialised by a lock (module docstring).

    fn: the path's own denoiser ``(x_t, alpha_bar, labels) -> eps``. name: the path in words (``description`` adds
    why faster paths were skipped). backend: one of ``BACKENDS`` (never "auto"). precision: "fp32" or "bf16",
    which sets the tolerance of ``check_agrees``. serialize: take the lock around every call.
    skipped: "path: reason" for each faster path that could not be built or did not agree.
    """

    fn: Denoiser
    name: str
    backend: str
    precision: str = "fp32"
    serialize: bool = True
    skipped: list[str] = field(default_factory=list)
    _lock: contextlib.AbstractContextManager = field(init=False, repr=False)

    def __post_init__(self):
        self._lock = threading.Lock() if self.serialize else contextlib.nullcontext()

    def __call__(self, x_t: torch.Tensor, alpha_bar, labels: torch.Tensor | None = None) -> torch.Tensor:
        """eps_theta(x_t) at noise level ``alpha_bar`` (a float, or one per row), as ``DiffusionModel.eps``."""
        with self._lock, torch.inference_mode():
            return self.fn(x_t, alpha_bar, labels)

    @property
    def description(self) -> str:
        """The path's name, and why faster ones were skipped (``fast_eps_fn`` fills ``skipped``)."""
        return self.name + (" (skipped " + "; ".join(self.skipped) + ")" if self.skipped else "")

    @property
    def capture_errors(self) -> list[str]:
        """CUDA-graph captures that failed (those keys run without a graph); empty for every other path."""
        return list(self.fn.capture_errors) if isinstance(self.fn, CudaGraphEps) else []

    def __repr__(self):
        return f"FastEps({self.name!r})"


# ----------------------------------------------------------------------------------------------- helpers

def _null_filled(model: DiffusionModel, labels: torch.Tensor | None, batch: int, device) -> torch.Tensor:
    """Labels as a tensor: the null label (unconditional) where None, which is what the U-Net does itself."""
    if labels is not None:
        return labels.to(device=device, dtype=torch.long)
    fill = model.null_label if model.null_label is not None else 0
    return torch.full((batch,), fill, dtype=torch.long, device=device)


def _net_call(model: DiffusionModel, net: torch.nn.Module) -> Callable:
    """net(x, t, labels) -> eps at training steps t [B], as ``model.eps`` calls its net (diffusers counts t from 0)."""
    if model.kind == "diffusers":
        return lambda x, t, labels: net(x, t - 1, return_dict=False)[0]
    if model.num_classes:
        return lambda x, t, labels: net(x, t, labels)
    return lambda x, t, labels: net(x, t, None)


def weights_hash(model: DiffusionModel) -> str:
    """sha256 of the weights, the architecture and the torch version (keys the ONNX cache)."""
    h = hashlib.sha256()
    h.update(json.dumps({"kind": model.kind, "config": model.config, "torch": torch.__version__,
                         "opset": ONNX_OPSET, "t": "float32"}, sort_keys=True, default=str).encode())
    for k, v in sorted(model.net.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def cache_dir() -> Path:
    """Where exported models are kept: $DDPM_EXPLAINER_CACHE, else a folder in the system temp dir."""
    return Path(os.environ.get("DDPM_EXPLAINER_CACHE") or Path(tempfile.gettempdir()) / "ddpm-explainer-cache")


def check_agrees(model: DiffusionModel, fn: FastEps, tol: float, batches=(1, 3), seed: int = 0) -> float:
    """Largest relative error of ``fn`` against ``model.eps`` on random inputs (a random noise level per row, in
    (0, 1)); FastPathError above ``tol``."""
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for b in batches:
        x = torch.randn(b, model.channels, model.image_size, model.image_size, generator=gen).to(model.device)
        alpha_bar = torch.rand(b, generator=gen, dtype=torch.float64).clamp(1e-4, 1 - 1e-4).to(model.device)
        label_sets = [None]
        if model.num_classes:
            label_sets.append(torch.randint(0, model.num_classes + 1, (b,), generator=gen).to(model.device))
        for labels in label_sets:
            with torch.inference_mode():
                ref = model.eps(x, alpha_bar, labels).float()
                out = fn(x, alpha_bar, labels).float()
            if out.shape != ref.shape:
                raise FastPathError(f"output shape {tuple(out.shape)} != eager {tuple(ref.shape)}")
            err = ((out - ref).abs().max() / (1.0 + ref.abs().max())).item()
            if not err <= tol:  # also catches NaN
                raise FastPathError(f"disagrees with eager: relative error {err:.2e} > {tol:.0e} (batch {b})")
            worst = max(worst, err)
    return worst


# ----------------------------------------------------------------------------------------------- eager

def eager_eps_fn(model: DiffusionModel) -> FastEps:
    return FastEps(model.eps, f"eager torch fp32 on {model.device.type}", "eager",
                   serialize=model.device.type == "cuda" or torch.get_num_threads() > 1)


# ----------------------------------------------------------------------------------------------- ONNX Runtime

class _TraceableEps(torch.nn.Module):
    """The network as a module with ``forward(x, t, labels) -> eps`` at training steps (``_net_call``), for
    ``torch.onnx.export`` and ``torch.jit.trace``."""

    def __init__(self, model: DiffusionModel, net: torch.nn.Module):
        super().__init__()
        self.net = net
        self._call = _net_call(model, net)

    def forward(self, x, t, labels):
        return self._call(x, t, labels)


def export_onnx(model: DiffusionModel, path: Path | None = None) -> Path:
    """Export the network (batch axis dynamic) to ``path``, or to the cache keyed by the weights' hash.

    Uses the TorchScript-based exporter (``dynamo=False``): it needs no extra package and handles this
    U-Net exactly. An existing cached file is reused.
    """
    path = Path(path) if path is not None else cache_dir() / f"eps-{weights_hash(model)}.onnx"
    if path.exists() and path.stat().st_size > 0:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    net = copy.deepcopy(model.net).cpu().float().eval()
    b, c, s = 2, model.channels, model.image_size
    args = (torch.zeros(b, c, s, s), torch.full((b,), 1.0), torch.zeros(b, dtype=torch.long))  # t: float32
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    import warnings
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(_TraceableEps(model, net), args, str(tmp), dynamo=False, opset_version=ONNX_OPSET,
                              input_names=["x", "t", "labels"], output_names=["eps"],
                              dynamic_axes={"x": {0: "batch"}, "t": {0: "batch"}, "labels": {0: "batch"},
                                            "eps": {0: "batch"}})
        os.replace(tmp, path)
    except Exception as e:  # the exporter raises many error types
        tmp.unlink(missing_ok=True)
        raise FastPathError(f"ONNX export failed: {type(e).__name__}: {e}") from e
    return path


def onnx_eps_fn(model: DiffusionModel, *, threads: int | None = None, path: Path | None = None) -> FastEps:
    """ONNX Runtime on CPU. ``threads``: intra-op threads (default: torch's current thread count)."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise FastPathError("onnxruntime is not installed (pip install onnxruntime)") from e
    onnx_path = export_onnx(model, path)
    threads = int(threads or torch.get_num_threads())
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle workers must not burn a core
    so.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    except Exception as first:  # a damaged cache file (re-export once) or an unsupported op
        if path is not None:
            raise FastPathError(f"ONNX Runtime cannot load {onnx_path}: {first}") from first
        onnx_path.unlink(missing_ok=True)
        onnx_path = export_onnx(model)
        try:
            session = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise FastPathError(f"ONNX Runtime cannot load {onnx_path}: {e}") from e
    inputs = {i.name for i in session.get_inputs()}  # an unconditional net has no labels input
    out_device = model.device

    def fn(x_t, alpha_bar, labels):
        b = x_t.shape[0]
        t = network_timesteps(alpha_bar, model.schedule, x_t)
        feeds = {"x": x_t.detach().to("cpu", torch.float32).contiguous().numpy(),
                 "t": t.detach().to("cpu", torch.float32).reshape(b).contiguous().numpy()}
        if "labels" in inputs:
            feeds["labels"] = _null_filled(model, labels, b, "cpu").reshape(b).contiguous().numpy()
        return torch.from_numpy(session.run(None, feeds)[0]).to(out_device)

    return FastEps(fn, f"onnxruntime {ort.__version__} CPU fp32, {threads} thread{'s' * (threads > 1)}", "onnx",
                   serialize=threads > 1)


# ----------------------------------------------------------------------------------------------- TorchScript

def torchscript_eps_fn(model: DiffusionModel) -> FastEps:
    """A frozen trace of the network (labels always given: None becomes the null label, as in the U-Net)."""
    net = copy.deepcopy(model.net).eval()
    wrapper = _TraceableEps(model, net).eval()
    b, c, s = 2, model.channels, model.image_size
    dev = model.device
    args = (torch.zeros(b, c, s, s, device=dev), torch.full((b,), 1.0, device=dev),
            torch.zeros(b, dtype=torch.long, device=dev))
    import warnings
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            traced = torch.jit.freeze(torch.jit.trace(wrapper, args, check_trace=False))
    except Exception as e:
        raise FastPathError(f"TorchScript trace failed: {type(e).__name__}: {e}") from e

    def fn(x_t, alpha_bar, labels):
        t = network_timesteps(alpha_bar, model.schedule, x_t)
        return traced(x_t, t, _null_filled(model, labels, x_t.shape[0], x_t.device))

    return FastEps(fn, f"torchscript (frozen trace) fp32 on {dev.type}", "torchscript",
                   serialize=dev.type == "cuda" or torch.get_num_threads() > 1)


# ----------------------------------------------------------------------------------------------- CUDA

PRECISIONS = ("bf16", "autocast", "fp32")


@contextlib.contextmanager
def exact_fp32():
    """fp32 convolutions and matrix products really in fp32 inside the block (restored after).

    On Ampere and newer GPUs PyTorch lets cuDNN run fp32 convolutions in TF32 by default (a 10-bit
    mantissa), so two fp32 CUDA paths that pick different kernels (channels_last, autotuned) differ at
    about 1e-3. Equivalence checks run under this; timings keep the defaults, as a user gets them.
    """
    conv, mm = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, mm


def bf16_net_call(model: DiffusionModel, net: torch.nn.Module) -> Callable:
    """Cast ``net`` (a private copy) to bfloat16 in place; return net(x, t, labels) -> bf16 eps.

    Whole-network bf16 launches fewer kernels than autocast (no per-layer casts). GroupNorm and the
    attention softmax still accumulate in fp32 inside their kernels. The sinusoidal time embedding is
    computed in fp32 (t up to 1000) and cast when it enters the time MLP.
    """
    net.to(torch.bfloat16)
    if model.kind != "diffusers":  # diffusers' UNet2DModel casts its time embedding itself
        net.time_mlp.register_forward_pre_hook(lambda m, args: tuple(a.to(torch.bfloat16) for a in args))
    call = _net_call(model, net)
    return lambda x, t, labels: call(x.to(torch.bfloat16), t, labels)


class CudaGraphEps:
    """bf16 + channels_last (+ optional torch.compile), one CUDA graph per (batch, labels?) key.

    precision: "bf16" (weights and activations in bf16), "autocast" (fp32 weights, bf16 autocast) or
    "fp32" (with PyTorch's defaults: TF32 convolutions on Ampere and newer; see ``exact_fp32``). A call
    copies its inputs into the key's static buffers, replays the graph, and returns a float32 copy of the
    static output (the next replay overwrites it). Nothing here reads a value back to the host, so steps
    queue up on the GPU without a sync. Capturing needs a few warm-up calls per
    key; with ``compile`` they also pay torch.compile's one-off compile for that batch size.
    """

    def __init__(self, model: DiffusionModel, *, precision: str = "bf16", compile: bool | str = False,
                 graphs: bool = True, warmup: int = 3):
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
        if not torch.cuda.is_available() or model.device.type != "cuda":
            raise FastPathError("CUDA path needs the model on a CUDA device")
        if precision != "fp32" and not torch.cuda.is_bf16_supported():
            raise FastPathError("this GPU has no bf16 support")
        # cuDNN autotuning (process-wide): each input shape is tuned once, in the warm-up before a capture
        torch.backends.cudnn.benchmark = True
        self.model = model
        self.precision = precision
        self.graphs = graphs
        self.warmup = warmup
        net = copy.deepcopy(model.net).eval().requires_grad_(False).to(memory_format=torch.channels_last)
        call = bf16_net_call(model, net) if precision == "bf16" else _net_call(model, net)
        if compile:
            # dynamic=None: the first batch size compiles static, a second one recompiles once with a dynamic
            # batch axis (not once per size, which would hit dynamo's recompile limit)
            call = torch.compile(call, mode=compile if isinstance(compile, str) else None)
        self._call = call
        self._graphs: dict = {}  # key -> (graph, static x, t, labels, out), or None where capture failed
        self.capture_errors: list[str] = []
        self.compiled = bool(compile)

    def _run(self, x, t, labels):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.precision == "autocast", cache_enabled=False):
            return self._call(x, t, labels)

    def _capture(self, key, x, t, labels):
        static_x = torch.empty_like(x, memory_format=torch.channels_last).copy_(x)
        static_t = t.clone()
        static_y = None if labels is None else labels.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up (and compile) outside the capture, as the CUDA-graph docs ask
            for _ in range(self.warmup):
                self._run(static_x, static_t, static_y)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()  # a private memory pool per graph: graphs replay in any order
        # thread_local: CUDA work of other threads (another request's sampler) does not void this capture
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            static_out = self._run(static_x, static_t, static_y)
        entry = (graph, static_x, static_t, static_y, static_out)
        self._graphs[key] = entry
        return entry

    def __call__(self, x_t, alpha_bar, labels=None):
        """eps at noise level ``alpha_bar``: the network at its training step of the same sigma (respacing.network_timesteps)."""
        dev = self.model.device
        x_t = x_t.to(dev, torch.float32)
        t = network_timesteps(alpha_bar, self.model.schedule, x_t)
        labels = None if labels is None else labels.to(dev, torch.long).reshape(-1)
        if not self.graphs:
            return self._run(x_t.contiguous(memory_format=torch.channels_last), t, labels).float().contiguous()
        key = (tuple(x_t.shape), labels is None)
        entry = self._graphs.get(key)
        if entry is None and key not in self._graphs:
            try:
                entry = self._capture(key, x_t, t, labels)
            except RuntimeError as e:  # capture failed: this key runs without a graph from now on
                self._graphs[key] = None
                self.capture_errors.append(f"{key}: {e}")
        if entry is None:
            return self._run(x_t.contiguous(memory_format=torch.channels_last), t, labels).float().contiguous()
        entry[1].copy_(x_t)  # (right after a capture the buffers hold these values already; cheap)
        entry[2].copy_(t)
        if labels is not None:
            entry[3].copy_(labels)
        entry[0].replay()  # also after a capture: capturing records the kernels without running them
        return entry[4].to(torch.float32, memory_format=torch.contiguous_format, copy=True)


def cuda_eps_fn(model: DiffusionModel, *, precision: str = "bf16", compile: bool | str = False,
                graphs: bool = True) -> FastEps:
    impl = CudaGraphEps(model, precision=precision, compile=compile, graphs=graphs)
    parts = [{"bf16": "bf16 weights", "autocast": "bf16 autocast", "fp32": "fp32"}[precision], "channels_last"]
    if compile:
        parts.append("torch.compile")
    if graphs:
        parts.append("CUDA graphs")
    return FastEps(impl, "cuda: " + " + ".join(parts), "cuda", "fp32" if precision == "fp32" else "bf16")


# ----------------------------------------------------------------------------------------------- choosing

def _candidates(model: DiffusionModel, backend: str, compile, threads) -> list[tuple[str, Callable[[], FastEps]]]:
    makers = {"cuda": lambda: cuda_eps_fn(model, precision="bf16", compile=compile),
              "cuda-autocast": lambda: cuda_eps_fn(model, precision="autocast", compile=compile),
              "onnx": lambda: onnx_eps_fn(model, threads=threads),
              "torchscript": lambda: torchscript_eps_fn(model),
              "eager": lambda: eager_eps_fn(model)}
    if backend == "auto":
        order = ["cuda", "cuda-autocast", "eager"] if model.device.type == "cuda" else ["onnx", "torchscript", "eager"]
    elif backend == "cuda":
        order = ["cuda", "cuda-autocast", "eager"]
    else:
        order = [backend] + (["eager"] if backend != "eager" else [])
    return [(name, makers[name]) for name in order]


def fast_eps_fn(model: DiffusionModel, *, backend: str = "auto", compile: bool | str = False,
                threads: int | None = None, verify: bool = True) -> FastEps:
    """The fastest correct eps function for ``model``; falls back (with the reason in ``.name``) to eager.

    backend: "auto" (cuda on a GPU; onnx, then torchscript on CPU), or one of "cuda", "onnx",
    "torchscript", "eager" (a named one that cannot be built falls back to eager).
    compile: torch.compile on the CUDA path (True, or a torch.compile mode); its compile time is paid at
    the first call, and once more at a second batch size (which makes the batch axis dynamic). threads: ONNX Runtime intra-op threads.
    verify: check the path against ``model.eps`` before returning it (cheap; keep it on).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    skipped = []
    for name, make in _candidates(model, backend, compile, threads):
        try:
            fn = make()
            if verify and name != "eager":
                check_agrees(model, fn, TOLERANCE[fn.precision])
        except FastPathError as e:
            skipped.append(f"{name}: {e}")
            continue
        except Exception as e:  # an unexpected failure in a fast path must never break sampling
            skipped.append(f"{name}: {type(e).__name__}: {e}")
            continue
        fn.skipped = list(skipped)
        return fn
    raise RuntimeError("no eps path could be built: " + "; ".join(skipped))  # eager never fails to build


_BEST_LOCK = threading.Lock()


def best_eps_fn(model: DiffusionModel, **kwargs) -> FastEps:
    """``fast_eps_fn(model, **kwargs)``, built once per model (and per kwargs).

    The paths are kept in the model's declared ``DiffusionModel.fast_paths``, so they go away with the
    model. Any other object that only looks like a model (a test stand-in) gets a fresh build, not kept.
    """
    key = ("best_eps_fn",) + tuple(sorted(kwargs.items()))
    with _BEST_LOCK:
        built = model.fast_paths if isinstance(model, DiffusionModel) else {}
        if key not in built:
            built[key] = fast_eps_fn(model, **kwargs)
        return built[key]


# ----------------------------------------------------------------------------------------------- frames

def async_to_host(src: torch.Tensor, record: bool = True) -> tuple[torch.Tensor, "torch.cuda.Event | None"]:
    """A CPU copy of ``src``: on CUDA into pinned memory without blocking, with an event recorded after it
    (``record=False``: none; a later event on the same stream covers it); on CPU a plain clone and None."""
    if src.device.type != "cuda":
        return src.detach().clone(), None
    dst = torch.empty(src.shape, dtype=src.dtype, pin_memory=True)
    dst.copy_(src, non_blocking=True)
    done = None
    if record:
        done = torch.cuda.Event()
        done.record()
    return dst, done


def host_frames(records: Iterator[StepRecord], every: int = 10, attr: str = "x0_hat") -> Iterator[tuple[int, torch.Tensor, StepRecord]]:
    """Every ``every`` steps (and at the last), ``(index, CPU copy of record.<attr>, record)``.

    On CUDA the copy goes to pinned memory without blocking, and a frame is yielded only once its copy
    has finished, so the GPU keeps running ahead of the consumer. On CPU the frame is a plain clone.
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    pending: list = []
    last = None

    def take(rec):
        frame, done = async_to_host(getattr(rec, attr))
        return (rec.index, frame, rec, done)

    for rec in records:
        last = rec
        if rec.index % every == 0:
            pending.append(take(rec))
        while pending and (pending[0][3] is None or pending[0][3].query()):
            i, frame, r, _ = pending.pop(0)
            yield i, frame, r
    if last is not None and (not pending or pending[-1][0] != last.index) and last.index % every != 0:
        pending.append(take(last))
    for i, frame, r, done in pending:
        if done is not None:
            done.synchronize()
        yield i, frame, r
