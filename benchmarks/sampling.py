"""Sampling speed: our sampler vs diffusers' DDPMPipeline driving the same UNet2DModel.

Both run the same computation: DDPM with fixed_small variance (beta_tilde) and x0 clipping, ``--steps``
steps respaced from T = 1000 with ``leading`` spacing (DDPMPipeline's defaults), the same seed. The U-Net is a
random diffusers UNet2DModel sized like the shipped model (28x28x1, channels 16/32/64, attention at the
lowest resolution, ~0.69M parameters), so the network cost is identical and the difference is sampler
overhead. The outputs are compared too (max |difference| of the [0, 1] images).

    OMP_NUM_THREADS=1 python benchmarks/sampling.py                 # CPU, and CUDA when available
    python benchmarks/sampling.py --batch 64 --steps 1000 --device cuda
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from explainer.model.checkpoint import DiffusionModel  # noqa: E402
from explainer.diffusion.respacing import make_chain  # noqa: E402
from explainer.diffusion.samplers import run  # noqa: E402
from explainer.diffusion.schedules import make_schedule  # noqa: E402


def make_unet(size: int = 28):
    from diffusers import UNet2DModel
    torch.manual_seed(0)
    return UNet2DModel(sample_size=size, in_channels=1, out_channels=1, block_out_channels=(16, 32, 64),
                       layers_per_block=1, norm_num_groups=8,
                       down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D")).eval()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_diffusers(unet, batch, steps, seed, device):
    from diffusers import DDPMPipeline, DDPMScheduler
    pipe = DDPMPipeline(unet, DDPMScheduler()).to(device)
    pipe.set_progress_bar_config(disable=True)
    sync(device)
    start = time.perf_counter()
    img = pipe(batch_size=batch, generator=torch.Generator().manual_seed(seed), num_inference_steps=steps,
               output_type="pt").images
    sync(device)
    return time.perf_counter() - start, img.float().cpu()


def time_ours(unet, batch, steps, seed, device):
    model = DiffusionModel(net=unet.to(device), schedule=make_schedule("linear", 1000), image_size=unet.config.sample_size,
                           channels=1, kind="diffusers")
    chain = make_chain(model.schedule, steps, "leading")
    sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        x = run(model.eps, chain, (batch, 1, model.image_size, model.image_size), variance="beta_tilde", clip_x0=True,
                generator=torch.Generator().manual_seed(seed), device=device)
    sync(device)
    return time.perf_counter() - start, (x / 2 + 0.5).clamp(0, 1).float().cpu()


def bench(device, batch, steps, repeats, seed=0):
    unet = make_unet().to(device)
    time_ours(unet, batch, 3, seed, device)  # warm-up (allocator, kernels, lazy imports)
    time_diffusers(unet, batch, 3, seed, device)
    best = {"ours": float("inf"), "diffusers": float("inf")}
    for _ in range(repeats):  # interleaved, best of ``repeats``: robust to load from other processes
        t, ours = time_ours(unet, batch, steps, seed, device)
        best["ours"] = min(best["ours"], t)
        t, ref = time_diffusers(unet, batch, steps, seed, device)
        best["diffusers"] = min(best["diffusers"], t)
    return best, (ours - ref).abs().max().item(), sum(p.numel() for p in unet.parameters())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=200, help="inference steps (respaced from T = 1000)")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per sampler (best is reported)")
    p.add_argument("--device", choices=["all", "cpu", "cuda"], default="all",
                   help="all: CPU, plus CUDA when available")
    args = p.parse_args(argv)
    devices = ["cpu"] if args.device in ("all", "cpu") else []
    if args.device == "cuda" or (args.device == "all" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            p.error("CUDA is not available; use --device cpu or all")
        devices.append("cuda")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s); batch {args.batch}, "
          f"{args.steps} steps, best of {args.repeats}")
    header = f"{'device':<8} {'params':>8} {'ours steps/s':>13} {'diffusers steps/s':>18} {'ours/diffusers':>15} {'max |diff|':>11}"
    print(header)
    print("-" * len(header))
    for name in devices:
        best, diff, params = bench(torch.device(name), args.batch, args.steps, args.repeats)
        ours, theirs = args.steps / best["ours"], args.steps / best["diffusers"]
        print(f"{name:<8} {params:>8,} {ours:>13.1f} {theirs:>18.1f} {ours / theirs:>15.2f} {diff:>11.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
