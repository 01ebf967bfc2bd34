"""Train a bigger digit model and a bigger emoji model on one CUDA GPU in one call, and bring both back.

    python3 benchmarks/gpu_train.py [--minutes 3.5] [--out $OUT]      # on a machine with a CUDA GPU
    python benchmarks/gpu_train.py --dry-run --out /tmp/x             # the same code paths, tiny, on the CPU
    python benchmarks/gpu_train.py --dry-run --steps 6 --out /tmp/x   # a step budget: ends the same on a busy CPU

For each model (emoji first: it gains the most): a short timed probe of ``--probe-steps`` steps, then a run with
as many steps as fit in ``--minutes`` at the probed rate (so the learning rate's cosine decay ends when the time
does; ``--steps N`` trains N steps instead, with no time cap), bf16 autocast, batch 256, then a quick evaluation
on the GPU (judge accuracy, Frechet distance against the held-out set, near-copies) at the shipped model's
recommended guidance. Each model comes back as
``<out>/<name>/model.safetensors``, ``config.json`` and ``eval.json`` (the training state stays behind: it is the
largest file and only resumes a run); the log is ``<out>/gpu_train.log``. That is 7 files of at most ~12 MB.

Compare ``eval.json`` with the shipped model's ``checkpoints/<name>/eval.json`` (same judge, same guidance) and
replace the shipped weights only if the new ones score better; then run the full CPU evaluation for the card.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name -> training arguments (beyond those every run gets) and the evaluation's judge, guidance and clipping (the
# shipped model's recommended sampling, so that the two eval.json files compare)
MODELS = {
    "emoji-ddpm": dict(train=["--data", "data/emoji32.npz", "--image-size", "32", "--channels", "3"],
                       judge="checkpoints/emoji-classifier", guidance="5", clip=True),
    "mnist-ddpm": dict(train=["--data", "mnist"], judge="checkpoints/digit-classifier", guidance="1", clip=False),
}
# --size: "bigger" doubles the channels (2.74M parameters, 10.4 MiB of weights; 4x the network's work per step,
# so measure the app's walk with benchmarks/app_latency.py before shipping one); "shipped" keeps the shipped
# models' size (0.69M) and only trains longer. (base 32 with 2 blocks per level would be 15.0 MiB: at the limit
# of what one file may bring back.)
SIZES = {"bigger": ["--base-channels", "32", "--channel-mults", "1", "2", "4", "--num-res-blocks", "1"],
         "shipped": ["--base-channels", "16", "--channel-mults", "1", "2", "4", "--num-res-blocks", "1"]}
DRY = ["--base-channels", "8", "--num-res-blocks", "1"]  # the dry run's tiny network


def log(msg: str, file) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    print(line, flush=True)
    file.write(line + "\n")
    file.flush()


def run(cmd: list[str], file, timeout: float) -> int:
    log("$ " + " ".join(cmd), file)
    p = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
                       env=dict(os.environ, PYTHONUNBUFFERED="1"))
    tail = "\n".join(p.stdout.strip().splitlines()[-15:])
    log(f"(exit {p.returncode})\n{tail}", file)
    return p.returncode


def steps_per_second(folder: Path) -> float:
    t = json.loads((folder / "config.json").read_text())["training"]
    return t["steps"] / max(t["wall_time_s"], 1e-6)


def sized_run(args, rate: float) -> tuple[int, list[str], float]:
    """The run's steps, its time-cap flags and the subprocess's timeout.

    ``--steps`` is a step budget: no time cap, so the run ends on its last step (and is final) however busy the
    machine is. Otherwise as many steps as fit in ``--minutes`` at the probed rate, capped at 1.15x the minutes.
    """
    if args.steps is not None:
        return args.steps, [], max(600.0, 1.5 * args.steps / max(rate, 1e-6) + 120)
    steps = max(args.probe_steps, int(rate * 60 * args.minutes))
    return steps, ["--max-minutes", str(args.minutes * 1.15)], 60 * args.minutes * 1.5 + 120


def train_one(name: str, spec: dict, args, scratch: Path, file) -> Path | None:
    device = "cpu" if args.dry_run else "cuda"
    common = [sys.executable, "-m", "explainer", "train", "--device", device, "--batch-size",
              str(args.batch_size), "--sample-every", "0", "--quiet", "--no-resume"]
    extra = spec["train"] + (DRY if args.dry_run else SIZES[args.size])
    probe = scratch / f"{name}-probe"
    if run(common + ["--out", str(probe), "--train-steps", str(args.probe_steps), "--save-every", str(args.probe_steps)] + extra,
           file, timeout=300) != 0:
        return None
    rate = steps_per_second(probe)  # (start-up and the first, slower steps included: a safe estimate)
    steps, cap, timeout = sized_run(args, rate)
    budget = "(--steps)" if args.steps is not None else f"in {args.minutes} min"
    log(f"{name}: {rate:.1f} steps/s in the probe -> {steps} steps {budget}", file)
    final = scratch / name
    if run(common + ["--out", str(final), "--train-steps", str(steps)] + cap
           + ["--save-every", str(max(500, steps // 4)), "--warmup", str(min(500, steps // 10))] + extra,
           file, timeout=timeout) != 0:
        return None
    report = final / "eval.json"
    per_class = "4" if args.dry_run else str(args.eval_per_class)
    run([sys.executable, "-m", "explainer", "evaluate", "--checkpoint", str(final), "--device", device,
         "--num-per-class", per_class, "--guidance", spec["guidance"], "--steps", "100" if not args.dry_run else "5",
         "--classifier", spec["judge"], "--out", str(report)] + (["--clip"] if spec["clip"] else []), file, timeout=600)
    back = args.out / name
    back.mkdir(parents=True, exist_ok=True)
    for f in ("model.safetensors", "config.json", "eval.json"):
        if (final / f).exists():
            shutil.copy2(final / f, back / f)
    return back


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "out" / "gpu"))
    ap.add_argument("--minutes", type=float, default=3.5, help="training time per model")
    ap.add_argument("--steps", type=int, default=None,
                    help="training steps per model instead of --minutes (a step budget: no time cap)")
    ap.add_argument("--probe-steps", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--eval-per-class", type=int, default=50)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--size", choices=list(SIZES), default="bigger")
    ap.add_argument("--dry-run", action="store_true", help="tiny networks, a few steps, on the CPU")
    args = ap.parse_args(argv)
    if args.dry_run:
        args.minutes, args.probe_steps, args.batch_size = min(args.minutes, 0.05), 3, 8
    else:
        import torch
        if not torch.cuda.is_available():
            print("no CUDA GPU here: use --dry-run to check the script on the CPU", file=sys.stderr)
            return 2
    args.out.mkdir(parents=True, exist_ok=True)
    ok = True
    with open(args.out / "gpu_train.log", "a") as file, tempfile.TemporaryDirectory(prefix="gpu-train-") as tmp:
        for name in args.models:
            back = train_one(name, MODELS[name], args, Path(tmp), file)
            ok &= back is not None
            if back is not None and (back / "eval.json").exists():
                shipped = ROOT / "checkpoints" / name / "eval.json"
                new = json.loads((back / "eval.json").read_text())
                log(f"{name}: new {json.dumps(new.get('summary', new))[:400]}", file)
                if shipped.exists():
                    old = json.loads(shipped.read_text())
                    log(f"{name}: shipped {json.dumps(old.get('summary', old))[:400]}", file)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
