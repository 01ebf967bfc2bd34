"""CPU (or GPU) speed of the eps paths in explainer/accel/fast.py, as ratios to eager torch measured in this process.

    OMP_NUM_THREADS=1 python benchmarks/speed.py                 # shipped architecture, random weights
    OMP_NUM_THREADS=1 python benchmarks/speed.py --checkpoint checkpoints/mnist-ddpm
    python benchmarks/speed.py --threads 2 --concurrency         # two requests at once (needs 2 free cores)

Prints: per-call ms of the network at batch 1/4/8/64 for every path; a full 1000-step DDPM walk of 4
digits with classifier-free guidance (batch 8 per call) through explainer.diffusion.samplers; and diffusers'
DDPMPipeline driving a UNet2DModel of similar size (per-step cost at batch 8, over --diffusers-steps
steps, scaled to 1000). Random weights time the same as trained ones (same architecture).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from explainer.accel import fast  # noqa: E402
from explainer.model.checkpoint import DiffusionModel, load_model  # noqa: E402
from explainer.diffusion.respacing import make_chain  # noqa: E402
from explainer.diffusion.samplers import run  # noqa: E402
from explainer.diffusion.schedules import make_schedule  # noqa: E402
from explainer.model.unet import UNet, UNetConfig, count_parameters  # noqa: E402

SHIPPED = dict(base_channels=16, channel_mults=(1, 2, 4), num_res_blocks=1, attention_levels=(2,), num_classes=10)


def random_model(seed: int = 0, device: str = "cpu", **overrides) -> DiffusionModel:
    """The shipped architecture with random (not zero-output) weights."""
    torch.manual_seed(seed)
    cfg = UNetConfig(**{**SHIPPED, **overrides})
    net = UNet(cfg)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.02 * torch.randn_like(p))
    net.to(device).eval().requires_grad_(False)
    return DiffusionModel(net=net, schedule=make_schedule("linear", 1000), image_size=cfg.image_size,
                          channels=cfg.in_channels, class_names=[str(i) for i in range(cfg.num_classes)],
                          config={"unet": cfg.to_dict()}, path="<random>")


def diffusers_unet(device="cpu"):
    """A diffusers UNet2DModel of about the shipped model's size (28x28, 16/32/64 channels, attention at 7x7)."""
    from diffusers import UNet2DModel
    torch.manual_seed(0)
    return UNet2DModel(sample_size=28, in_channels=1, out_channels=1, layers_per_block=1,
                       block_out_channels=(16, 32, 64), norm_num_groups=8, attention_head_dim=16,
                       down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D")).to(device).eval()


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_call(fn, model, batch: int, repeats: int, labels=True) -> tuple[float, float]:
    """(median wall ms, median process-CPU ms) of one eps call at ``batch``."""
    dev = model.device
    x = torch.randn(batch, model.channels, model.image_size, model.image_size, device=dev)
    alpha_bar = float(model.schedule.alpha_bar_at(500))  # the noise level of step 500
    y = torch.arange(batch, device=dev) % 10 if labels and model.num_classes else None
    with torch.inference_mode():
        for _ in range(3):
            fn(x, alpha_bar, y)
        sync(dev)
        times, cpu = [], []
        for _ in range(repeats):
            c0, t0 = time.process_time(), time.perf_counter()
            fn(x, alpha_bar, y)
            sync(dev)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    return 1000 * statistics.median(times), 1000 * statistics.median(cpu)


def time_walk(fn, model, n_images: int, steps: int, guidance: float, seed: int = 0) -> tuple[float, float]:
    """(wall s, process-CPU s) of a full DDPM walk of ``steps`` steps through explainer.diffusion.samplers.run."""
    chain = make_chain(model.schedule, steps)
    labels = torch.arange(n_images) % max(model.num_classes, 1) if model.num_classes else None
    shape = (n_images, model.channels, model.image_size, model.image_size)
    c0, t0 = time.process_time(), time.perf_counter()
    x0 = run(fn, chain, shape, labels=labels, guidance=guidance, null_label=model.null_label, seed=seed,
             device=model.device)
    sync(model.device)
    assert torch.isfinite(x0).all()
    return time.perf_counter() - t0, time.process_time() - c0


def time_diffusers(batch: int, steps: int, device="cpu") -> tuple[float, float, int]:
    """(wall ms per step, CPU ms per step, parameters) of diffusers' DDPMPipeline at ``batch``."""
    from diffusers import DDPMPipeline, DDPMScheduler
    unet = diffusers_unet(device)
    pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000))
    pipe.set_progress_bar_config(disable=True)
    gen = torch.Generator().manual_seed(0)
    pipe(batch_size=batch, num_inference_steps=2, generator=gen, output_type="np")  # warm-up
    sync(device)
    c0, t0 = time.process_time(), time.perf_counter()
    pipe(batch_size=batch, num_inference_steps=steps, generator=gen, output_type="np")
    sync(device)
    return (1000 * (time.perf_counter() - t0) / steps, 1000 * (time.process_time() - c0) / steps,
            count_parameters(unet))


