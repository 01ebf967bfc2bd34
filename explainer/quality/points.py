"""How close a 2D sampler's particles come to the data's distribution: the lab's measures, in one place.

A point set is measured against fresh samples of the distribution (new, independent draws, never trained on) and set
beside the floor: the same distance between two fresh samples, what a perfect sampler would score (finite samples
never match exactly). ``Fresh`` holds the pairs of fresh samples and what depends on them alone (the floor, the
training points' own score); ``measure`` scores point sets against them. The lab's walk measures its particles so
(``views.lab.walk_metrics``), and ``evaluate`` a model's walks (the shipped presets' records).

Distances: the sliced Wasserstein distance (the mean over random directions of the 1-D Wasserstein-1 distance of the
projections; Bonneel et al. 2015, *Sliced and Radon Wasserstein Barycenters of Measures*) and the energy distance
(Szekely & Rizzo 2013, *Energy statistics: A class of statistics based on distances*). Memorisation: the share of
particles within ``landing_tolerance`` of a training point.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..diffusion.respacing import make_chain
from ..diffusion.samplers import run
from ..diffusion.schedules import Schedule
from ..model.toy import ToyData

PROJECTIONS = 256  # random directions of the sliced Wasserstein distance


# ---------------------------------------------------------------- distances between point sets


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, projections: int = PROJECTIONS, seed: int = 0) -> float:
    """Sliced Wasserstein-1: the mean over random unit directions u of W1(<a, u>, <b, u>).

    W1 of two 1-D samples is the mean absolute difference of their quantiles (sorted values when the sizes
    match; otherwise both quantile functions on a common grid).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((a.shape[1], projections))
    u /= np.linalg.norm(u, axis=0, keepdims=True)
    pa, pb = np.sort(a @ u, axis=0), np.sort(b @ u, axis=0)
    if len(pa) != len(pb):
        q = (np.arange(max(len(pa), len(pb))) + 0.5) / max(len(pa), len(pb))
        pa = np.quantile(pa, q, axis=0)
        pb = np.quantile(pb, q, axis=0)
    return float(np.abs(pa - pb).mean())


def _mean_pairwise(a: np.ndarray, b: np.ndarray, chunk: int = 1024) -> float:
    total = 0.0
    for s in range(0, len(a), chunk):
        d = a[s:s + chunk, None, :] - b[None, :, :]
        total += float(np.sqrt((d * d).sum(-1)).sum())
    return total / (len(a) * len(b))


def energy_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Energy distance 2 E||X - Y|| - E||X - X'|| - E||Y - Y'||, V-statistic form (all pairs, each with itself too)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return max(0.0, 2 * _mean_pairwise(a, b) - _mean_pairwise(a, a) - _mean_pairwise(b, b))


