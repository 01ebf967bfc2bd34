"""GPU check of explainer/accel/fast.py and explainer/accel/walk_graph.py: equivalence with eager, then speed.

    python benchmarks/gpu_check.py                 # on a machine with a CUDA GPU; a few minutes
    python benchmarks/gpu_check.py --no-compile    # skip the torch.compile variants (saves their compile time)
    python benchmarks/gpu_check.py --variants compile   # only those (and the eager baseline)
    bash benchmarks/gpu_session.sh                 # the CUDA tests and both checks in one go, with logs
    python benchmarks/gpu_check.py --device cpu --steps 20 --n 4 --no-diffusers   # dry run of this script
    python -m pytest tests/test_fast.py tests/test_walk_graph.py -k cuda    # the GPU unit tests

Needs only the repository (torch; diffusers for the reference row, optional: gpu_session.sh can install
it from a wheel fetched beforehand). No gradio. Variants: eps functions from fast.py run by
explainer.diffusion.samplers (eager, fp32/autocast/bf16 with CUDA graphs per call, optionally
torch.compile), and "walk graph" ones, where walk_graph.GraphedWalk captures the whole step (network,
guidance, update) as one graph. Steps:
1. every variant is checked against eager fp32 ``model.eps``: one call at several batch sizes with
   and without labels (relative error; eps functions only), and full 100-step DDPM walks with a
   fixed seed for several batch sizes, label settings and guidance scales (final-image differences);
2. a full 1000-step DDPM walk of 64 digits is timed for each variant, with classifier-free guidance 3
   (one batched call of 128 per step) and without (64 per step), target <= 0.5 s; noise comes from a
   generator on the GPU (one extra row shows a CPU-seeded walk, one a walk copying frames to the host);
3. diffusers' DDPMPipeline driving a UNet2DModel of similar size walks the same 64 digits x 1000 steps
   (unconditional: 64 per step, noise drawn on the GPU too), target ratio >= 20x.
Random weights time the same as the trained ones (same architecture); pass --checkpoint to use real ones.
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

from explainer.accel import fast  # noqa: E402
from explainer.model.checkpoint import load_model  # noqa: E402
from explainer.diffusion.respacing import make_chain, network_timesteps  # noqa: E402
from explainer.diffusion.samplers import run, sample  # noqa: E402
from explainer.model.unet import count_parameters  # noqa: E402
from speed import diffusers_unet, random_model  # noqa: E402

WALK_CASES = [(1, True, 3.0), (4, True, 1.0), (4, False, 1.0), (16, True, 0.0), (64, True, 3.0)]


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def build_variants(model, compile_: bool, only=()) -> dict:
    """name -> FastEps or Graphed (or the error text, when a variant cannot be built on this device).

    only: name parts; when given, just the variants whose names contain one (and the eager baseline).
    """
    makers = {"eager fp32": lambda: fast.eager_eps_fn(model)}
    if model.device.type == "cuda":
        makers.update({
            "fp32 + graphs": lambda: fast.cuda_eps_fn(model, precision="fp32"),
            "autocast bf16 + graphs": lambda: fast.cuda_eps_fn(model, precision="autocast"),
            "bf16 no graphs": lambda: fast.cuda_eps_fn(model, precision="bf16", graphs=False),
            "bf16 + graphs": lambda: fast.cuda_eps_fn(model, precision="bf16"),
        })
        if compile_:
            makers["bf16 + compile + graphs"] = lambda: fast.cuda_eps_fn(model, precision="bf16", compile=True)
        # explainer/accel/walk_graph.py: the whole step (network, guidance, update) as one graph, replayed per step
        makers["walk graph fp32"] = lambda: Graphed(model, "fp32", False)
        makers["walk graph bf16"] = lambda: Graphed(model, "bf16", False)
        if compile_:
            makers["walk graph bf16 + compile"] = lambda: Graphed(model, "bf16", True)
    else:
        makers.update({"onnx": lambda: fast.onnx_eps_fn(model), "torchscript": lambda: fast.torchscript_eps_fn(model),
                       "walk graph (eager steps)": lambda: Graphed(model, "fp32", False)})
    out = {}
    for name, make in makers.items():
        if only and name != "eager fp32" and not any(part in name for part in only):
            continue
        try:
            out[name] = make()
        except Exception as e:  # report and go on: one broken variant must not hide the others
            out[name] = f"{type(e).__name__}: {e}"
    return out


class Graphed:
    """A walk_graph variant: one GraphedWalk per (batch, steps, guidance, labels?), all sharing one network call."""

    def __init__(self, model, precision: str, compile_: bool):
        from explainer.accel.walk_graph import GraphedWalk
        self._make = GraphedWalk
        self.model, self.precision = model, "fp32" if precision == "fp32" else "bf16"
        if model.device.type == "cuda":
            run_at_steps = fast.CudaGraphEps(model, precision=precision, compile=compile_, graphs=False)._run
            self._call = lambda x, ab, y: run_at_steps(x, network_timesteps(ab, model.schedule, x), y)
        else:  # the --device cpu dry run: the same walk, eager steps
            self._call = model.eps
        self.walks = {}

    def walk(self, n, steps, guidance, labels, seed=None, generator=None, frames_every=0):
        key = (n, steps, guidance, labels is None)
        if key not in self.walks:
            self.walks[key] = self._make(self.model, make_chain(self.model.schedule, steps), n, labels=labels,
                                         guidance=guidance, eps_call=self._call)
        w = self.walks[key]
        if frames_every:
            return list(w.frames(every=frames_every, seed=seed, generator=generator))[-1][2]
        return w.run(seed=seed, generator=generator)


def walk(fn, model, n, steps, guidance, seed=0, generator=None, frames_every=0, labelled=True):
    labels = (torch.arange(n) % model.num_classes) if model.num_classes and labelled else None
    if isinstance(fn, Graphed):
        return fn.walk(n, steps, guidance, labels, seed=None if generator is not None else seed,
                       generator=generator, frames_every=frames_every)
    chain = make_chain(model.schedule, steps)
    shape = (n, model.channels, model.image_size, model.image_size)
    kw = dict(labels=labels, guidance=guidance, null_label=model.null_label, device=model.device)
    kw.update(generator=generator) if generator is not None else kw.update(seed=seed)
    if frames_every:
        last = None
        for _, _, rec in fast.host_frames(sample(fn, chain, shape, **kw), every=frames_every, attr="x_prev"):
            last = rec
        return last.x_prev
    return run(fn, chain, shape, **kw)


def equivalence(model, variants, batches, walk_steps) -> list[str]:
    """Lines of the equivalence report; failures are marked FAIL."""
    lines, ref_walks = [], {}
    for b, lab, g in WALK_CASES:
        if model.num_classes or not lab:
            ref_walks[(b, lab, g)] = walk(model.eps, model, b, walk_steps, g if lab else 1.0, seed=b, labelled=lab)
    for name, fn in variants.items():
        if name == "eager fp32":
            continue
        if isinstance(fn, str):
            lines.append(f"{name:26} FAIL (cannot build: {fn})")
            continue
        tol = fast.TOLERANCE[fn.precision]
        if not isinstance(fn, Graphed):
            try:
                err = fast.check_agrees(model, fn, tol, batches=batches)
                lines.append(f"{name:26} one call, batches {batches}, labels/none: rel err {err:.2e} <= {tol:.0e}  PASS")
            except Exception as e:
                lines.append(f"{name:26} one call FAIL: {e}")
                continue
        else:
            lines.append(f"{name:26} whole walks (same noise as samplers.run):")
        for (b, lab, g), ref in ref_walks.items():
            if "compile" in name and b != max(ref_walks)[0]:
                continue  # each new batch size costs the compiled variant a (re)compile: one walk is enough
            try:
                out = walk(fn, model, b, walk_steps, g if lab else 1.0, seed=b, labelled=lab)
            except Exception as e:
                lines.append(f"{'':26} walk b={b} FAIL: {type(e).__name__}: {e}")
                traceback.print_exc()
                continue
            d = (out - ref).abs()
            same_px = ((out.clamp(-1, 1) + 1) * 127.5).round().eq(((ref.clamp(-1, 1) + 1) * 127.5).round())
            ok = d.mean().item() <= (1e-4 if fn.precision == "fp32" else 2e-2)
            lines.append(f"{'':26} {walk_steps}-step walk b={b:<3} labels={'yes' if lab else 'no ':3} w={g:<4}: "
                         f"max|dx0| {d.max().item():.3f}  mean {d.mean().item():.4f}  "
                         f"same uint8 px {same_px.float().mean().item():6.1%}  {'PASS' if ok else 'FAIL'}")
    return lines


def time_it(f, device, repeats=1):
    f()  # warm-up: CUDA-graph capture, torch.compile, cuDNN autotune
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def per_call_ms(fn, model, batch, reps=50):
    dev = model.device
    x = torch.randn(batch, model.channels, model.image_size, model.image_size, device=dev)
    alpha_bar = float(model.schedule.alpha_bar_at(500))  # the noise level of step 500
    y = (torch.arange(batch, device=dev) % 10) if model.num_classes else None

    def go():
        for _ in range(reps):
            fn(x, alpha_bar, y)
    return 1000 * time_it(go, dev) / reps


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--n", type=int, default=64, help="digits per walk")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--equiv-steps", type=int, default=100)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--no-diffusers", action="store_true")
    ap.add_argument("--variants", default="", help="comma-separated name parts: time only the variants whose names "
                    "contain one (eager fp32, the baseline, always runs); e.g. --variants compile")
    return ap.parse_args(argv)


def call_speed(model, variants, n) -> None:
    """Step 2a: one network call per variant at a few batch sizes (the eps functions; walk graphs have none)."""
    dev = model.device
    print(f"\n== speed: one network call, ms (best of runs, {'CUDA-synchronised' if dev.type == 'cuda' else 'cpu'}) ==")
    call_batches = [1, 8, n, 2 * n]
    print(f"{'variant':26}" + "".join(f"{'B=' + str(b):>10}" for b in call_batches))
    for name, fn in variants.items():
        if isinstance(fn, (str, Graphed)):
            continue
        try:
            print(f"{name:26}" + "".join(f"{per_call_ms(fn, model, b, 20 if b > 64 else 50):10.3f}"
                                         for b in call_batches), flush=True)
        except Exception as e:
            print(f"{name:26} FAILED: {type(e).__name__}: {e}")


def walk_speed(model, variants, args, gen) -> tuple[dict, dict]:
    """Step 2b: a whole walk per variant, guided and not; then the fastest with CPU noise and with host frames."""
    dev = model.device
    print(f"\n== speed: full {args.steps}-step DDPM walk of {args.n} digits "
          f"(noise from a generator on {dev.type}) ==", flush=True)
    rows = {}
    for name, fn in variants.items():
        if isinstance(fn, str):
            continue
        try:
            g3 = time_it(lambda: walk(fn, model, args.n, args.steps, 3.0, generator=gen.manual_seed(0)), dev)
            g1 = time_it(lambda: walk(fn, model, args.n, args.steps, 1.0, generator=gen.manual_seed(0)), dev)
            rows[name] = (g3, g1)
            print(f"{name:44} guided {g3:.3f} s, w=1 {g1:.3f} s", flush=True)
        except Exception as e:
            print(f"{name:26} FAILED: {type(e).__name__}: {e}")
            traceback.print_exc()
    extra = {}
    best_name = min(rows, key=lambda k: rows[k][0]) if rows else None
    if best_name and dev.type == "cuda":
        fn = variants[best_name]
        extra[f"{best_name}, noise drawn on the CPU (seed)"] = time_it(
            lambda: walk(fn, model, args.n, args.steps, 3.0, seed=0), dev)
        extra[f"{best_name}, frames to host every 10"] = time_it(
            lambda: walk(fn, model, args.n, args.steps, 3.0, generator=gen.manual_seed(0), frames_every=10), dev)
    return rows, extra


def diffusers_speed(args, dev, gen) -> float | None:
    """Step 3: diffusers' DDPMPipeline on a UNet2DModel of similar size, the same walk unconditional; None if absent."""
    try:
        from diffusers import DDPMPipeline, DDPMScheduler
        unet = diffusers_unet(dev)
        pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000))
        pipe.set_progress_bar_config(disable=True)
        pipe(batch_size=args.n, num_inference_steps=3, generator=gen.manual_seed(0), output_type="np")
        diff_s = time_it(lambda: pipe(batch_size=args.n, num_inference_steps=args.steps,
                                      generator=gen.manual_seed(0), output_type="np"), dev)
        print(f"diffusers reference: DDPMPipeline + UNet2DModel ({count_parameters(unet):,} params), "
              f"fp32, {args.n} digits x {args.steps} steps, unconditional ({args.n} per step): {diff_s:.3f} s")
        return diff_s
    except Exception as e:
        print(f"diffusers reference FAILED: {type(e).__name__}: {e}")
        return None


