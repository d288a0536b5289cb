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
    self first): (heads int64 [E], tails int64 [E], weights float32 [E]), both directions of
    every undirected edge listed, rows in order."""
    from scipy.sparse import coo_matrix

    m, k = knn_indices.shape
    rho, sigma = bandwidths(knn_dists)
    dists = np.asarray(knn_dists, dtype=np.float64)
    strength = np.exp(-np.maximum(dists - rho[:, None], 0.0) / sigma[:, None])
    strength[knn_indices == np.arange(m)[:, None]] = 0.0  # no edge from a point to itself
    directed = coo_matrix((strength.ravel(), (np.repeat(np.arange(m), k), knn_indices.ravel())),
                          shape=(m, m)).tocsr()
    transposed = directed.T.tocsr()
    union = (directed + transposed - directed.multiply(transposed)).tocoo()
    keep = union.data > 0
    order = np.lexsort((union.col[keep], union.row[keep]))
    return (union.row[keep][order].astype(np.int64), union.col[keep][order].astype(np.int64),
            union.data[keep][order].astype(np.float32))


@lru_cache(maxsize=8)
def curve_params(min_dist: float = 0.1, spread: float = 1.0) -> tuple[float, float]:
    """(a, b) of the 2D similarity 1 / (1 + a d^(2b)) fitted to 1 for d < ``min_dist`` and
    exp(-(d - min_dist) / spread) beyond, on d in [0, 3 spread]."""
    from scipy.optimize import curve_fit

    distances = np.linspace(0, 3 * spread, 300)
    target = np.where(distances < min_dist, 1.0,
                      np.exp(-(distances - min_dist) / spread))
    (a, b), _ = curve_fit(lambda d, a, b: 1.0 / (1.0 + a * d ** (2 * b)), distances, target)
    return float(a), float(b)
