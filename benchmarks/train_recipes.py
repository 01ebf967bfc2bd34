"""Short training runs that pick a recipe before hours go into one: steps/s and the loss they reach.

    OMP_NUM_THREADS=1 python benchmarks/train_recipes.py [--steps 120] [--variants all]

Every variant starts from the shipped emoji model's weights (``--init-from``; the wider one from scratch, timed
only) and trains ``--steps`` steps of batch 128 on one torch thread. Then it measures, beside the same numbers
for the untouched start in the same run:
- steps/s (the wall time of the steps, the first 5 left out as warm-up);
- the held-out loss: unweighted L_simple on a fixed evaluation batch of held-out emoji, the same number from
  every category, each with fixed t on an even grid over 1..T and fixed noise; per category too.
A short run cannot show what EMA decay does (the average moves too little); the script does not pretend to.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from explainer.diffusion.forward import q_sample  # noqa: E402
from explainer.diffusion.losses import simple_loss  # noqa: E402
from explainer.model.data import load_npz  # noqa: E402
from explainer.diffusion.schedules import make_schedule  # noqa: E402
from explainer.model.training import Trainer, TrainConfig  # noqa: E402

DATA = "data/emoji32.npz"
SHIPPED = "checkpoints/emoji-ddpm"
BASE = dict(data=DATA, image_size=32, channels=3, batch_size=128, warmup=20, sample_every=0, resume=False,
            init_from=SHIPPED)
VARIANTS = {
    "shipped mix, lr 1e-3": dict(lr=1e-3),
    "balanced, lr 1e-3": dict(lr=1e-3, class_balance=True),
    "balanced, min-SNR 5, lr 1e-3": dict(lr=1e-3, class_balance=True, min_snr_gamma=5.0),
    "balanced, min-SNR 5, lr 5e-4": dict(lr=5e-4, class_balance=True, min_snr_gamma=5.0),
    "balanced, lr 2e-3": dict(lr=2e-3, class_balance=True),
}
SCHEDULE = make_schedule("linear", 1000)  # the shipped model's
WIDE = dict(base_channels=24, init_from=None, lr=1e-3, class_balance=True)


def eval_batch(per_class: int = 40, seed: int = 0):
    """Held-out images, ``per_class`` of every category, with fixed t (an even grid) and fixed noise."""
    test = load_npz(ROOT / DATA, "test")
    x, y = test.tensors()
    g = torch.Generator().manual_seed(seed)
    pick = []
    for c in range(len(test.class_names)):
        idx = torch.nonzero(y == c).flatten()
        pick.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    idx = torch.cat(pick)
    t = torch.linspace(1, 1000, len(idx)).round().long()[torch.randperm(len(idx), generator=g)]
    eps = torch.randn((len(idx), *x.shape[1:]), generator=g)
    return x[idx], y[idx], t, eps, test.class_names


@torch.no_grad()
def held_out_loss(net, batch) -> tuple[float, list[float]]:
    x0, y, t, eps, names = batch
    net.eval()
    pred = torch.cat([net(q_sample(x0[i:i + 120], t[i:i + 120], eps[i:i + 120], SCHEDULE), t[i:i + 120], y[i:i + 120])
                      for i in range(0, len(x0), 120)])
    per = [float(simple_loss(pred[y == c], eps[y == c])) for c in range(len(names))]
    return float(simple_loss(pred, eps)), per


def run(name: str, overrides: dict, steps: int, batch, out: Path) -> dict:
    cfg = TrainConfig(**{**BASE, **overrides, "out": str(out / name.replace(" ", "_").replace(",", "")),
                         "train_steps": steps})
    tr = Trainer(cfg, progress=False)
    if cfg.init_from:
        tr.init_weights()
    before = held_out_loss(tr.model, batch)[0]
    tr.model.train()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        tr.step()
        times.append(time.perf_counter() - t0)
    after, per = held_out_loss(tr.model, batch)
    rate = 1.0 / float(np.mean(times[5:])) if len(times) > 5 else float("nan")
    return {"variant": name, "steps": steps, "steps_per_s": round(rate, 3), "held_out_before": round(before, 5),
            "held_out_after": round(after, 5), "per_category_after": [round(v, 5) for v in per]}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--variants", nargs="*", default=None, help="names from VARIANTS (default: all) ")
    p.add_argument("--wide-steps", type=int, default=20, help="steps of the 24-channel run (timed only)")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    batch = eval_batch()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.variants or VARIANTS:
            r = run(name, VARIANTS[name], args.steps, batch, Path(tmp))
            results.append(r)
            print(json.dumps(r), flush=True)
        if args.wide_steps:
            r = run("base 24, from scratch", WIDE, args.wide_steps, batch, Path(tmp))
            results.append(r)
            print(json.dumps(r), flush=True)
    base = results[0]["steps_per_s"]
    print("\nvariant | steps/s (x first) | held-out loss before -> after")
    for r in results:
        print(f"{r['variant']} | {r['steps_per_s']} ({r['steps_per_s'] / base:.2f}x) | "
              f"{r['held_out_before']} -> {r['held_out_after']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
