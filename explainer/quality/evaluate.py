"""Sample quality of a class-conditional model: judge accuracy, Frechet distance and a memorisation check.

Recipe (``evaluate``), for a model trained on the bundled MNIST digits or on an .npz data set with a
held-out split (the checkpoint's ``data.source``; ``data=`` overrides it):
1. Draw ``num_per_class`` samples of every class with DDPM (Ho et al. 2020, Algorithm 2) with the
   ``variance`` asked for (default sigma_t^2 = beta_tilde_t, the posterior variance; or beta_t), x0_hat
   clipped or not (``clip_x0``), on a respaced chain of ``steps`` steps (Nichol & Dhariwal 2021, sec. 4)
   and, with ``full_steps``, on all T steps; for each classifier-free guidance scale w (Ho & Salimans
   2022, eq. 6). The report names the sampler with ``render.figures.describe_sampler``. Labels are
   batched (every chunk holds every class); the same seed gives every setting the same noise.
   Samples are rounded to uint8, as a saved PNG would be.
2. Classify them with an independent CNN judge (``classifier.py``, trained on the train split only):
   accuracy = fraction of samples classified as the class they were asked for, overall and per class.
   The judge is the folder ``classifier_dir``, else the checkpoint's config.json key ``judge`` (a
   repository-relative path), else ``checkpoints/digit-classifier`` for MNIST, else
   ``checkpoints/NAME-classifier`` for a checkpoint folder ``NAME-ddpm`` (``checkpoints/emoji-ddpm`` ->
   ``checkpoints/emoji-classifier``).
3. Frechet distance (Heusel et al. 2017, the FID formula) between the judge's penultimate-layer
   features of the samples and of the held-out real images:
   FD = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2}).
   The samples are class-balanced; where the held-out classes are not, the reference Gaussian is fitted
   with weights 1 / (K n_c) per image (every class counts the same).
4. The floor: the same distance between real images and real images, i.e. a class-balanced random
   subset of the train split with exactly as many images per class as the sample set, against the
   same held-out reference. FD is biased upwards for small sets, so only same-size numbers compare.
5. Memorisation: for every sample, the L2 distance in pixel space ([-1, 1], all C*H*W values) to its
   nearest training image; the same for every held-out image, which shows how close a new image that
   is not a copy comes. A sample is a near-copy when its distance is at most the ``near_copy_percentile``
   (default 1st) percentile of the held-out images' distances.
"""
from __future__ import annotations

import math
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..accel.fast import best_eps_fn
from ..diffusion.respacing import make_chain
from ..diffusion.samplers import sample
from ..model.checkpoint import DiffusionModel
from ..model.data import Dataset
from ..model.unet import count_parameters
from ..paths import CHECKPOINTS, DEFAULT_CLASSIFIER, ROOT, repo_relative
from ..render.display import as_rgb, to_uint8, upscale
from ..render.figures import describe_sampler, image_table
from .classifier import (ClassifierError, ImageClassifier, balanced_accuracy, data_name, load_classifier, load_data,
                         load_path, per_class_accuracy, predict, split_call, train_classifier)

METHOD = "ddpm"  # the sampler of every evaluated walk (``generate``) and the one its report names


# ---------------------------------------------------------------- Frechet distance
def feature_stats(features, weights=None) -> tuple[np.ndarray, np.ndarray]:
    """Mean [F] and unbiased covariance [F, F] (float64) of features [N, F]; N >= 2.

    With ``weights`` [N] (reliability weights, e.g. ``class_weights``): the weighted mean and the unbiased
    weighted covariance sum w (f - mu)(f - mu)^T / (V1 - V2 / V1), V1 = sum w, V2 = sum w^2 (numpy's aweights).
    """
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need features [N, F] with N >= 2, got shape {f.shape}")
    if weights is None:
        return f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (f.shape[0],) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be [N] = [{f.shape[0]}], non-negative, not all 0; got shape {w.shape}")
    return np.average(f, axis=0, weights=w), np.cov(f, rowvar=False, aweights=w).reshape(f.shape[1], f.shape[1])


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
    """Round images in [-1, 1] to the 256 levels of a saved 8-bit image, back in [-1, 1] (as real images are)."""
    return ((x.clamp(-1, 1) + 1.0) * 127.5).round() / 127.5 - 1.0


