"""UMAP's fuzzy simplicial set of a kNN graph, and its 2D similarity curve, in numpy and scipy.

Both are small, closed-form pieces of UMAP (McInnes et al. 2018, section 3), written here so a
layer's first map needs neither umap-learn's import (which loads dozens of numba functions a
fresh process never calls) nor its compiled code:

- each point's membership to its neighbours is exp(-(d - rho) / sigma), with rho its distance
  to its nearest other point and sigma chosen (binary search, all rows at once) so that the
  memberships of its k neighbours sum to log2(k); directed memberships are then symmetrised by
  fuzzy union, w + w' - w w';
- the 2D similarity 1 / (1 + a d^(2b)) is least-squares fitted to the curve that is 1 up to
  ``min_dist`` and decays exponentially beyond it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

#: Binary-search rounds and tolerance of each row's bandwidth sigma.
SIGMA_ROUNDS, SIGMA_TOLERANCE = 64, 1e-5
#: A row's sigma is at least this share of the mean neighbour distance (of the row, or of the
#: whole graph when the row's is 0), so near-duplicate neighbourhoods do not collapse to 0.
MIN_SIGMA_SHARE = 1e-3


def bandwidths(knn_dists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rho, sigma), each float64 [M], of kNN distances float [M, k] (column 0: the point
    itself): rho is the smallest positive distance of a row, sigma solves
    sum_j exp(-max(d_j - rho, 0) / sigma) = log2(k) over the k - 1 neighbours."""
    dists = np.asarray(knn_dists, dtype=np.float64)
    neighbours = dists[:, 1:]
    positive = np.where(neighbours > 0, neighbours, np.inf)
    rho = positive.min(axis=1)
    rho[~np.isfinite(rho)] = 0.0
    excess = np.maximum(neighbours - rho[:, None], 0.0)
    target = np.log2(dists.shape[1])
    low, high = np.zeros(len(dists)), np.full(len(dists), np.inf)
    sigma = np.ones(len(dists))
    for _ in range(SIGMA_ROUNDS):
        total = np.exp(-excess / sigma[:, None]).sum(axis=1)
        if np.all(np.abs(total - target) < SIGMA_TOLERANCE):
            break
        too_wide = total > target  # memberships sum too high: narrow the bandwidth
        high = np.where(too_wide, sigma, high)
        low = np.where(too_wide, low, sigma)
        sigma = np.where(np.isinf(high), sigma * 2.0, (low + high) / 2.0)
    row_mean = dists.mean(axis=1)
    floor = MIN_SIGMA_SHARE * np.where(rho > 0, row_mean, dists.mean())
    return rho, np.maximum(sigma, floor)


def fuzzy_union(knn_indices: np.ndarray, knn_dists: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Symmetric fuzzy memberships of a kNN graph (indices int [M, k], distances float [M, k],
    self first, no neighbour listed twice in a row): (heads int64 [E], tails int64 [E], weights
    float32 [E]), both directions of every undirected edge listed, sorted by (head, tail)."""
    m, k = knn_indices.shape
    rho, sigma = bandwidths(knn_dists)
    dists = np.asarray(knn_dists, dtype=np.float64)
    strength = np.exp(-np.maximum(dists - rho[:, None], 0.0) / sigma[:, None]).ravel()
    heads = np.repeat(np.arange(m, dtype=np.int64), k)
    tails = knn_indices.astype(np.int64).ravel()
    keep = (heads != tails) & (strength > 0)  # no edge from a point to itself
    heads, tails, strength = heads[keep], tails[keep], strength[keep]
    # Each directed edge (i, j) and its reverse (j, i); a pair listed twice had both directions.
    keys = np.concatenate([heads * m + tails, tails * m + heads])
    values = np.concatenate([strength, strength])
    order = np.argsort(keys, kind="stable")
    keys, values = keys[order], values[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    both = np.diff(np.r_[starts, len(keys)]) == 2
    union = np.add.reduceat(values, starts)
    union[both] -= np.multiply.reduceat(values, starts)[both]
    edges = keys[starts]
    return edges // m, edges % m, union.astype(np.float32)


#: The (a, b) fit's grid of 2D distances (in units of ``spread``) and its solver's rounds.
CURVE_POINTS, CURVE_EXTENT, CURVE_ROUNDS = 300, 3.0, 200


@lru_cache(maxsize=8)
def curve_params(min_dist: float = 0.1, spread: float = 1.0) -> tuple[float, float]:
    """(a, b) of the 2D similarity 1 / (1 + a d^(2b)) least-squares fitted to 1 for
    d < ``min_dist`` and exp(-(d - min_dist) / spread) beyond, on d in [0, 3 spread]
    (Levenberg-Marquardt from a = b = 1)."""
    distances = np.linspace(0, CURVE_EXTENT * spread, CURVE_POINTS)
    target = np.where(distances < min_dist, 1.0, np.exp(-(distances - min_dist) / spread))
    log_d = np.log(np.where(distances > 0, distances, 1.0))  # d = 0 contributes no slope in b

    def residual_and_jacobian(a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
        powered = distances ** (2 * b)
        q = 1.0 / (1.0 + a * powered)
        slope = -(q * q) * powered  # dq/da
        return q - target, np.stack([slope, slope * a * 2 * log_d], axis=1)

    params, damping = np.array([1.0, 1.0]), 1e-3
    residual, jacobian = residual_and_jacobian(*params)
    for _ in range(CURVE_ROUNDS):
        normal = jacobian.T @ jacobian
        step = np.linalg.solve(normal + damping * np.diag(np.diag(normal)),
                               -jacobian.T @ residual)
        trial = residual_and_jacobian(*(params + step))
        if trial[0] @ trial[0] < residual @ residual:
            params, (residual, jacobian), damping = params + step, trial, damping / 10
            if np.abs(step).max() < 1e-12 * (1 + np.abs(params).max()):
                break
        else:
            damping *= 10
    return float(params[0]), float(params[1])
