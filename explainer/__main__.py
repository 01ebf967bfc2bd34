"""Command line: ``python -m explainer {sample,figures,train,evaluate,evaluate-samplers} --help``."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .model.checkpoint import CheckpointError
from .paths import DEFAULT_CHECKPOINT
from .diffusion.respacing import SPACINGS, VARIANCES
from .diffusion.samplers import DEFAULT_SPACING, SAMPLERS, check_sampler_args
from .diffusion.schedules import SCHEDULES


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT),
                   help="checkpoint folder (ours, or a diffusers UNet2DModel folder); default: the shipped model")
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:1, ...")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m explainer",
        description="ddpm-explainer: sample from, draw figures with, train and evaluate a small DDPM.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_sample, _add_figures, _add_train, _add_evaluate, _add_evaluate_samplers):
        add(sub)
    return parser


def _add_sample(sub) -> None:
    """``sample``: images from pure noise with any sampler setting, as a PNG grid (and an .npz)."""
    s = sub.add_parser("sample", help="draw images with the reverse process and save a grid / npz",
                       description="Sample images: start from pure noise and run the reverse process.")
    _add_model_args(s)
    s.add_argument("--label", default=None,
                   help="class to generate, by index or by name (e.g. 7, or \"Animals & Nature\" for the emoji model); "
                        "omit for unconditional")
    s.add_argument("--num", type=int, default=16, help="how many images (default 16)")
    s.add_argument("--steps", type=int, default=None, help="inference steps (respaced; default: all T)")
    s.add_argument("--spacing", choices=SPACINGS, default=None,
                   help="which timesteps (or, karras, which noise levels) to keep (default: the sampler's own: linspace "
                        "for ddpm and ddim, karras for the others)")
    s.add_argument("--sampler", choices=SAMPLERS, default="ddpm",
                   help="ddpm (ancestral), ddim, euler, euler-a (Euler ancestral), heun (2 network calls a step) or "
                        "dpmpp-2m (DPM-Solver++(2M)); default ddpm")
    s.add_argument("--variance", choices=VARIANCES, default="beta_tilde",
                   help="DDPM sigma_t^2: beta_tilde (posterior, default; best measured quality) or beta (Ho et al.)")
    s.add_argument("--eta", type=float, default=0.0, help="DDIM eta in [0, 1] (0: deterministic)")
    s.add_argument("--schedule", choices=SCHEDULES, default=None,
                   help="inference schedule (default: the one the model was trained with)")
    s.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale w (default: the checkpoint's recommended value, else 1)")
    s.add_argument("--clip", action=argparse.BooleanOptionalAction, default=None,
                   help="clip x0_hat to [-1, 1] at every step (default: as the checkpoint's card recommends; "
                        "the emoji model does, the digit model does not)")
    s.add_argument("--seed", type=int, default=0, help="random seed (same seed, same images)")
    s.add_argument("--out", default="grid.png", help="PNG grid to write (default grid.png)")
    s.add_argument("--npz", default=None, help="also write images (uint8, native size) and labels to this .npz")
    s.add_argument("--backend", choices=["auto", "eager", "onnx", "torchscript", "cuda"], default="auto",
                   help="how the network runs (default auto: the fastest path that agrees with eager torch; on a GPU "
                        "the whole step replayed as a CUDA graph); see explainer/accel/fast.py")


def _add_figures(sub) -> None:
    """``figures``: the article's figures, regenerated from the model and the real math."""
    f = sub.add_parser("figures", help="regenerate the article's figures from the real math and model",
                       description="Write the article's figures (PNG, GIF where it moves) into --out.")
    _add_model_args(f)
    f.add_argument("--out", default="figures", help="output folder (default figures/)")
    f.add_argument("--image", default=None,
                   help="image for the forward-process figures (default: the bundled photo assets/astronaut.jpg)")
    f.add_argument("--variance", choices=VARIANCES, default="beta_tilde",
                   help="DDPM sigma_t^2 of the reverse walk (default beta_tilde; the captions name it)")
    f.add_argument("--clip", action=argparse.BooleanOptionalAction, default=None,
                   help="clip x0_hat to [-1, 1] at every step of the reverse walk (default: as the card recommends)")
    f.add_argument("--seed", type=int, default=0)