def concurrency(model, paths: dict, steps: int) -> list[tuple[str, float, float]]:
    """(path, one walk alone s, two walks at once s): does running two requests together thrash?"""
    rows = []
    for name, fn in paths.items():
        alone = time_walk(fn, model, 4, steps, 3.0)[0]

        def go():
            time_walk(fn, model, 4, steps, 3.0)
        threads = [threading.Thread(target=go) for _ in range(2)]
        t0 = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        rows.append((name, alone, time.perf_counter() - t0))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default=None, help="a checkpoint folder (default: random shipped architecture)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch/ORT threads (default: OMP_NUM_THREADS or torch's)")
    ap.add_argument("--batches", default="1,4,8,64")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--walk-steps", type=int, default=1000)
    ap.add_argument("--walk-eager", action="store_true", help="also walk with eager (slow); else estimated from batch 8")
    ap.add_argument("--diffusers-steps", type=int, default=50, help="0 skips the diffusers reference")
    ap.add_argument("--concurrency", action="store_true", help="two walks at once vs one (200 steps)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint, device=args.device) if args.checkpoint else random_model(device=args.device)
    print(f"machine: {platform.machine()} {platform.processor() or ''} | {torch.get_num_threads()} torch threads | "
          f"torch {torch.__version__} | cuda: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")
    print(f"model: {model.path} ({count_parameters(model.net):,} parameters), device {model.device}")

    paths = {"eager": fast.fast_eps_fn(model, backend="eager")}
    for backend in ("torchscript", "onnx", "cuda"):
        fn = fast.fast_eps_fn(model, backend=backend)
        if fn.backend == backend:
            paths[backend] = fn
        else:
            print(f"  {backend}: unavailable -> {fn.description}")
    best = fast.best_eps_fn(model)
    print(f"auto choice: {best.name}\n")

    batches = [int(b) for b in args.batches.split(",")]
    per_call = {name: [time_call(fn, model, b, args.repeats if b <= 8 else max(3, args.repeats // 4))
                       for b in batches] for name, fn in paths.items()}
    print("per-call network time, median wall ms (process CPU ms); ratio = eager / path (wall)")
    print("path".ljust(14) + "".join(f"{'B=' + str(b):>24}" for b in batches))
    ref = per_call["eager"]
    for name, ms in per_call.items():
        cells = [f"{w:7.2f} ({c:6.2f}) {ref[i][0] / w:4.1f}x" for i, (w, c) in enumerate(ms)]
        print(name.ljust(14) + "".join(f"{c:>24}" for c in cells))

    print(f"\nfull {args.walk_steps}-step DDPM walk, 4 digits, guidance 3 (batch 8 per call), explainer.diffusion.samplers.run")
    print("path".ljust(14) + f"{'wall s':>9}{'CPU s':>9}{'x eager':>9}")
    walks = {name: time_walk(fn, model, 4, args.walk_steps, 3.0) for name, fn in paths.items()
             if name != "eager" or args.walk_eager}
    if "eager" in walks:
        ref_walk = walks["eager"]
    else:
        w8, c8 = ref[batches.index(8)] if 8 in batches else time_call(paths["eager"], model, 8, 10)
        ref_walk = (w8 * args.walk_steps / 1000, c8 * args.walk_steps / 1000)
        print("eager".ljust(14) + f"{ref_walk[0]:9.2f}{ref_walk[1]:9.2f}    (estimated: batch-8 call x steps; "
              "--walk-eager measures it)")
    for name, (w, c) in walks.items():
        print(name.ljust(14) + f"{w:9.2f}{c:9.2f}{ref_walk[0] / w:8.2f}x  ({ref_walk[1] / c:.2f}x on CPU time)")

    if args.diffusers_steps:
        try:
            w, c, params = time_diffusers(8, args.diffusers_steps, args.device)
        except ImportError:
            print("\ndiffusers not installed: reference skipped")
        else:
            k = args.walk_steps / 1000
            print(f"\ndiffusers DDPMPipeline + UNet2DModel ({params:,} parameters), batch 8, "
                  f"{args.diffusers_steps} steps scaled to {args.walk_steps}: {w * k:.2f} s wall ({c * k:.2f} s CPU)")
            fastest = min(walks.items(), key=lambda kv: kv[1][0])
            print(f"  diffusers / {fastest[0]} walk: {w * k / fastest[1][0]:.2f}x on wall, "
                  f"{c * k / fastest[1][1]:.2f}x on CPU time")

    if args.concurrency:
        print(f"\ntwo 200-step walks at once ({torch.get_num_threads()} torch threads; serialised calls per path):")
        for name, alone, both in concurrency(model, paths, 200):
            print(f"{name:14} one alone {alone:6.2f} s   two at once {both:6.2f} s   ({both / alone:.2f}x the time of one)")


if __name__ == "__main__":
    main()