def nearest_distances(samples: np.ndarray, points: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Distance from each sample to its nearest point, and that point's index."""
    samples, points = np.asarray(samples, np.float64), np.asarray(points, np.float64)
    sq = (points * points).sum(1)
    dist, idx = np.empty(len(samples)), np.empty(len(samples), dtype=np.int64)
    for s in range(0, len(samples), chunk):
        x = samples[s:s + chunk]
        d2 = (x * x).sum(1)[:, None] - 2 * x @ points.T + sq[None]
        i = d2.argmin(1)
        idx[s:s + chunk] = i
        dist[s:s + chunk] = np.sqrt(np.maximum(d2[np.arange(len(x)), i], 0.0))
    return dist, idx


def share_on_points(samples: np.ndarray, points: np.ndarray, tol: float) -> float:
    """The share of samples within ``tol`` of one of ``points``."""
    return float((nearest_distances(samples, points)[0] <= tol).mean())


def landing_tolerance(schedule: Schedule) -> float:
    """'On a training point': within sqrt(1 - alpha_bar_1), the noise level of the schedule's first step (eq. 4)."""
    return float(schedule.noise_std_at(1))


# ---------------------------------------------------------------- fresh samples and the measure


@dataclass(eq=False)
class Fresh:
    """Pairs of fresh samples (refs[j], others[j]) of a distribution, its training points and the landing tolerance.

    A point set is measured against every ref (or the j-th of several sets against refs[j]); the distance of others[j]
    to refs[j] is the floor. What depends on the pairs alone is computed once, when first asked for.
    """

    refs: list[np.ndarray]
    others: list[np.ndarray]
    points: np.ndarray
    tol: float

    @functools.cached_property
    def floors(self) -> np.ndarray:
        """The sliced Wasserstein distance of others[j] to refs[j], for each j."""
        return np.array([sliced_wasserstein(o, r) for o, r in zip(self.others, self.refs)])

    @functools.cached_property
    def energy_floors(self) -> np.ndarray:
        """The energy distance of others[j] to refs[j], for each j."""
        return np.array([energy_distance(o, r) for o, r in zip(self.others, self.refs)])

    @functools.cached_property
    def fresh_share(self) -> float:
        """The share of fresh points (the others) within the tolerance of a training point."""
        return float(np.mean([share_on_points(o, self.points, self.tol) for o in self.others]))

    @functools.cached_property
    def training(self) -> float:
        """The training points' mean sliced Wasserstein distance to the refs: what a sampler returning them scores."""
        return float(np.mean([sliced_wasserstein(self.points, r) for r in self.refs]))


def fresh(data: ToyData, n: int, ref_seeds, other_seeds, tol: float, label: int | None = None) -> Fresh:
    """Fresh samples of n points of ``data``'s distribution (of class ``label`` only, when given), one per seed."""
    return Fresh([data.fresh(n, s, label) for s in ref_seeds], [data.fresh(n, s, label) for s in other_seeds],
                 data.class_points(label), tol)


def measure(x, ref: Fresh, energy: bool = False) -> dict:
    """Particles ``x`` against ``ref``: one set [n, 2] against every ref, or a list of sets, the j-th against refs[j].

    Returns the mean sliced Wasserstein distance, the energy distance too if asked, and the share of particles on a
    training point (the mean over the sets).
    """
    sets = [x] if isinstance(x, np.ndarray) else list(x)
    if len(sets) not in (1, len(ref.refs)):
        raise ValueError(f"{len(sets)} point sets for {len(ref.refs)} references: give one, or one per reference")
    pairs = list(zip(sets * len(ref.refs) if len(sets) == 1 else sets, ref.refs))
    out = {"sliced_wasserstein": float(np.mean([sliced_wasserstein(a, r) for a, r in pairs])),
           "on_training_point": float(np.mean([share_on_points(a, ref.points, ref.tol) for a in sets]))}
    if energy:
        out["energy_distance"] = float(np.mean([energy_distance(a, r) for a, r in pairs]))
    return out


# ---------------------------------------------------------------- a model's walks


def sample_points(model, chain, n: int, seed: int, labels=None, guidance: float = 1.0, null_label=None,
                  method: str = "ddpm") -> np.ndarray:
    """n particles walked from N(0, I) along ``chain`` by ``samplers.run`` (any eps function), as float64 numpy."""
    x = run(model, chain, (n, 2), method=method, labels=labels, guidance=guidance, null_label=null_label, seed=seed)
    return x.double().numpy()


def evaluate(model, data: ToyData, steps: int = 100, n: int = 2000, seeds: int = 3, method: str = "ddpm") -> dict:
    """Distances of ``model``'s samples (``steps`` respaced steps) to fresh data, against the data-vs-data floor.

    For each seed: n particles, a fresh reference sample and a second fresh sample (the floor), all of size n;
    sliced Wasserstein and energy distances are averaged over the seeds. Also the share of particles on a training
    point, and the training points' own distance to the same fresh samples (what a sampler that returns them, as the
    exact denoiser nearly does, would score). ``model``: any eps function with a ``schedule`` (an exact denoiser too).
    """
    chain = make_chain(model.schedule, steps)
    ref = fresh(data, n, [100 + s for s in range(seeds)], [200 + s for s in range(seeds)],
                landing_tolerance(model.schedule))
    m = measure([sample_points(model, chain, n, 10 + s, method=method) for s in range(seeds)], ref, energy=True)
    sw, sw_floor = m["sliced_wasserstein"], float(ref.floors.mean())
    ed, ed_floor = m["energy_distance"], float(ref.energy_floors.mean())
    return {"steps": steps, "method": method, "particles": n, "seeds": seeds,
            "sliced_wasserstein": round(sw, 5), "sliced_wasserstein_floor": round(sw_floor, 5),
            "sliced_wasserstein_ratio": round(sw / sw_floor, 3),
            "training_points_ratio": round(ref.training / sw_floor, 3),
            "energy_distance": round(ed, 6), "energy_distance_floor": round(ed_floor, 6),
            "energy_distance_ratio": round(ed / ed_floor, 3),
            "on_training_point": round(m["on_training_point"], 4), "fresh_on_training_point": round(ref.fresh_share, 4)}