def _add_train(sub) -> None:
    """``train``: TrainConfig's fields as flags; its defaults reproduce the shipped model."""
    t = sub.add_parser("train", help="train a U-Net (defaults reproduce the shipped model)",
                       description="Train a DDPM U-Net on the bundled MNIST digits, an .npz data set or a folder of "
                       "images. For several processes (DistributedDataParallel; same global batch and learning "
                       "rate): torchrun --nproc_per_node=N -m explainer train ...")
    from .model.training import TrainConfig
    d = TrainConfig()
    t.add_argument("--out", default=d.out, help=f"checkpoint folder to write/resume (default {d.out})")
    t.add_argument("--data", default=d.data, help="'mnist' (bundled digits), an .npz file (keys images, labels, "
                   "class_names, optional held_out: trains on the images not held out) or a folder of images "
                   "(one subfolder per class, or flat for unconditional)")
    t.add_argument("--image-size", type=int, default=d.image_size)
    t.add_argument("--channels", type=int, default=d.channels, choices=[1, 3])
    t.add_argument("--unconditional", action="store_true", help="train without class labels")
    t.add_argument("--schedule", choices=SCHEDULES, default=d.schedule)
    t.add_argument("--num-steps", type=int, default=d.num_steps, help="T, the number of diffusion steps")
    t.add_argument("--base-channels", type=int, default=d.base_channels)
    t.add_argument("--channel-mults", type=int, nargs="+", default=list(d.channel_mults))
    t.add_argument("--num-res-blocks", type=int, default=d.num_res_blocks)
    t.add_argument("--attention-levels", type=int, nargs="*", default=list(d.attention_levels))
    t.add_argument("--dropout", type=float, default=d.dropout)
    t.add_argument("--batch-size", type=int, default=d.batch_size,
                   help=f"global batch (default {d.batch_size}); under torchrun each of N processes takes 1/N of it")
    t.add_argument("--lr", type=float, default=d.lr)
    t.add_argument("--warmup", type=int, default=d.warmup)
    t.add_argument("--ema-decay", type=float, default=d.ema_decay)
    t.add_argument("--label-dropout", type=float, default=d.label_dropout,
                   help="probability of the null label (for classifier-free guidance)")
    t.add_argument("--train-steps", type=int, default=d.train_steps)
    t.add_argument("--class-balance", action="store_true",
                   help="draw every class equally often (a class uniformly, then one of its images), not every image")
    t.add_argument("--min-snr-gamma", type=float, default=None,
                   help="weight the loss of step t by min(SNR_t, gamma) / SNR_t (Hang et al. 2023; 5 is theirs)")
    t.add_argument("--init-from", default=None,
                   help="start from this checkpoint's weights (same architecture) instead of random ones")
    t.add_argument("--max-minutes", type=float, default=None, help="stop (and save) after this many minutes")
    t.add_argument("--seed", type=int, default=d.seed)
    t.add_argument("--device", default=None,
                   help="auto (default), cpu or cuda; under torchrun on CUDA each process uses cuda:LOCAL_RANK")
    t.add_argument("--sample-every", type=int, default=d.sample_every, help="write a sample grid every N steps (0: never)")
    t.add_argument("--save-every", type=int, default=d.save_every)
    t.add_argument("--no-resume", action="store_true", help="start afresh even if --out holds a training state")
    t.add_argument("--no-bf16", action="store_true", help="train in float32 on CUDA too")
    t.add_argument("--overwrite", action="store_true",
                   help="start afresh even where --out holds a finished model (refused otherwise)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_evaluate(sub) -> None:
    """``evaluate``: the settings of ``quality.evaluate.evaluate``, and where its report goes."""
    e = sub.add_parser("evaluate", help="measure sample quality: judge accuracy, Frechet distance, near-copies",
                       description="Write a JSON report on samples of a class-conditional model: accuracy by an "
                       "independent judge (overall and per class), Frechet distance on its features against held-out "
                       "images with the real-vs-real floor, and the share of samples that are near-copies of "
                       "training images.")
    _add_judged_sampling_args(e, "eval.json")
    e.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0, 3.0], help="guidance scales to test")
    e.add_argument("--steps", type=int, default=100, help="respaced DDPM steps (default 100)")
    e.add_argument("--variance", choices=VARIANCES, default="beta_tilde",
                   help="DDPM sigma_t^2 (default beta_tilde)")
    e.add_argument("--clip", action="store_true", help="clip x0_hat to [-1, 1] at every step")
    e.add_argument("--full-steps", action="store_true", help="also sample with all T steps (slow on CPU)")
    e.add_argument("--near-copy-percentile", type=float, default=1.0,
                   help="a sample is a near-copy when its distance to the nearest training image is at most this "
                        "percentile of the held-out images' distances (default 1)")
    e.add_argument("--grid-dir", default=None,
                   help="also save one PNG per setting, a row of samples per class (grid_<steps>steps_g<w>.png)")
    e.add_argument("--update-checkpoint", action="store_true",
                   help="store the headline metrics in the checkpoint's config.json")


