"""Precision / recall (Kynkäänniemi et al. 2019) and density / coverage (Naeem et al. 2020) of generated vs
reference features: the k-nearest-neighbour manifold metrics, from the same Inception pool features as FID / KID.

Definitions (``gen`` = generated features, ``ref`` = reference features, ``r_k(x, S)`` = distance from x to its
k-th nearest neighbour in S, x itself excluded; Euclidean distances):

    precision = mean over g in gen of [ exists r in ref: |g - r| <= r_k(r, ref) ]          k = 3
    recall    = mean over r in ref of [ exists g in gen: |r - g| <= r_k(g, gen) ]          k = 3
    density   = 1/(k |gen|) sum over g in gen of #{ r in ref: |g - r| < r_k(r, ref) }      k = 5
    coverage  = mean over r in ref of [ min over g in gen of |r - g| < r_k(r, ref) ]       k = 5

Precision / recall follow torch-fidelity's ``metric_prc`` (``<=`` balls, neighbourhood 3 by default, the k-th
value counting the point itself as the 0-th neighbour); density / coverage follow the published formulas (Naeem
et al. 2020, eq. 5 and 6; the ``prdc`` reference code, strict ``<``, k = 5). Distances are computed in float64
in row blocks, so memory stays at ``block x n`` (the block size changes speed only, up to float64 rounding).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PRCConfig:
    k_precision_recall: int = 3      # torch-fidelity prc_neighborhood default (Kynkäänniemi et al. 2019)
    k_density_coverage: int = 5      # Naeem et al. 2020 recommend k = 5
    block: int = 2048                # rows per distance block (speed / memory only)


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) Euclidean distances in float64 (the Gram form; clamped at 0 before the root)."""
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.sqrt(np.maximum(sq, 0.0))


def _blocks(n: int, block: int):
    for i in range(0, n, block):
        yield slice(i, min(i + block, n))


def knn_radii(x: np.ndarray, k: int, block: int = 2048) -> np.ndarray:
    """Distance from each row of ``x`` to its k-th nearest other row (the row itself is the 0-th)."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) <= k:
        raise ValueError(f"a k={k} neighbourhood needs more than {k} samples, got {len(x)}")
    out = np.empty(len(x))
    for s in _blocks(len(x), block):
        d = _distances(x[s], x)
        d[np.arange(d.shape[0]), np.arange(s.start, s.stop)] = 0.0       # exact zero on the diagonal
        out[s] = np.partition(d, k, axis=1)[:, k]
    return out


def _in_any_ball(points: np.ndarray, centres: np.ndarray, radii: np.ndarray, block: int) -> np.ndarray:
    """For each point: does it lie in (<=) any ball (centre, radius)?"""
    hit = np.empty(len(points), dtype=bool)
    for s in _blocks(len(points), block):
        hit[s] = (_distances(points[s], centres) <= radii[None, :]).any(1)
    return hit


def precision_recall(gen: np.ndarray, ref: np.ndarray, k: int = 3, block: int = 2048) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) as torch-fidelity computes them."""
    gen, ref = np.asarray(gen, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    precision = _in_any_ball(gen, ref, knn_radii(ref, k, block), block).mean()
    recall = _in_any_ball(ref, gen, knn_radii(gen, k, block), block).mean()
    return float(precision), float(recall)


def density_coverage(gen: np.ndarray, ref: np.ndarray, k: int = 5, block: int = 2048) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020): reference balls only, so outliers among the reference features
    inflate them less than precision / recall."""
    gen, ref = np.asarray(gen, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    radii = knn_radii(ref, k, block)
    inside = 0
    nearest_gen = np.full(len(ref), np.inf)
    for s in _blocks(len(gen), block):
        d = _distances(gen[s], ref)                                     # (block, n_ref)
        inside += int((d < radii[None, :]).sum())
        nearest_gen = np.minimum(nearest_gen, d.min(0))
    density = inside / (k * len(gen))
    coverage = (nearest_gen < radii).mean()
    return float(density), float(coverage)


def prc_from_features(gen: np.ndarray, ref: np.ndarray, config: PRCConfig = PRCConfig()) -> dict:
    """All four numbers plus the F-score (torch-fidelity's) and the configuration, JSON-able."""
    precision, recall = precision_recall(gen, ref, config.k_precision_recall, config.block)
    density, coverage = density_coverage(gen, ref, config.k_density_coverage, config.block)
    return {"precision": precision, "recall": recall,
            "f_score": 2 * precision * recall / max(1e-5, precision + recall),
            "density": density, "coverage": coverage, "config": dataclasses.asdict(config),
            "n_gen": int(len(gen)), "n_ref": int(len(ref))}
