"""One-shot GPU check of explainer/fast.py: equivalence with eager, then speed against diffusers.

    python benchmarks/gpu_check.py                 # on a CUDA machine; a few minutes on an H100
    python benchmarks/gpu_check.py --no-compile    # skip the torch.compile variant (saves its compile time)
    python benchmarks/gpu_check.py --device cpu --steps 20 --n 4 --no-diffusers   # dry run of this script
    python -m pytest tests/test_fast.py -k cuda    # the GPU unit tests, same machine

Needs only the repo (torch; diffusers for the reference row). No gradio. Steps:
1. every fast variant is checked against eager fp32 ``model.eps``: one call at several batch sizes with
   and without labels (relative error), and full 100-step DDPM walks through explainer.samplers with a
   fixed seed for several batch sizes, label settings and guidance scales (final-image differences);
2. a full 1000-step DDPM walk of 64 digits is timed for each variant, with classifier-free guidance 3
   (one batched call of 128 per step) and without (64 per step), target <= 0.5 s;
3. diffusers' DDPMPipeline driving a UNet2DModel of similar size walks the same 64 digits x 1000 steps
   (unconditional: 64 per step), target ratio >= 20x.
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

from explainer import fast  # noqa: E402
from explainer.checkpoint import load_model  # noqa: E402
from explainer.respacing import make_chain  # noqa: E402
from explainer.samplers import run, sample  # noqa: E402
from explainer.unet import count_parameters  # noqa: E402
from speed import diffusers_unet, random_model  # noqa: E402

WALK_CASES = [(1, True, 3.0), (4, True, 1.0), (4, False, 1.0), (16, True, 0.0), (64, True, 3.0)]


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def build_variants(model, compile_: bool) -> dict:
    """name -> FastEps (or the error text, when a variant cannot be built here)."""
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
    else:
        makers.update({"onnx": lambda: fast.onnx_eps_fn(model), "torchscript": lambda: fast.torchscript_eps_fn(model)})
    out = {}
    for name, make in makers.items():
        try:
            out[name] = make()
        except Exception as e:  # report and go on: one broken variant must not hide the others
            out[name] = f"{type(e).__name__}: {e}"
    return out


def walk(fn, model, n, steps, guidance, seed=0, generator=None, frames_every=0):
    chain = make_chain(model.schedule, steps)
    labels = (torch.arange(n) % model.num_classes) if model.num_classes else None
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
            ref_walks[(b, lab, g)] = walk(model.eps, model, b, walk_steps, g if lab else 1.0, seed=b)
    for name, fn in variants.items():
        if name == "eager fp32":
            continue
        if isinstance(fn, str):
            lines.append(f"{name:26} FAIL (cannot build: {fn})")
            continue
        tol = fast.TOLERANCE[fn.precision]
        try:
            err = fast.check_agrees(model, fn, tol, batches=batches)
            lines.append(f"{name:26} one call, batches {batches}, labels/none: rel err {err:.2e} <= {tol:.0e}  PASS")
        except Exception as e:
            lines.append(f"{name:26} one call FAIL: {e}")
            continue
        for (b, lab, g), ref in ref_walks.items():
            if "compile" in name and b != max(ref_walks)[0]:
                continue  # each new batch size costs the compiled variant a (re)compile: one walk is enough
            out = walk(fn, model, b, walk_steps, g if lab else 1.0, seed=b)
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
    t = torch.full((batch,), 500, device=dev, dtype=torch.long)
    y = (torch.arange(batch, device=dev) % 10) if model.num_classes else None

    def go():
        for _ in range(reps):
            fn(x, t, y)
    return 1000 * time_it(go, dev) / reps


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--n", type=int, default=64, help="digits per walk")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--equiv-steps", type=int, default=100)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--no-diffusers", action="store_true")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available here; run on a GPU machine, or --device cpu for a dry run")
        return 2
    model = load_model(args.checkpoint, device=str(dev)) if args.checkpoint else random_model(device=str(dev))
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"device: {gpu} | torch {torch.__version__} | model {model.path} ({count_parameters(model.net):,} params)")
    t0 = time.perf_counter()
    variants = build_variants(model, not args.no_compile and dev.type == "cuda")
    print(f"auto choice: {fast.best_eps_fn(model).name}")

    print("\n== equivalence with eager fp32 ==")
    batches = (1, 4, 64) if args.n >= 64 else (1, 4)
    for line in equivalence(model, variants, batches, args.equiv_steps):
        print(line, flush=True)

    print(f"\n== speed: one network call, ms (best of runs, {'CUDA-synchronised' if dev.type == 'cuda' else 'cpu'}) ==")
    call_batches = [1, 8, args.n, 2 * args.n]
    print(f"{'variant':26}" + "".join(f"{'B=' + str(b):>10}" for b in call_batches))
    for name, fn in variants.items():
        if isinstance(fn, str):
            continue
        try:
            print(f"{name:26}" + "".join(f"{per_call_ms(fn, model, b, 20 if b > 64 else 50):10.3f}"
                                         for b in call_batches), flush=True)
        except Exception as e:
            print(f"{name:26} FAILED: {type(e).__name__}: {e}")

    print(f"\n== speed: full {args.steps}-step DDPM walk of {args.n} digits through explainer.samplers ==")
    rows = {}
    for name, fn in variants.items():
        if isinstance(fn, str):
            continue
        try:
            g3 = time_it(lambda: walk(fn, model, args.n, args.steps, 3.0), dev)
            g1 = time_it(lambda: walk(fn, model, args.n, args.steps, 1.0), dev)
            rows[name] = (g3, g1)
        except Exception as e:
            print(f"{name:26} FAILED: {type(e).__name__}: {e}")
            traceback.print_exc()
    extra = {}
    best_name = min(rows, key=lambda k: rows[k][0]) if rows else None
    if best_name and dev.type == "cuda":
        fn = variants[best_name]
        gen = torch.Generator(device=dev)
        extra[f"{best_name}, noise drawn on GPU"] = time_it(
            lambda: walk(fn, model, args.n, args.steps, 3.0, generator=gen.manual_seed(0)), dev)
        extra[f"{best_name}, frames to host every 10"] = time_it(
            lambda: walk(fn, model, args.n, args.steps, 3.0, frames_every=10), dev)

    diff_s = None
    if not args.no_diffusers:
        try:
            from diffusers import DDPMPipeline, DDPMScheduler
            unet = diffusers_unet(dev)
            pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000))
            pipe.set_progress_bar_config(disable=True)
            gen = torch.Generator(device="cpu")
            pipe(batch_size=args.n, num_inference_steps=3, generator=gen.manual_seed(0), output_type="np")
            diff_s = time_it(lambda: pipe(batch_size=args.n, num_inference_steps=args.steps,
                                          generator=gen.manual_seed(0), output_type="np"), dev)
            print(f"diffusers reference: DDPMPipeline + UNet2DModel ({count_parameters(unet):,} params), "
                  f"fp32, {args.n} digits x {args.steps} steps, unconditional ({args.n} per step): {diff_s:.3f} s")
        except Exception as e:
            print(f"diffusers reference FAILED: {type(e).__name__}: {e}")

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
    if best_name:
        g3, g1 = rows[best_name]
        print(f"\nfastest: {best_name}: guided walk {g3:.3f} s (target <= 0.5 s: {'MET' if g3 <= 0.5 else 'MISSED'})"
              + (f"; vs diffusers {diff_s / g3:.1f}x guided, {diff_s / g1:.1f}x same batch "
                 f"(target >= 20x: {'MET' if diff_s / g3 >= 20 else 'MISSED'})" if diff_s else ""))
    for name, fn in variants.items():
        errors = getattr(getattr(fn, "_fn", None), "capture_errors", None)
        if errors:
            print(f"{name}: CUDA-graph capture failed for {len(errors)} key(s), ran without graphs: {errors[0]}")
    if dev.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated(dev) / 2**20:.0f} MiB")
    print(f"total time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