def _add_judged_sampling_args(e, report: str) -> None:
    """What both measuring commands take: the model, where the report goes, how many samples, the seed, the data
    and the judge."""
    _add_model_args(e)
    e.add_argument("--out", default=None, help=f"JSON report path (default: <checkpoint>/{report})")
    e.add_argument("--num-per-class", type=int, default=50, help="samples per class for each setting (default 50)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--data", default=None, help="the model's data set, 'mnist' or an .npz with a held_out key "
                   "(default: the checkpoint's data.source)")
    e.add_argument("--classifier", default=None, help="judge folder (default: the checkpoint's config key 'judge', "
                   "else checkpoints/digit-classifier for MNIST, else checkpoints/NAME-classifier for NAME-ddpm)")


def _add_evaluate_samplers(sub) -> None:
    """``evaluate-samplers``: ``quality.sampler_eval.evaluate_samplers``, its report and its chart."""
    from .quality.sampler_eval import BOOTSTRAP, CALLS
    e = sub.add_parser("evaluate-samplers", help="quality against network calls: every sampler, judged",
                       description="For each sampler at each budget of network calls (Heun: 2 steps - 1 calls), at "
                       "the card's guidance and clipping and the sampler's own step spacing, and for DDPM over all T "
                       "steps: judge accuracy and Frechet distance against the real-vs-real floor, with standard "
                       "errors. Writes a JSON report and a chart.")
    _add_judged_sampling_args(e, "eval_samplers.json")
    e.add_argument("--chart", default=None,
                   help="chart PNG (default: <checkpoint>/samples/quality_vs_calls.png); 'none' for no chart")
    e.add_argument("--samplers", nargs="+", choices=SAMPLERS, default=list(SAMPLERS), help="default: all")
    e.add_argument("--calls", type=int, nargs="+", default=list(CALLS),
                   help=f"network-call budgets (default {' '.join(map(str, CALLS))})")
    e.add_argument("--reference-steps", type=int, default=None, help="DDPM steps of the reference (default: all T)")
    e.add_argument("--guidance", type=float, default=None, help="guidance scale w (default: the card's)")
    e.add_argument("--clip", action=argparse.BooleanOptionalAction, default=None,
                   help="clip x0_hat to [-1, 1] (default: as the card recommends)")
    e.add_argument("--bootstrap", type=int, default=BOOTSTRAP,
                   help=f"bootstrap resamples for the FD's standard error (default {BOOTSTRAP})")
    e.add_argument("--chunk-size", type=int, default=250, help="images per walk (default 250)")
    e.add_argument("--resume", action="store_true",
                   help="keep the settings --out already holds (same sampling settings) and measure the rest")


