"""Sample quality of a class-conditional digit model: classifier accuracy and Frechet distance.

Recipe (``evaluate``):
1. Draw ``num_per_class`` samples of every digit with DDPM (Ho et al. 2020, Algorithm 2) with the
   ``variance`` asked for (default sigma_t^2 = beta_tilde_t, the posterior variance; or beta_t), x0_hat
   clipped or not (``clip_x0``), on a respaced chain of ``steps`` steps (Nichol & Dhariwal 2021, sec. 4)
   and, with ``full_steps``, on all T steps; for each classifier-free guidance scale w (Ho & Salimans
   2022, eq. 6). The report names the sampler with ``render.figures.describe_sampler``. Labels are
   batched (every chunk holds all ten digits); the same seed gives every setting the same noise.
   Samples are rounded to uint8, as a saved PNG would be.
2. Classify them with an independent CNN (``classifier.py``, trained on the train split only):
   accuracy = fraction of samples classified as the digit they were asked for.
3. Frechet distance (Heusel et al. 2017, the FID formula) between the classifier's penultimate-layer
   features of the samples and of the 500 held-out real digits (``load_mnist("test")``):
   FD = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2}).
4. The floor: the same distance between real digits and real digits, i.e. a class-balanced random
   subset of the train split with exactly as many images per digit as the sample set, against the
   same 500 held-out digits. FD is biased upwards for small sets, so only same-size numbers compare.
"""
from __future__ import annotations

import math
import platform
import sys
import time

import numpy as np
import torch

from ..model.checkpoint import DiffusionModel
from .classifier import DEFAULT_CLASSIFIER, ClassifierError, DigitClassifier, load_classifier, predict, train_classifier
from ..model.data import HELD_OUT_PER_CLASS, load_mnist
from ..diffusion.respacing import make_chain
from ..accel.fast import best_eps_fn
from ..diffusion.samplers import sample
from ..model.unet import count_parameters
from ..paths import repo_relative
from ..render.figures import describe_sampler

TRAIN_PER_CLASS = 450  # train images per digit in load_mnist("train")
METHOD = "ddpm"  # the sampler of every evaluated walk (``generate``) and the one its report names


# ---------------------------------------------------------------- Frechet distance
def feature_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean [F] and unbiased covariance [F, F] (float64) of features [N, F]; N >= 2."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need features [N, F] with N >= 2, got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a positive semi-definite matrix (eigenvalues below 0 are rounding: set to 0)."""
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2):

    ||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^{1/2})   (Dowson & Landau 1982; Heusel et al. 2017).

    S1 S2 is not symmetric, but it has the same eigenvalues as the symmetric PSD matrix
    S1^{1/2} S2 S1^{1/2}, so Tr((S1 S2)^{1/2}) = sum of sqrt(eigvalsh(S1^{1/2} S2 S1^{1/2})). Two
    symmetric eigendecompositions: stable for singular covariances (fewer samples than features), no
    complex round-off as with a general matrix square root.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape}, {mu2.shape}; sigma {s1.shape}, {s2.shape}")
    r1 = _sqrt_psd(s1)
    m = r1 @ s2 @ r1
    tr_covmean = float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None)).sum())
    diff = mu1 - mu2
    return max(float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean), 0.0)


def frechet_distance_features(f1, f2) -> float:
    """Frechet distance between the Gaussians fitted to two feature sets [N1, F] and [N2, F]."""
    return frechet_distance(*feature_stats(f1), *feature_stats(f2))


# ---------------------------------------------------------------- helpers
def quantize(x: torch.Tensor) -> torch.Tensor:
    """Round images in [-1, 1] to the 256 levels of a saved 8-bit image, back in [-1, 1] (as real digits are)."""
    return ((x.clamp(-1, 1) + 1.0) * 127.5).round() / 127.5 - 1.0


def balanced_labels(num_per_class: int, num_classes: int = 10) -> torch.Tensor:
    """0, 1, ..., 9, 0, 1, ...: any run of ``num_classes`` consecutive labels holds every class once."""
    return torch.arange(num_per_class * num_classes) % num_classes


