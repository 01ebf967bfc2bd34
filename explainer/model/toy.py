"""Two-dimensional data sets for the 2D lab (their distances: ``quality.points``).

Presets: two moons, a swiss roll, 8 Gaussians (one class per Gaussian), a checkerboard and concentric rings;
and a drawing turned into points (each stroke pixel gets its share of them, each a uniformly random spot in it).
Every set is centred and scaled by one factor (shapes keep their aspect) so that each coordinate has unit variance on
average, with the transform measured on the distribution itself, so fresh samples (``ToyData.fresh``) come from
exactly the same distribution as the training points. Everything is seeded (numpy generators).

The training points are a stratified draw: the random choices that place a point along the shape (an angle, a
component, a stroke pixel) are spread evenly (each of m equal slices of [0, 1) holds one uniform number; each
component gets its share of the points, to within one), while the noise around the shape is drawn as usual. Each
point still follows the distribution, but 2,000 of them cover it without the chance clumps and gaps of independent
draws: independent draws of two moons with seeds 0 to 9 are 0.85x to 1.62x the data-vs-data floor away from fresh
data (seed 0: 1.62x, its centre 2.2 standard errors off), stratified ones 0.76x to 0.78x. Fresh samples, the
references of every distance, are independent draws.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

PRESETS = ("two moons", "swiss roll", "8 Gaussians", "checkerboard", "rings")
COMPASS = ("E", "NE", "N", "NW", "W", "SW", "S", "SE")  # the 8 Gaussians' classes, by direction
NUM_POINTS = 2000  # training points of every preset and drawing
REFERENCE_POINTS = 200_000  # the sample that fixes a preset's centring and scale
MIN_STROKE_PIXELS = 20


def slug(name: str) -> str:
    """A preset's folder name: "8 Gaussians" -> "8-gaussians"."""
    return name.lower().replace(" ", "-")


# ---- raw generators: rng, n, stratified -> (points [n, 2], labels [n] or None), before standardisation ----


def strata(rng, m: int) -> np.ndarray:
    """m uniform numbers in [0, 1), one in each slice [k/m, (k+1)/m), in random order (stratified sampling)."""
    return (rng.permutation(m) + rng.uniform(0, 1, m)) / m


def shares(n: int, weights) -> np.ndarray:
    """n split in proportion to ``weights``, each share within one of n * w / sum(w) (largest remainders)."""
    p = np.asarray(weights, dtype=np.float64) / np.sum(weights)
    counts = np.floor(n * p).astype(np.int64)
    counts[np.argsort(-(n * p - counts), kind="stable")[:n - counts.sum()]] += 1
    return counts


def _components(rng, n: int, weights) -> np.ndarray:
    """Stratified component labels [n]: each component's share of n (``shares``; equal remainders in random
    order, so with more components than points a random set of them gets one each), in random order."""
    weights = np.asarray(weights, dtype=np.float64)
    order = rng.permutation(len(weights))
    counts = np.empty(len(weights), dtype=np.int64)
    counts[order] = shares(n, weights[order])
    return rng.permutation(np.repeat(np.arange(len(weights)), counts))


def _two_moons(rng, n, stratified=False):
    k = n // 2
    a = np.pi * np.concatenate([strata(rng, k), strata(rng, n - k)]) if stratified else rng.uniform(0, np.pi, n)
    outer = np.stack([np.cos(a[:k]), np.sin(a[:k])], 1)
    inner = np.stack([1 - np.cos(a[k:]), 0.5 - np.sin(a[k:])], 1)
    pts = np.concatenate([outer, inner]) + 0.06 * rng.standard_normal((n, 2))
    return pts[rng.permutation(n)], None


def _swiss_roll(rng, n, stratified=False):
    a = 1.5 * np.pi * (1 + 2 * (strata(rng, n) if stratified else rng.uniform(0, 1, n)))
    return np.stack([a * np.cos(a), a * np.sin(a)], 1) + 0.35 * rng.standard_normal((n, 2)), None


