"""The 2D lab's shipped presets (checkpoints/lab): each preset's MLP trained and its walks measured.

``python -m explainer.quality.lab_presets`` retrains them (the live recipe, ``PRESET_STEPS`` long) and records
``points.evaluate`` over ``EVAL_SEEDS`` walks in each config; ``--evaluate-only`` re-measures the shipped weights.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..model import toy
from ..model.lab_training import LabTrainConfig, train
from ..model.mlp import load_lab_model, save_lab_model
from ..paths import CHECKPOINTS
from .points import evaluate

PRESET_STEPS = 8000  # the shipped presets: the live recipe, trained longer (8 narrow Gaussians need it)


def train_presets(out, names=toy.PRESETS, cfg: LabTrainConfig | None = None, points: int = toy.NUM_POINTS,
                  log=print) -> dict:
    """Train and evaluate each preset's network; write ``out/<preset>/`` (weights + config with the records)."""
    cfg = cfg or LabTrainConfig(train_steps=PRESET_STEPS)
    results = {}
    for name in names:
        data = toy.make_preset(name, points, 0)
        model = train(data, cfg)
        model.info["eval"] = evaluate(model, data, seeds=EVAL_SEEDS)
        save_lab_model(Path(out) / toy.slug(name), model)
        results[name] = model.info
        t, e = model.info["training"], model.info["eval"]
        log(f"{name}: {t['steps_done']} steps in {t['seconds']} s, loss {t['final_loss']}; 100 DDPM steps: sliced "
            f"Wasserstein {e['sliced_wasserstein']} = {e['sliced_wasserstein_ratio']}x the floor, energy distance "
            f"{e['energy_distance_ratio']}x")
    return results


EVAL_SEEDS = 8  # walks averaged in the shipped presets' records (one walk's ratio varies by tens of percent)


def evaluate_presets(out, names=toy.PRESETS, seeds: int = EVAL_SEEDS, log=print) -> None:
    """Re-measure the shipped presets (``evaluate`` with ``seeds`` walks) and rewrite their records, not weights."""
    for name in names:
        folder = Path(out) / toy.slug(name)
        model = load_lab_model(folder)
        model.info["eval"] = evaluate(model, toy.make_preset(name, toy.NUM_POINTS, 0), seeds=seeds)
        save_lab_model(folder, model)
        e = model.info["eval"]
        log(f"{name}: sliced Wasserstein {e['sliced_wasserstein']} = {e['sliced_wasserstein_ratio']}x the floor, "
            f"energy distance {e['energy_distance_ratio']}x, on a training point {e['on_training_point']}")


def main(argv=None) -> None:
    import argparse
    p = argparse.ArgumentParser(description="Train the 2D lab's preset networks (the shipped checkpoints/lab).")
    p.add_argument("--out", default=str(CHECKPOINTS / "lab"))
    p.add_argument("--presets", nargs="*", default=list(toy.PRESETS), choices=list(toy.PRESETS))
    p.add_argument("--steps", type=int, default=PRESET_STEPS)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--hidden", type=int, default=LabTrainConfig.hidden, help="width of the MLP")
    p.add_argument("--blocks", type=int, default=LabTrainConfig.blocks, help="residual blocks of the MLP")
    p.add_argument("--evaluate-only", action="store_true", help="re-measure the shipped networks, do not train")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.evaluate_only:
        evaluate_presets(args.out, args.presets)
        return
    train_presets(args.out, args.presets, LabTrainConfig(train_steps=args.steps, hidden=args.hidden, blocks=args.blocks))


if __name__ == "__main__":
    main()