def balanced_labels(num_per_class: int, num_classes: int = 10) -> torch.Tensor:
    """0, 1, ..., K-1, 0, 1, ...: any run of ``num_classes`` consecutive labels holds every class once."""
    return torch.arange(num_per_class * num_classes) % num_classes


def class_subset(ds: Dataset, num_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random subset of ``ds`` with ``num_per_class`` images of every class (classes in order)."""
    rng = np.random.default_rng(seed)
    k = len(ds.class_names) or int(ds.labels.max()) + 1
    idx = np.concatenate([rng.choice(np.flatnonzero(ds.labels == c), num_per_class, replace=False) for c in range(k)])
    x, y = ds.tensors()
    return x[idx], y[idx]


def real_subset(split: str, num_per_class: int, seed: int, data="mnist") -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random subset of ``data``'s ``split`` with ``num_per_class`` images of every class."""
    return class_subset(load_data(data, split), num_per_class, seed)


def class_weights(labels) -> np.ndarray | None:
    """Per-image weights 1 / (K n_c) that make every class count the same; None when the classes are balanced."""
    y = np.asarray(labels)
    counts = np.bincount(y)
    present = counts[counts > 0]
    if present.min() == present.max():
        return None
    return 1.0 / (len(present) * counts[y])


# ---------------------------------------------------------------- memorisation
def nearest_neighbours(queries: torch.Tensor, refs: torch.Tensor, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """For each query [N, ...], the L2 distance to its nearest reference [M, ...] (same shape) and its index.

    Candidates from ||q||^2 + ||r||^2 - 2 q.r in float32, then the distance to the chosen reference
    recomputed exactly in float64 (an identical image gives exactly 0).
    """
    q = queries.reshape(len(queries), -1).double()
    r = refs.reshape(len(refs), -1).double()
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"queries and references differ in size: {tuple(queries.shape)} vs {tuple(refs.shape)}")
    r32 = r.float()
    r2 = (r32 * r32).sum(1)
    dist, index = [], []
    for i in range(0, len(q), chunk):
        qc = q[i:i + chunk]
        q32 = qc.float()
        d2 = (q32 * q32).sum(1, keepdim=True) + r2[None] - 2.0 * q32 @ r32.T
        j = d2.argmin(1)
        index.append(j)
        dist.append((qc - r[j]).pow(2).sum(1).sqrt())
    return torch.cat(dist).numpy(), torch.cat(index).numpy()


def near_copy_threshold(held_out_dist, percentile: float = 1.0) -> float:
    """The ``percentile``-th percentile of the held-out images' nearest-training distances."""
    return float(np.percentile(np.asarray(held_out_dist, np.float64), percentile))


def memorisation(sample_dist, sample_labels, threshold: float, num_classes: int) -> dict:
    """Share of samples whose nearest-training distance is at most ``threshold`` (near-copies), overall and per class."""
    d = np.asarray(sample_dist, np.float64)
    y = np.asarray(sample_labels)
    near = d <= threshold
    return {"near_copy_share": round(float(near.mean()), 4), "near_copies": int(near.sum()),
            "per_class_near_copy_share": [round(float(near[y == c].mean()), 4) if (y == c).any() else None
                                          for c in range(num_classes)],
            "nearest_train_distance": {"median": round(float(np.median(d)), 4), "min": round(float(d.min()), 4)}}


def _closest(sample_dist, sample_index, sample_labels, train: Dataset, names: list[str], n: int = 5) -> list[dict]:
    """The ``n`` samples nearest to a training image, with that image's label (and name and vendor if known)."""
    out = []
    for i in np.argsort(sample_dist, kind="stable")[:n]:
        j = int(sample_index[i])
        row = {"sample": int(i), "class": names[int(sample_labels[i])], "distance": round(float(sample_dist[i]), 4),
               "train_index": j, "train_class": names[int(train.labels[j])]}
        if train.names is not None:
            row["train_name"] = str(train.names[j])
        if train.vendors is not None:
            row["train_vendor"] = str(train.vendors[j])
        out.append(row)
    return out


def generate(model: DiffusionModel, labels: torch.Tensor, num_steps: int, guidance: float, seed: int,
             chunk_size: int = 250, spacing: str = "linspace", variance: str = "beta_tilde",
             clip_x0: bool = False, *, method: str = METHOD) -> torch.Tensor:
    """Class-conditional samples for ``labels`` (chunks of at most ``chunk_size``), returned on the CPU, by
    ``method`` (any of ``samplers.SAMPLERS``; default DDPM, the sampler of ``evaluate``) on ``spacing``.

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
        for rec in sample(eps_fn, chain, (len(lab), *shape), method=method, labels=lab, guidance=guidance,
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


def _check_conditional(model: DiffusionModel) -> None:
    if model.num_classes < 2:
        raise ValueError("evaluate needs a class-conditional model (at least two classes); this one has "
                         f"{model.num_classes} classes")


def _check(model: DiffusionModel, num_per_class: int, guidance_scales, steps: int, chunk_size: int,
           max_per_class: int) -> list[float]:
    k = model.num_classes
    if not isinstance(num_per_class, (int, np.integer)) or not 1 <= num_per_class <= max_per_class:
        raise ValueError(f"num_per_class must be an integer in 1..{max_per_class} (the floor uses as many real "
                         f"training images of every class; the smallest class has {max_per_class}), "
                         f"got {num_per_class!r}")
    scales = [float(w) for w in (guidance_scales or [])]
    if not scales:
        raise ValueError("give at least one guidance scale")
    if any(not math.isfinite(w) or w < 0 for w in scales):
        raise ValueError(f"guidance scales must be finite and >= 0, got {scales}")
    if len(set(scales)) != len(scales):
        raise ValueError(f"guidance scales repeat: {scales}")
    if not isinstance(steps, (int, np.integer)) or not 1 <= steps <= model.schedule.T:
        raise ValueError(f"steps must be an integer in 1..{model.schedule.T} (T), got {steps!r}")
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size < k:
        raise ValueError(f"chunk_size must be an integer >= {k} (every chunk holds all {k} classes), got {chunk_size!r}")
    return scales


def data_source(model: DiffusionModel, data=None, notes: list[str] | None = None) -> str:
    """The data set a model is judged against: ``data`` if given, else the checkpoint's ``data.source`` when
    it is "mnist" or an .npz file that exists; a 10-class 28x28 grayscale model with another source (a
    folder, random test weights, a diffusers model) is judged as MNIST digits, with a note. Raises
    ValueError otherwise."""
    if data is not None:
        return str(data)
    cfg_data = (model.config or {}).get("data")
    src = cfg_data.get("source") if isinstance(cfg_data, dict) else None
    if src == "mnist" or (src and Path(str(src)).suffix.lower() == ".npz" and load_path(src).is_file()):
        return str(src)
    if (model.num_classes, model.channels, model.image_size) == (10, 1, 28):
        if notes is not None:
            notes.append(f"the checkpoint's data source {src!r} is not a data set with a held-out split; "
                         "judged against the bundled MNIST digits (10 classes, 28x28 grayscale)")
        return "mnist"
    raise ValueError(f"cannot tell which data set the model was trained on (data.source {src!r}); pass the "
                     "data set: --data mnist or --data PATH.npz (with a held_out key)")


def judge_dir(model: DiffusionModel, source: str) -> Path:
    """The judge folder for a model (the convention in the module docstring)."""
    key = (model.config or {}).get("judge")
    if key:
        return Path(key) if Path(key).is_absolute() else ROOT / key
    if source == "mnist":
        return DEFAULT_CLASSIFIER
    name = Path(model.path).name if model.path else ""
    stem = name[:-len("-ddpm")] if name.endswith("-ddpm") else Path(source).stem
    return CHECKPOINTS / f"{stem}-classifier"


def get_classifier(classifier: ImageClassifier | None, folder, notes: list[str],
                   source: str = "mnist") -> tuple[ImageClassifier, dict]:
    """The given classifier, else the one saved in ``folder``, else one trained now on ``source`` (with a note)."""
    if classifier is not None:
        return classifier.cpu().eval(), {"source": "passed in", "class_names": None}
    try:
        model, cfg = load_classifier(folder)
        return model, {"source": repo_relative(folder), "trained": cfg.get("train", {}),
                       "train_seconds": cfg.get("train_seconds"), "class_names": cfg["class_names"],
                       "data": cfg.get("data", {})}
    except ClassifierError as exc:
        notes.append(f"{exc}; trained a classifier now with the default settings (not saved)")
        print(f"note: {exc}\ntraining a classifier now (a few minutes on one CPU thread)", file=sys.stderr)
        model, info = train_classifier() if source == "mnist" else train_classifier(data=source)
        return model, {"source": "trained on the fly", "trained": info["train"], "train_seconds": info["train_seconds"],
                       "class_names": info["class_names"], "data": info["data"]}


def _check_judge(clf: ImageClassifier, clf_names: list[str], model: DiffusionModel) -> None:
    c = clf.config
    if (c.channels, c.image_size, c.num_classes) != (model.channels, model.image_size, model.num_classes):
        raise ValueError(f"the judge takes {c.channels}x{c.image_size}x{c.image_size} images in {c.num_classes} "
                         f"classes; the model makes {model.channels}x{model.image_size}x{model.image_size} in "
                         f"{model.num_classes}: pass the judge trained on the model's data")
    if clf_names is not None and model.class_names and list(model.class_names) != list(clf_names):
        raise ValueError(f"the judge's classes {clf_names} are not the model's {list(model.class_names)}")


def category_grid(x: torch.Tensor, labels: torch.Tensor, class_names: list[str], per_row: int = 8,
                  scale: int = 2) -> np.ndarray:
    """One row per class with its name on the left: the first ``per_row`` samples of each class (RGB uint8),
    each enlarged ``scale`` times and framed by a light grey line (white pictures stay visible on white)."""
    def framed(img):
        img = upscale(as_rgb(to_uint8(img, keep_gray_channel=True)), scale)
        return np.pad(img, ((1, 1), (1, 1), (0, 0)), constant_values=200)

    rows, titles = [], []
    for c, name in enumerate(class_names):
        idx = torch.nonzero(labels == c).flatten()[:per_row]
        if len(idx):
            rows.append([framed(x[i]) for i in idx.tolist()])
            titles.append(name)
    width = max(len(r) for r in rows)
    blank = np.full_like(rows[0][0], 255)
    return image_table([r + [blank] * (width - len(r)) for r in rows], None, titles)


def save_category_grid(x, labels, class_names, path, per_row: int = 8) -> Path:
    """``category_grid`` as a PNG."""
    from PIL import Image
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(category_grid(x, labels, class_names, per_row)).save(path)
    return path


# ---------------------------------------------------------------- the report
@dataclass
class _Setup:
    """What every setting is judged with: the data, the judge, its class names and the checked arguments."""
    source: str
    train_set: Dataset
    test_set: Dataset
    scales: list[float]
    chunk_size: int
    clf: ImageClassifier
    clf_info: dict
    names: list[str]
    notes: list[str]


@dataclass
class _Reference:
    """The real images' side of every comparison: judge accuracy, FD statistics, the floor, the near-copy threshold."""
    x_test: torch.Tensor
    x_train: torch.Tensor
    clf_acc: float
    clf_per_class: list
    clf_bal: float
    feature_count: int
    ref_weights: np.ndarray | None
    ref_stats: tuple
    fd_floor: float
    threshold: float
    percentile: float
    held_mem: dict


def _setup(model: DiffusionModel, num_per_class, guidance_scales, steps, chunk_size, classifier, classifier_dir,
           data, near_copy_percentile: float) -> _Setup:
    """Check the arguments against the data set and load the judge, before any sampling time is spent."""
    _check_conditional(model)
    k = model.num_classes
    notes: list[str] = []
    source = data_source(model, data, notes)
    train_set, test_set = load_data(source, "train"), load_data(source, "test")
    scales = _check(model, num_per_class, guidance_scales, steps, chunk_size,
                    int(np.bincount(train_set.labels, minlength=k)[:k].min()))
    if not 0 < near_copy_percentile < 100:
        raise ValueError(f"near_copy_percentile must be in (0, 100), got {near_copy_percentile}")
    folder = Path(classifier_dir) if classifier_dir is not None else judge_dir(model, source)
    clf, clf_info = get_classifier(classifier, folder, notes, source)
    names = list(model.class_names) or clf_info["class_names"] or [str(i) for i in range(k)]
    _check_judge(clf, clf_info["class_names"], model)
    return _Setup(source, train_set, test_set, scales, chunk_size - chunk_size % k, clf, clf_info, names, notes)


def _reference(s: _Setup, k: int, num_per_class: int, seed: int, near_copy_percentile: float) -> _Reference:
    """Measure the real images once: the judge on held-out images, the real-vs-real floor, the near-copy threshold."""
    x_test, y_test = s.test_set.tensors()
    test_pred, test_feats = predict(s.clf, x_test)
    clf_per_class = per_class_accuracy(test_pred, y_test, k)
    ref_weights = class_weights(s.test_set.labels)
    ref_stats = feature_stats(test_feats.numpy(), ref_weights)
    x_floor, _ = class_subset(s.train_set, num_per_class, seed)
    _, floor_feats = predict(s.clf, x_floor)
    fd_floor = frechet_distance(*feature_stats(floor_feats.numpy()), *ref_stats)
    x_train, _ = s.train_set.tensors()
    held_dist, _ = nearest_neighbours(x_test, x_train)
    threshold = near_copy_threshold(held_dist, near_copy_percentile)
    return _Reference(x_test, x_train, float((test_pred == y_test).double().mean()), clf_per_class,
                      balanced_accuracy(clf_per_class), test_feats.shape[1], ref_weights, ref_stats, fd_floor,
                      threshold, near_copy_percentile, memorisation(held_dist, s.test_set.labels, threshold, k))


def _one_setting(model: DiffusionModel, s: _Setup, ref: _Reference, labels: torch.Tensor, steps_k: int, w: float,
                 seed: int, variance: str, clip_x0: bool) -> tuple[dict, torch.Tensor]:
    """Sample one (steps, guidance) setting and score it: a row of the report's "results" and the samples."""
    k = model.num_classes
    start = time.perf_counter()
    x = quantize(generate(model, labels, steps_k, w, seed, s.chunk_size, variance=variance, clip_x0=clip_x0))
    secs = time.perf_counter() - start
    pred, feats = predict(s.clf, x)
    correct = (pred == labels)
    fd = frechet_distance(*feature_stats(feats.numpy()), *ref.ref_stats)
    dist, index = nearest_neighbours(x, ref.x_train)
    mem = memorisation(dist, labels.numpy(), ref.threshold, k)
    mem["closest"] = _closest(dist, index, labels.numpy(), s.train_set, s.names)
    row = {"steps": steps_k, "guidance": w, "accuracy": round(float(correct.double().mean()), 4), "fd": round(fd, 4),
           "fd_over_floor": round(fd / ref.fd_floor, 3) if ref.fd_floor > 0 else None,
           "per_class_accuracy": [round(float(correct[labels == c].double().mean()), 4) for c in range(k)],
           "memorisation": mem, "wall_seconds": round(secs, 2), "ms_per_image": round(1000 * secs / len(labels), 2)}
    return row, x


def _summarise(summary: dict, row: dict, fd_floor: float, progress: bool) -> str:
    """Add one setting's flat numbers to ``summary`` (and say them with ``progress``); returns its tag."""
    tag = f"{row['steps']}steps_{_key(row['guidance'])}"
    summary[f"acc_{tag}"] = row["accuracy"]
    summary[f"fd_{tag}"] = row["fd"]
    summary[f"near_copy_share_{tag}"] = row["memorisation"]["near_copy_share"]
    summary[f"wall_s_{tag}"] = row["wall_seconds"]
    if progress:
        print(f"{row['steps']} steps, guidance {row['guidance']:g}: accuracy {row['accuracy']:.4f}, FD {row['fd']:.3f} "
              f"(floor {fd_floor:.3f}), near-copies {row['memorisation']['near_copy_share']:.3f}, "
              f"{row['wall_seconds']:.1f} s", file=sys.stderr, flush=True)
    return tag


def evaluate(model: DiffusionModel, num_per_class: int = 50, guidance_scales=(1.0, 2.0, 3.0), full_steps: bool = False,
             seed: int = 0, *, steps: int = 100, variance: str = "beta_tilde", clip_x0: bool = False,
             chunk_size: int = 250, classifier: ImageClassifier | None = None, classifier_dir=None, data=None,
             near_copy_percentile: float = 1.0, grid_dir=None, grid_per_class: int = 8, timing: bool = True,
             progress: bool = False) -> dict:
    """Measure a class-conditional model; returns a JSON-ready report with a flat "summary" dict.

    Settings: DDPM (sigma_t^2 as ``variance`` says, x0_hat clipped with ``clip_x0``) with ``steps``
    respaced steps (and all T with ``full_steps``) x each guidance scale, ``num_per_class`` samples per
    class each. ``data`` names the data set ("mnist" or an .npz path; default the checkpoint's),
    ``classifier_dir`` the judge (default: see the module docstring). ``grid_dir``: also save, per
    setting, a PNG with ``grid_per_class`` samples of each class (``grid_<steps>steps_g<w>.png``).
    ``timing``: also time one all-T-step walk of 4 images at the checkpoint's recommended guidance.
    Paths in the report are relative to the repository when they lie inside it. Raises ValueError on
    bad arguments.
    """
    t_start = time.perf_counter()
    s = _setup(model, num_per_class, guidance_scales, steps, chunk_size, classifier, classifier_dir, data,
               near_copy_percentile)
    k = model.num_classes
    ref = _reference(s, k, num_per_class, seed, near_copy_percentile)
    labels = balanced_labels(num_per_class, k)
    T = model.schedule.T
    step_counts = [steps] + ([T] if full_steps and T != steps else [])
    summary: dict = {"num_samples": len(labels), "num_per_class": num_per_class, "fd_floor": round(ref.fd_floor, 4),
                     "classifier_test_acc": round(ref.clf_acc, 4),
                     "classifier_balanced_test_acc": round(ref.clf_bal, 4), "near_copy_threshold": round(ref.threshold, 4)}
    results, grids = [], []
    for steps_k in step_counts:
        for w in s.scales:
            row, x = _one_setting(model, s, ref, labels, steps_k, w, seed, variance, clip_x0)
            results.append(row)
            tag = _summarise(summary, row, ref.fd_floor, progress)
            if grid_dir is not None:
                g = save_category_grid(x, labels, s.names, Path(grid_dir) / f"grid_{tag}.png", grid_per_class)
                grids.append(repo_relative(g))
    walk = time_walk(model, model.recommended_guidance, 4, seed) if timing else None
    summary.update({"parameters": count_parameters(model.net), "device": str(model.device),
                    "torch_threads": torch.get_num_threads(), "seed": seed})
    if walk:
        summary[f"walk_{walk['steps']}steps_4img_s"] = walk["seconds"]
    summary["total_wall_s"] = round(time.perf_counter() - t_start, 1)
    sampling = {"variance": variance, "clip_x0": clip_x0, "steps": step_counts, "guidance_scales": s.scales,
                "num_per_class": num_per_class, "num_samples": len(labels), "seed": seed}
    return {"summary": summary, **_report_sections(model, s, ref, sampling),
            "results": results, "grids": grids, "timing": walk,
            "environment": {"device": str(model.device), "torch": torch.__version__,
                            "python": platform.python_version(), "torch_threads": torch.get_num_threads(),
                            "machine": platform.machine()},
            "notes": s.notes}


def _report_sections(model: DiffusionModel, s: _Setup, ref: _Reference, sampling: dict) -> dict:
    """The report's descriptive sections: what was measured, on which data, with which judge and how."""
    k, source, n, seed = model.num_classes, s.source, sampling["num_samples"], sampling["seed"]
    num_per_class, clip_x0 = sampling["num_per_class"], sampling["clip_x0"]
    what = "digits" if source == "mnist" else "images"
    n_test, n_train = len(ref.x_test), len(ref.x_train)
    clf_data = s.clf_info.get("data", {})
    return {
        "model": {"path": repo_relative(model.path) if model.path else model.path, "kind": model.kind,
                  "parameters": count_parameters(model.net), "schedule": model.schedule.name, "T": model.schedule.T,
                  "image": [model.channels, model.image_size, model.image_size],
                  "recommended_guidance": model.recommended_guidance, "training": model.config.get("training", {})},
        "data": {"source": data_name(source), "class_names": s.names, "train": s.train_set.description,
                 "test": s.test_set.description},
        "sampling": {"method": describe_sampler(METHOD, sampling["variance"], clip_x0=clip_x0)
                               + ("" if clip_x0 else ", no clipping"),
                     "variance": sampling["variance"], "clip_x0": clip_x0,
                     "steps": sampling["steps"], "spacing": "linspace (respaced, Nichol & Dhariwal 2021)",
                     "guidance_scales": sampling["guidance_scales"], "num_per_class": num_per_class,
                     "num_samples": n, "labels": f"0..{k - 1} repeated; every chunk holds all {k} classes",
                     "chunk_size": s.chunk_size, "seed": seed,
                     "noise": "one CPU generator seeded with `seed` per setting (same noise for every w)",
                     "postprocess": "samples rounded to uint8 levels, like saved images"},
        "classifier": {**{key: v for key, v in s.clf_info.items() if key not in ("class_names", "data")},
                       "test_accuracy": round(ref.clf_acc, 4), "balanced_test_accuracy": round(ref.clf_bal, 4),
                       "per_class_test_accuracy": [None if a is None else round(a, 4) for a in ref.clf_per_class],
                       "trained_on": f"{clf_data.get('train', 'the train split')} (the train split only)",
                       "features": f"penultimate layer ({ref.feature_count} ReLU units)"},
        "reference": {"real": f"{split_call(source, 'test')}: the {n_test} held-out {what} "
                              f"({', '.join(str(int(v)) for v in np.bincount(s.test_set.labels, minlength=k))} per class)",
                      "weights": ("none (the held-out classes are balanced)" if ref.ref_weights is None else
                                  "1 / (K n_c) per held-out image: every class weighs the same, as in the "
                                  "class-balanced sample sets"),
                      "fd_formula": "||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) on classifier features"},
        "floor": {"fd": round(ref.fd_floor, 4), "n": n,
                  "how": f"a class-balanced random subset of {split_call(source, 'train')} ({num_per_class} per "
                         f"class, numpy default_rng({seed})), same size as the sample set, against the same "
                         f"{n_test} held-out {what}: the FD of real vs real at this sample size"},
        "memorisation": {"threshold": round(ref.threshold, 4), "percentile": ref.percentile, "train_images": n_train,
                         "how": (f"L2 distance in pixel space ([-1, 1], {int(np.prod(ref.x_train.shape[1:]))} values) "
                                 f"from each image to its nearest image of {split_call(source, 'train')}; a sample is "
                                 f"a near-copy when that distance is at most the threshold, the "
                                 f"{ref.percentile:g} % quantile of the same distance for the "
                                 f"{n_test} held-out {what} (new images that are not copies)"),
                         "held_out": {key: v for key, v in ref.held_mem.items() if key != "per_class_near_copy_share"}},
    }