def _eight_gaussians(rng, n, stratified=False):
    labels = _components(rng, n, np.ones(8)) if stratified else rng.integers(0, 8, n)
    angle = labels * (np.pi / 4)
    centres = 2.0 * np.stack([np.cos(angle), np.sin(angle)], 1)
    return centres + 0.15 * rng.standard_normal((n, 2)), labels.astype(np.int64)


CHECKER_CELLS = np.array([(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0])


def _checkerboard(rng, n, stratified=False):
    # 4 x 4 board on [-2, 2]^2, the 8 squares with (column + row) even
    if not stratified:
        pick = CHECKER_CELLS[rng.integers(0, len(CHECKER_CELLS), n)]
        return pick - 2.0 + rng.uniform(0, 1, (n, 2)), None
    pts = [cell - 2.0 + np.stack([strata(rng, m), strata(rng, m)], 1)  # a Latin hypercube in each square
           for cell, m in zip(CHECKER_CELLS, shares(n, np.ones(len(CHECKER_CELLS))))]
    return np.concatenate(pts)[rng.permutation(n)], None


RING_RADII = np.array([1.0, 2.0, 3.0])


def _rings(rng, n, stratified=False):
    p = RING_RADII / RING_RADII.sum()  # points in proportion to the circumference
    if stratified:
        counts = shares(n, p)
        ring = np.repeat(np.arange(3), counts)
        a = 2 * np.pi * np.concatenate([strata(rng, m) for m in counts])
    else:
        ring = rng.choice(3, n, p=p)
        a = rng.uniform(0, 2 * np.pi, n)
    r = RING_RADII[ring] + 0.06 * rng.standard_normal(n)
    pts = np.stack([r * np.cos(a), r * np.sin(a)], 1)
    return (pts[rng.permutation(n)] if stratified else pts), None


GENERATORS: dict[str, Callable] = {"two moons": _two_moons, "swiss roll": _swiss_roll,
                                   "8 Gaussians": _eight_gaussians, "checkerboard": _checkerboard,
                                   "rings": _rings}
CLASS_NAMES = {"8 Gaussians": list(COMPASS)}


def standardiser(points: np.ndarray) -> tuple[np.ndarray, float]:
    """(mean, scale) so that (x - mean) / scale has mean 0 and an average per-coordinate variance of 1."""
    mean = points.mean(0)
    return mean, float(np.sqrt(((points - mean) ** 2).mean()))


@dataclass(eq=False)
class ToyData:
    """A 2-D training set: ``points`` [N, 2] float64 (standardised), ``labels`` [N] or None, and its source.

    ``fresh(n, seed, label)`` draws new, independent points from the same distribution (for distances and their
    floor). ``key`` names the data exactly (preset, size, seed and the stratified draw, or a hash of the drawing).
    """

    name: str
    points: np.ndarray
    labels: np.ndarray | None
    class_names: list[str]
    key: str
    sampler: Callable = field(repr=False)  # (rng, n, stratified=False) -> standardised points, labels

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def fresh(self, n: int, seed: int, label: int | None = None) -> np.ndarray:
        """n new points (of class ``label`` only, when given) from the data's distribution; seeded."""
        rng = np.random.default_rng([int(seed), 7919])
        if label is None:
            return self.sampler(rng, n)[0]
        if self.labels is None or not 0 <= label < self.num_classes:
            raise ValueError(f"class {label} does not exist in {self.name}")
        out = []
        while sum(len(o) for o in out) < n:
            pts, lab = self.sampler(rng, 4 * n * self.num_classes)
            out.append(pts[lab == label])
        return np.concatenate(out)[:n]

    def class_points(self, label: int | None) -> np.ndarray:
        """The training points of one class (all points for None)."""
        return self.points if label is None or self.labels is None else self.points[self.labels == label]


def _standardised(gen: Callable, mean: np.ndarray, scale: float) -> Callable:
    def sample(rng, n, stratified=False):
        pts, lab = gen(rng, n, stratified)
        return (pts - mean) / scale, lab
    return sample


def make_preset(name: str, n: int = NUM_POINTS, seed: int = 0) -> ToyData:
    """A preset's n training points, a stratified draw from its generator with ``seed``."""
    if name not in GENERATORS:
        raise ValueError(f"unknown data set {name!r}; choose from {', '.join(PRESETS)}")
    gen = GENERATORS[name]
    ref, _ = gen(np.random.default_rng(12345), REFERENCE_POINTS)
    sampler = _standardised(gen, *standardiser(ref))
    pts, lab = sampler(np.random.default_rng(int(seed)), int(n), stratified=True)
    return ToyData(name, pts, lab, CLASS_NAMES.get(name, []), f"{slug(name)}:{int(n)}:{int(seed)}:stratified",
                   sampler)


def points_digest(points: np.ndarray) -> str:
    """A short hash of a point set, rounded to 1e-6 (so last-digit differences between CPUs' sin and cos do not
    count): checkpoints record it, and a test checks that the shipped networks learned the points the code makes."""
    rounded = np.round(np.asarray(points, dtype=np.float64), 6) + 0.0  # + 0.0 turns -0.0 into 0.0
    return hashlib.sha1(rounded.tobytes()).hexdigest()[:16]


# ---- drawings ----


def stroke_mask(image) -> np.ndarray:
    """bool [H, W]: the stroke pixels of a drawing (uint8 [H, W], [H, W, 3] or [H, W, 4]).

    A stroke pixel is dark (luminance < 128) and, where there is an alpha channel, opaque (alpha >= 128): ink on
    a white or a transparent canvas.
    """
    img = np.asarray(image)
    if img.ndim == 2:
        return img < 128
    if img.ndim != 3 or img.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"a drawing must be a grayscale, RGB or RGBA picture, got shape {img.shape}")
    channels = img.shape[2]
    color = img[..., :3] if channels >= 3 else img[..., :1]
    lum = color.astype(np.float32).mean(2) if channels >= 3 else color[..., 0].astype(np.float32)
    mask = lum < 128
    if channels in (2, 4):
        mask &= img[..., -1] >= 128
    return mask