def cmd_sample(args) -> int:
    import numpy as np
    import torch

    from .model.checkpoint import load_model
    from .render.display import save_grid
    from .render.figures import describe_walk
    from .diffusion.respacing import make_chain
    from .diffusion.schedules import make_schedule

    model = load_model(args.checkpoint, args.device)
    label = resolve_label(model, args.label)
    if args.num < 1 or args.num > 4096:
        raise SystemExit("error: --num must be in 1..4096")
    inference = make_schedule(args.schedule, model.schedule.T) if args.schedule else model.schedule
    guidance = args.guidance
    if guidance is None:
        guidance = model.recommended_guidance if label is not None else 1.0
    try:
        chain = make_chain(model.schedule, args.steps, args.spacing or DEFAULT_SPACING[args.sampler], inference)
        check_sampler_args(args.sampler, args.variance, args.eta, guidance, chain)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}")
    labels = None if label is None else torch.full((args.num,), label)
    shape = (args.num, model.channels, model.image_size, model.image_size)
    clip = model.recommended_clip_x0 if args.clip is None else args.clip
    sampler = dict(method=args.sampler, variance=args.variance, eta=args.eta, clip_x0=clip)
    start = time.perf_counter()
    x0, how = _final_images(model, chain, shape, sampler, args, labels, guidance)
    secs = time.perf_counter() - start
    save_grid(x0, args.out, nrow=int(np.ceil(np.sqrt(args.num))))
    what = describe_walk(**sampler, chain=chain, labels=None if label is None else [model.class_names[label]],
                         guidance=guidance, seed=args.seed)
    print(f"wrote {args.out}: {args.num} images; {what}; {secs:.1f} s on {model.device} ({how})")
    if args.npz:
        from .render.display import to_uint8
        lab = np.full(args.num, -1 if label is None else label, dtype=np.int64)
        np.savez_compressed(args.npz, images=to_uint8(x0), labels=lab)
        print(f"wrote {args.npz}")
    return 0


def resolve_label(model, label: str | None) -> int | None:
    """``--label`` as a class index: an index, or a class name (exact, else ignoring case); exits with the classes."""
    if label is None:
        return None
    if not model.num_classes:
        raise SystemExit("error: this model is unconditional; omit --label")
    names = model.class_names
    listing = ", ".join(f"{i} = {n}" for i, n in enumerate(names))
    if label in names:
        return names.index(label)
    folded = [n.casefold() for n in names]
    if label.strip().casefold() in folded:
        return folded.index(label.strip().casefold())
    try:
        index = int(label)
    except ValueError:
        raise SystemExit(f"error: unknown --label {label!r}; this model's classes are: {listing}") from None
    if not 0 <= index < model.num_classes:
        raise SystemExit(f"error: --label must be in 0..{model.num_classes - 1} or a class name ({listing})")
    return index


def _final_images(model, chain, shape, sampler: dict, args, labels, guidance):
    """x_0 of one walk by the fastest path asked for, and a description of that path.

    sampler: the sampler's arguments (method, variance, eta, clip_x0), given as they are to the walk.
    On CUDA (backend auto or cuda) the walk is a GraphedWalk; if it cannot be built or captured (say, a
    zero-terminal-SNR chain), the samplers run with the best eps function instead. A seed gives the same
    pictures on every path (noise is drawn on the CPU in the samplers' order), up to bf16 rounding on a GPU.
    """
    from .accel import fast
    from .diffusion.samplers import run

    note = ""
    if model.device.type == "cuda" and args.backend in ("auto", "cuda"):
        from .accel.walk_graph import GraphedWalk
        try:
            walk = GraphedWalk(model, chain, shape[0], labels=labels, guidance=guidance, **sampler)
            return walk.run(seed=args.seed), repr(walk)
        except Exception as exc:  # fall back to the samplers below, and say why
            note = f"; walk graph not used: {type(exc).__name__}: {exc}"
    fn = fast.eager_eps_fn(model) if args.backend == "eager" else fast.best_eps_fn(model, backend=args.backend)
    x0 = run(fn, chain, shape, labels=labels, guidance=guidance, null_label=model.null_label, seed=args.seed,
             device=model.device, **sampler)
    return x0, fn.name + note


def cmd_figures(args) -> int:
    from .accel.fast import best_eps_fn
    from .model.checkpoint import load_model
    from .render.figures import make_figures
    try:
        model = load_model(args.checkpoint, args.device)
    except CheckpointError as exc:
        print(f"note: {exc}\nwriting only the figures that need no model", file=sys.stderr)
        model = None
    try:
        eps_fn = best_eps_fn(model) if model is not None else None  # the fastest path that agrees with eager
        clip = args.clip if args.clip is not None else model is not None and model.recommended_clip_x0
        paths = make_figures(model, args.out, image=args.image, seed=args.seed, eps_fn=eps_fn, variance=args.variance,
                             clip_x0=clip)
    except ValueError as exc:  # e.g. an unreadable --image
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    return 0