def real_subset(split: str, num_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random subset of ``load_mnist(split)`` with ``num_per_class`` images of every digit."""
    ds = load_mnist(split)
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.choice(np.flatnonzero(ds.labels == c), num_per_class, replace=False) for c in range(10)])
    x, y = ds.tensors()
    return x[idx], y[idx]


def generate(model: DiffusionModel, labels: torch.Tensor, num_steps: int, guidance: float, seed: int,
             chunk_size: int = 250, spacing: str = "linspace", variance: str = "beta_tilde",
             clip_x0: bool = False) -> torch.Tensor:
    """Class-conditional DDPM samples for ``labels`` (chunks of at most ``chunk_size``), returned on the CPU.

    One seeded generator feeds all chunks in order, so the result depends on (seed, chunk_size) only.
    """
    chain = make_chain(model.schedule, num_steps, spacing)
    eps_fn = best_eps_fn(model)  # the fastest path that agrees with model.eps (explainer/accel/fast.py)
    gen = torch.Generator().manual_seed(int(seed))
    shape = (model.channels, model.image_size, model.image_size)
    out = []
    for i in range(0, len(labels), chunk_size):
        lab = labels[i:i + chunk_size]
        rec = None
        for rec in sample(eps_fn, chain, (len(lab), *shape), method=METHOD, labels=lab, guidance=guidance,
                          null_label=model.null_label, variance=variance, clip_x0=clip_x0, generator=gen,
                          device=model.device):
            pass
        out.append(rec.x_prev.float().cpu())
    return torch.cat(out)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_walk(model: DiffusionModel, guidance: float, num_images: int = 4, seed: int = 0) -> dict:
    """Wall time of one DDPM walk (sigma_t^2 = beta_tilde_t) over all T steps for ``num_images`` images
    (labels 0, 1, 2, ...)."""
    labels = torch.arange(num_images) % max(model.num_classes, 1) if model.num_classes else None
    chain = make_chain(model.schedule)
    shape = (num_images, model.channels, model.image_size, model.image_size)
    eps_fn = best_eps_fn(model)
    _sync(model.device)
    start = time.perf_counter()
    for _ in sample(eps_fn, chain, shape, method=METHOD, labels=labels, guidance=guidance,
                    null_label=model.null_label, seed=seed, device=model.device):
        pass
    _sync(model.device)
    secs = time.perf_counter() - start
    return {"steps": len(chain), "images": num_images, "guidance": guidance, "seconds": round(secs, 3),
            "ms_per_step": round(1000 * secs / len(chain), 3), "device": str(model.device),
            "torch_threads": torch.get_num_threads(), "eps_path": getattr(eps_fn, "name", "eager")}


def _key(w: float) -> str:
    return f"g{w:g}"


def _check(model: DiffusionModel, num_per_class: int, guidance_scales, steps: int, chunk_size: int) -> list[float]:
    if model.num_classes != 10 or model.image_size != 28 or model.channels != 1:
        raise ValueError("evaluate needs a class-conditional model of 28x28 grayscale digits (10 classes); "
                         f"this one has {model.num_classes} classes, {model.channels}x{model.image_size}x"
                         f"{model.image_size} images")
    if not isinstance(num_per_class, (int, np.integer)) or not 1 <= num_per_class <= TRAIN_PER_CLASS:
        raise ValueError(f"num_per_class must be an integer in 1..{TRAIN_PER_CLASS} (the floor uses as many "
                         f"real train digits per class), got {num_per_class!r}")
    scales = [float(w) for w in (guidance_scales or [])]
    if not scales:
        raise ValueError("give at least one guidance scale")
    if any(not math.isfinite(w) or w < 0 for w in scales):
        raise ValueError(f"guidance scales must be finite and >= 0, got {scales}")
    if len(set(scales)) != len(scales):
        raise ValueError(f"guidance scales repeat: {scales}")
    if not isinstance(steps, (int, np.integer)) or not 1 <= steps <= model.schedule.T:
        raise ValueError(f"steps must be an integer in 1..{model.schedule.T} (T), got {steps!r}")
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 10:
        raise ValueError(f"chunk_size must be an integer >= 10 (every chunk holds all ten digits), got {chunk_size!r}")
    return scales


def get_classifier(classifier: DigitClassifier | None, folder, notes: list[str]) -> tuple[DigitClassifier, dict]:
    """The given classifier, else the shipped one, else one trained now (with a note)."""
    if classifier is not None:
        return classifier.cpu().eval(), {"source": "passed in"}
    try:
        model, cfg = load_classifier(folder)
        return model, {"source": repo_relative(folder), "trained": cfg.get("train", {}),
                       "train_seconds": cfg.get("train_seconds")}
    except ClassifierError as exc:
        notes.append(f"{exc}; trained a classifier now with the default settings (not saved)")
        print(f"note: {exc}\ntraining a digit classifier now (a few minutes on one CPU thread)", file=sys.stderr)
        model, info = train_classifier()
        return model, {"source": "trained on the fly", "trained": info["train"], "train_seconds": info["train_seconds"]}


# ---------------------------------------------------------------- the report
def evaluate(model: DiffusionModel, num_per_class: int = 50, guidance_scales=(1.0, 2.0, 3.0), full_steps: bool = False,
             seed: int = 0, *, steps: int = 100, variance: str = "beta_tilde", clip_x0: bool = False, chunk_size: int = 250, classifier: DigitClassifier | None = None,
             classifier_dir=DEFAULT_CLASSIFIER, timing: bool = True, progress: bool = False) -> dict:
    """Measure a class-conditional digit model; returns a JSON-ready report with a flat "summary" dict.

    Settings: DDPM (sigma_t^2 as ``variance`` says, x0_hat clipped with ``clip_x0``) with ``steps``
    respaced steps (and all T with ``full_steps``) x each guidance scale, ``num_per_class`` samples per
    digit each. ``timing``: also time one all-T-step walk of 4 images at the checkpoint's recommended
    guidance. Paths in the report are relative to the repository when they lie inside it. Raises
    ValueError on bad arguments.
    """
    scales = _check(model, num_per_class, guidance_scales, steps, chunk_size)
    chunk_size = chunk_size - chunk_size % 10
    notes: list[str] = []
    t_start = time.perf_counter()
    clf, clf_info = get_classifier(classifier, classifier_dir, notes)

    x_test, y_test = load_mnist("test").tensors()
    test_pred, test_feats = predict(clf, x_test)
    clf_acc = float((test_pred == y_test).double().mean())
    ref_stats = feature_stats(test_feats.numpy())

    x_floor, _ = real_subset("train", num_per_class, seed)
    _, floor_feats = predict(clf, x_floor)
    fd_floor = frechet_distance(*feature_stats(floor_feats.numpy()), *ref_stats)

    labels = balanced_labels(num_per_class)
    n = len(labels)
    T = model.schedule.T
    step_counts = [steps] + ([T] if full_steps and T != steps else [])
    summary: dict = {"num_samples": n, "num_per_class": num_per_class, "fd_floor": round(fd_floor, 4),
                     "classifier_test_acc": round(clf_acc, 4)}
    results = []
    for k in step_counts:
        for w in scales:
            start = time.perf_counter()
            x = quantize(generate(model, labels, k, w, seed, chunk_size, variance=variance, clip_x0=clip_x0))
            secs = time.perf_counter() - start
            pred, feats = predict(clf, x)
            correct = (pred == labels)
            acc = float(correct.double().mean())
            fd = frechet_distance(*feature_stats(feats.numpy()), *ref_stats)
            per_class = [round(float(correct[labels == c].double().mean()), 4) for c in range(10)]
            results.append({"steps": k, "guidance": w, "accuracy": round(acc, 4), "fd": round(fd, 4),
                            "per_class_accuracy": per_class, "wall_seconds": round(secs, 2),
                            "ms_per_image": round(1000 * secs / n, 2)})
            tag = f"{k}steps_{_key(w)}"
            summary[f"acc_{tag}"] = round(acc, 4)
            summary[f"fd_{tag}"] = round(fd, 4)
            summary[f"wall_s_{tag}"] = round(secs, 2)
            if progress:
                print(f"{k} steps, guidance {w:g}: accuracy {acc:.4f}, FD {fd:.3f} (floor {fd_floor:.3f}), "
                      f"{secs:.1f} s", file=sys.stderr, flush=True)

    rec_w = float(model.config.get("recommended_guidance", 1.0))
    walk = time_walk(model, rec_w, 4, seed) if timing else None
    params = count_parameters(model.net)
    summary.update({"parameters": params, "device": str(model.device), "torch_threads": torch.get_num_threads(),
                    "seed": seed})
    if walk:
        summary[f"walk_{walk['steps']}steps_4img_s"] = walk["seconds"]
    summary["total_wall_s"] = round(time.perf_counter() - t_start, 1)
    return {
        "summary": summary,
        "model": {"path": repo_relative(model.path) if model.path else model.path, "kind": model.kind,
                  "parameters": params, "schedule": model.schedule.name, "T": T, "image": [model.channels, model.image_size, model.image_size],
                  "recommended_guidance": rec_w, "training": model.config.get("training", {})},
        "sampling": {"method": describe_sampler(METHOD, variance, clip_x0=clip_x0)
                               + ("" if clip_x0 else ", no clipping"),
                     "variance": variance, "clip_x0": clip_x0,
                     "steps": step_counts, "spacing": "linspace (respaced, Nichol & Dhariwal 2021)",
                     "guidance_scales": scales, "num_per_class": num_per_class, "num_samples": n,
                     "labels": "0..9 repeated; every chunk holds all ten digits", "chunk_size": chunk_size,
                     "seed": seed, "noise": "one CPU generator seeded with `seed` per setting (same noise for every w)",
                     "postprocess": "samples rounded to uint8 levels, like saved images"},
        "classifier": {**clf_info, "test_accuracy": round(clf_acc, 4),
                       "trained_on": "load_mnist('train') only (4,500 digits)",
                       "features": f"penultimate layer ({test_feats.shape[1]} ReLU units)"},
        "reference": {"real": f"load_mnist('test'): the {len(x_test)} held-out digits ({HELD_OUT_PER_CLASS} per class)",
                      "fd_formula": "||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) on classifier features"},
        "floor": {"fd": round(fd_floor, 4), "n": n,
                  "how": f"a class-balanced random subset of load_mnist('train') ({num_per_class} per digit, "
                         f"numpy default_rng({seed})), same size as the sample set, against the same "
                         f"{len(x_test)} held-out digits: the FD of real vs real at this sample size"},
        "results": results,
        "timing": walk,
        "environment": {"device": str(model.device), "torch": torch.__version__, "python": platform.python_version(),
                        "torch_threads": torch.get_num_threads(), "machine": platform.machine()},
        "notes": notes,
    }