def speed_table(rows, extra, diff_s, args, dev) -> None:
    """The walks side by side (x eager, x diffusers), and the targets judged only where they apply."""
    eager = rows.get("eager fp32")
    print(f"\n{'variant':44}{'guided w=3 s':>13}{'(128/call)' if args.n == 64 else '':>11}{'w=1 s':>9}"
          f"{'x eager':>9}{'x diffusers':>13}")
    for name, (g3, g1) in rows.items():
        xe = f"{eager[0] / g3:8.1f}x" if eager else ""
        xd = f"{diff_s / g3:12.1f}x" if diff_s else ""
        print(f"{name:44}{g3:13.3f}{'':11}{g1:9.3f}{xe:>9}{xd:>13}")
    for name, s in extra.items():
        xe = f"{eager[0] / s:8.1f}x" if eager else ""
        xd = f"{diff_s / s:12.1f}x" if diff_s else ""
        print(f"{name:44}{s:13.3f}{'':11}{'':>9}{xe:>9}{xd:>13}")
    if not rows:
        return
    targeted = dev.type == "cuda" and args.n == 64 and args.steps == 1000  # the setting the targets are for

    def verdict(label, col):
        name = min(rows, key=lambda k: rows[k][col])
        secs = rows[name][col]
        line = f"fastest {label}: {name}: {secs:.3f} s"
        if targeted:
            line += f" (target <= 0.5 s: {'MET' if secs <= 0.5 else 'MISSED'})"
        if diff_s:
            line += f"; {diff_s / secs:.1f}x diffusers"
            if targeted:
                line += f" (target >= 20x: {'MET' if diff_s / secs >= 20 else 'MISSED'})"
        print(line)
    if not targeted:
        print("\n(the targets are for a CUDA GPU, 64 digits, 1000 steps: none judged here)")
    print()
    verdict(f"guided w=3 ({2 * args.n} per call)", 0)
    verdict(f"w=1 ({args.n} per call, the work per step of diffusers' walk)", 1)