def train_config(args):
    """The TrainConfig that `train` flags describe."""
    from .model.training import TrainConfig
    return TrainConfig(out=args.out, data=args.data, image_size=args.image_size, channels=args.channels,
                      conditional=not args.unconditional, schedule=args.schedule, num_steps=args.num_steps,
                      base_channels=args.base_channels, channel_mults=tuple(args.channel_mults),
                      num_res_blocks=args.num_res_blocks, attention_levels=tuple(args.attention_levels),
                      dropout=args.dropout, batch_size=args.batch_size, lr=args.lr, warmup=args.warmup,
                      ema_decay=args.ema_decay, label_dropout=args.label_dropout, train_steps=args.train_steps,
                      max_minutes=args.max_minutes, seed=args.seed, device=args.device,
                      sample_every=args.sample_every, save_every=args.save_every, resume=not args.no_resume,
                      bf16=not args.no_bf16, overwrite=args.overwrite, class_balance=args.class_balance,
                      min_snr_gamma=args.min_snr_gamma, init_from=args.init_from)


def cmd_train(args) -> int:
    from .model.training import train
    try:
        train(train_config(args), progress=not args.quiet)
    except (FileExistsError, FileNotFoundError, ValueError) as exc:  # a refused --out, unreadable --data, bad flags
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_evaluate(args) -> int:
    from .model.checkpoint import load_model
    from .quality.classifier import ClassifierError
    from .quality.evaluate import evaluate
    model = load_model(args.checkpoint, args.device)
    out = args.out or str(Path(model.path) / "eval.json")
    try:
        report = evaluate(model, num_per_class=args.num_per_class, guidance_scales=args.guidance,
                          full_steps=args.full_steps, seed=args.seed, steps=args.steps, variance=args.variance,
                          clip_x0=args.clip, data=args.data, classifier_dir=args.classifier,
                          near_copy_percentile=args.near_copy_percentile, grid_dir=args.grid_dir, progress=True)
    except (ValueError, FileNotFoundError, ClassifierError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report.get("summary", report), indent=2))
    print(f"sampler: {report['sampling']['method']}")
    print(f"wrote {out}")
    if args.update_checkpoint:
        cfg_path = Path(model.path) / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["metrics"] = report.get("summary", {})
        cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    return 0


def cmd_evaluate_samplers(args) -> int:
    import shlex

    from .model.checkpoint import load_model
    from .quality.classifier import ClassifierError
    from .quality.sampler_eval import evaluate_samplers
    from .render.nfe_chart import save_quality_chart
    model = load_model(args.checkpoint, args.device)
    out = Path(args.out or Path(model.path) / "eval_samplers.json")
    chart = None if args.chart == "none" else Path(args.chart or Path(model.path) / "samples" / "quality_vs_calls.png")
    previous = json.loads(out.read_text()) if args.resume and out.is_file() else None
    out.parent.mkdir(parents=True, exist_ok=True)
    write = lambda report: out.write_text(json.dumps(report, indent=2) + "\n")  # noqa: E731 (after every setting)
    command = "python -m explainer " + shlex.join(getattr(args, "argv", None) or sys.argv[1:])
    try:
        report = evaluate_samplers(model, args.num_per_class, args.samplers, args.calls, args.seed,
                                   reference_steps=args.reference_steps, guidance=args.guidance, clip_x0=args.clip,
                                   chunk_size=args.chunk_size, bootstrap=args.bootstrap, data=args.data,
                                   classifier_dir=args.classifier, command=command, previous=previous,
                                   on_row=write, progress=True)
    except (ValueError, FileNotFoundError, ClassifierError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write(report)
    print(json.dumps(report["summary"], indent=2))
    print(f"wrote {out}")
    if chart is not None:
        print(f"wrote {save_quality_chart(report, chart)}")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command as given, for the reports that record it
    handler = {"sample": cmd_sample, "figures": cmd_figures, "train": cmd_train, "evaluate": cmd_evaluate,
               "evaluate-samplers": cmd_evaluate_samplers}[args.command]
    try:
        return handler(args)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