def drawing_sampler(mask: np.ndarray) -> Callable:
    """(rng, n, stratified=False) -> points: uniform on the union of the stroke pixels, standardised, y pointing up.

    Stratified: every pixel gets its share of the n points (to within one), in random order.
    """
    mask = np.asarray(mask, dtype=bool)
    rows, cols = np.nonzero(mask)
    if len(rows) < MIN_STROKE_PIXELS:
        raise ValueError(f"the drawing has {len(rows)} ink pixels; draw a shape (at least {MIN_STROKE_PIXELS} "
                         "pixels of dark strokes) on the sketchpad first")
    centres = np.stack([cols + 0.5, mask.shape[0] - rows - 0.5], 1).astype(np.float64)
    mean = centres.mean(0)
    # variance of a uniform point in a random pixel: the pixel centres' variance + 1/12 per axis
    scale = float(np.sqrt(((centres - mean) ** 2).mean() + 1.0 / 12.0))

    def sample(rng, n, stratified=False):
        pick = _components(rng, n, np.ones(len(centres))) if stratified else rng.integers(0, len(centres), n)
        return (centres[pick] + rng.uniform(-0.5, 0.5, (n, 2)) - mean) / scale, None
    return sample


def make_drawn(image, n: int = NUM_POINTS, seed: int = 0, name: str = "your drawing") -> ToyData:
    """A drawing (a picture or a bool mask) -> n training points on its strokes."""
    mask = np.asarray(image, dtype=bool) if np.asarray(image).dtype == bool else stroke_mask(image)
    sampler = drawing_sampler(mask)
    digest = hashlib.sha1(np.packbits(mask).tobytes() + str(mask.shape).encode()).hexdigest()[:16]
    pts, _ = sampler(np.random.default_rng(int(seed)), int(n), stratified=True)
    return ToyData(name, pts, None, [], f"drawn-{digest}:{int(n)}:{int(seed)}:stratified", sampler)

