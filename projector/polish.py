"""Local polish of the network's map: a few epochs of UMAP's own layout optimisation.

A parametric encoder is smooth: it keeps the global arrangement and the temporal coherence the
losses ask for, but blurs the finest neighbourhoods (nn@15 falls 0.10-0.15 below umap-learn's
on the same graph, however long it trains). Starting from the network's coords, a short run of
UMAP's edge-sampling SGD (:mod:`~sentrycam.projector.layout`) on the same fuzzy graph, at a low
learning rate, restores those neighbourhoods while moving points little (well under a
neighbour distance of the map), so the map stays where the network put it. The polished coords
are what the snapshot shows and what later snapshots anchor to, so the network keeps being
pulled towards them.

Points left out of the graph by density-guided sampling are carried along: each moves by the
inverse-distance-weighted displacement of its nearest sampled points in the network's map.
"""

from __future__ import annotations

import numpy as np

#: Sampled neighbours whose displacement a point outside the graph follows.
CARRY_K = 5


def carry_along(coords: np.ndarray, sampled_rows: np.ndarray, polished: np.ndarray,
                k: int = CARRY_K) -> np.ndarray:
    """All coords float32 [N, 2] after polish: sampled rows (int [M]) take ``polished`` [M, 2];
    every other row moves by the weighted displacement of its ``k`` nearest sampled rows."""
    result = coords.copy()
    result[sampled_rows] = polished
    others = np.setdiff1d(np.arange(len(coords)), sampled_rows)
    if len(others) == 0:
        return result
    from scipy.spatial import cKDTree  # only for thinned snapshots: not in a first map's path

    k = min(k, len(sampled_rows))
    before = coords[sampled_rows]
    distances, nearest = cKDTree(before).query(coords[others], k=k)
    distances, nearest = distances.reshape(len(others), k), nearest.reshape(len(others), k)
    inverse = 1.0 / np.maximum(distances, 1e-6)
    shift = (polished - before)[nearest]  # [others, k, 2]
    result[others] += (shift * inverse[..., None]).sum(1) / inverse.sum(1, keepdims=True)
    return result.astype(np.float32)


def polish(coords: np.ndarray, sampled_rows: np.ndarray, heads: np.ndarray,
           tails: np.ndarray, weights: np.ndarray, epochs: int, curve: tuple[float, float],
           seed: int, learning_rate: float) -> np.ndarray:
    """Polished coords float32 [N, 2] of the network's ``coords`` [N, 2]; the graph's
    ``heads``/``tails`` index ``sampled_rows`` (int [M]). ``epochs`` 0 returns ``coords``."""
    if epochs <= 0 or len(heads) == 0:
        return coords
    from sentrycam.projector.layout import optimise_layout  # numba: imported where it is used

    polished = optimise_layout(coords[sampled_rows], heads, tails, weights, epochs, curve,
                               seed, learning_rate)
    return carry_along(coords, sampled_rows, polished)