def main(argv=None):
    args = parse_args(argv)
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available; run this on a machine with a CUDA GPU, or with --device cpu for a dry run")
        return 2
    model = load_model(args.checkpoint, device=str(dev)) if args.checkpoint else random_model(device=str(dev))
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"device: {gpu} | torch {torch.__version__} | model {model.path} ({count_parameters(model.net):,} params)")
    t0 = time.perf_counter()
    # two compiled variants share the network's code: room for their recompiles (batch 1 / >1, labels / none)
    # so dynamo never silently falls back to eager mid-benchmark
    for knob in ("cache_size_limit", "recompile_limit"):
        if hasattr(torch._dynamo.config, knob):
            setattr(torch._dynamo.config, knob, max(32, getattr(torch._dynamo.config, knob)))
    variants = build_variants(model, not args.no_compile and dev.type == "cuda",
                              [v.strip() for v in args.variants.split(",") if v.strip()])
    print(f"auto choice: {fast.best_eps_fn(model).name}")

    print("\n== equivalence with eager fp32 (exact fp32: TF32 off for this part; timings keep the defaults) ==")
    batches = (1, 4, 64) if args.n >= 64 else (1, 4)
    with fast.exact_fp32():
        for line in equivalence(model, variants, batches, args.equiv_steps):
            print(line, flush=True)

    call_speed(model, variants, args.n)
    # every timed walk (ours and diffusers') draws its noise on the walk's device: a CPU generator would time
    # the host's random numbers (one row below shows what that costs)
    gen = torch.Generator(device=dev)
    rows, extra = walk_speed(model, variants, args, gen)
    diff_s = None if args.no_diffusers else diffusers_speed(args, dev, gen)
    speed_table(rows, extra, diff_s, args, dev)
    for name, fn in variants.items():
        errors = fn.capture_errors if isinstance(fn, fast.FastEps) else []
        if errors:
            print(f"{name}: CUDA-graph capture failed for {len(errors)} key(s), ran without graphs: {errors[0]}")
    if dev.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated(dev) / 2**20:.0f} MiB")
    print(f"total time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
