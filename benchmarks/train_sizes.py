"""Training speed of a few U-Net sizes on 32x32 colour images: steps per second and parameters, as ratios.

Every size is timed in the same process on the same random batch (forward, L_simple, backward, AdamW), so
the ratios hold on any machine; the absolute steps/s say how long a bounded CPU run can train each size.

    python benchmarks/train_sizes.py --threads 2 --batch 128 --steps 12
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from explainer.model.unet import UNet, UNetConfig, count_parameters  # noqa: E402

SIZES = {  # name: (base_channels, channel_mults, num_res_blocks, attention_levels)
    "base 16, (1,2,4), 1 block": (16, (1, 2, 4), 1, (2,)),
    "base 24, (1,2,4), 1 block": (24, (1, 2, 4), 1, (2,)),
    "base 32, (1,2,2), 1 block": (32, (1, 2, 2), 1, (2,)),
    "base 32, (1,2,4), 1 block": (32, (1, 2, 4), 1, (2,)),
    "base 32, (1,2,2), 2 blocks": (32, (1, 2, 2), 2, (2,)),
}


def steps_per_second(cfg: UNetConfig, batch: int, steps: int, warmup: int = 2) -> float:
    torch.manual_seed(0)
    net = UNet(cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x = torch.randn(batch, cfg.in_channels, cfg.image_size, cfg.image_size)
    t = torch.randint(1, 1001, (batch,))
    y = torch.randint(0, cfg.num_classes, (batch,))
    eps = torch.randn_like(x)
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        loss = F.mse_loss(net(x, t, y), eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps / (time.perf_counter() - t0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--classes", type=int, default=9)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, 32x32x3, {args.classes} classes")
    ref = None
    for name, (base, mults, blocks, attn) in SIZES.items():
        cfg = UNetConfig(image_size=32, in_channels=3, base_channels=base, channel_mults=mults, num_res_blocks=blocks,
                         attention_levels=attn, num_classes=args.classes)
        rate = steps_per_second(cfg, args.batch, args.steps)
        ref = ref or rate
        params = count_parameters(UNet(cfg))
        print(f"{name:28s} {params:>10,d} params  {rate:6.2f} steps/s  ({rate / ref:4.2f}x the first)  "
              f"{rate * 3600:8,.0f} steps per hour")
    return 0


if __name__ == "__main__":
    sys.exit(main())
