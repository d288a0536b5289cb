"""The spatial part of the spatio-temporal graph: kNN with fuzzy memberships, reused over time.

For each snapshot the sampled points get a k-nearest-neighbour graph (pynndescent's NN-descent)
turned into UMAP fuzzy memberships (:mod:`~sentrycam.projector.fuzzy`, fuzzy-union
symmetrised). Features drift slowly between snapshots, so NN-descent starts from the previous
snapshot's neighbours of the same ids (translated to today's row numbers) instead of random
projection trees; rows of ids seen for the first time start from random candidates.

Small samples (and a layer's first sample up to a larger size) take the exact kNN from one
chunked matrix product instead: at that size it costs less than NN-descent, and it needs none of
pynndescent's numba code, whose NN-descent kernels numba cannot cache on disk (they take the
metric as a function argument), so a fresh process would compile them for 20-30 s first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sentrycam.projector import jit_cache
from sentrycam.projector.fuzzy import fuzzy_union
from sentrycam.projector.ids import lookup_rows

#: Neighbourhood size of the spatial graph (self included, as umap-learn counts it).
DEFAULT_K = 15
#: NN-descent rounds when warm-started from the previous snapshot's graph.
WARM_ROUNDS = 3
#: Samples up to this size always take the exact kNN (a [M, M] product is then cheap).
EXACT_MAX = 4096
#: A first sample (no earlier graph) up to this size takes the exact kNN too: a few seconds of
#: BLAS at most, against NN-descent's compilation in a fresh process.
EXACT_FIRST_MAX = 20_000
EXACT_CHUNK = 1024


@dataclass(frozen=True)
class SpatialGraph:
    """Edges among sampled points. ``heads``/``tails`` int64 [E] index the sampled rows;
    ``weights`` float32 [E] are fuzzy memberships in (0, 1]; ``knn_ids`` int64 [M, k] are the
    neighbours of each sampled row as probe ids (for the next snapshot's warm start);
    ``mean_distance`` the mean distance to the k-th neighbour (the local length scale)."""

    heads: np.ndarray
    tails: np.ndarray
    weights: np.ndarray
    knn_ids: np.ndarray
    mean_distance: float
    reused: bool


def nearest_neighbors(features: np.ndarray, k: int, seed: int,
                      init_graph: np.ndarray | None = None, disk_cache: bool = True
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Approximate kNN (self included) of float32 [M, D]: (indices int64 [M, k], dists float32).
    ``disk_cache``: keep pynndescent's compiled code on disk (:mod:`.jit_cache`)."""
    if disk_cache:
        jit_cache.enable(jit_cache.NN_DESCENT)
    from pynndescent import NNDescent  # numba-compiled; imported where it is used

    # From last snapshot's neighbours (features drift slowly) NN-descent converges in a few
    # rounds: measured recall of the exact 15-NN 0.996 after 2 rounds on 10,000 x 512.
    rounds = {} if init_graph is None else {"n_iters": WARM_ROUNDS}
    index = NNDescent(features, n_neighbors=k, metric="euclidean", random_state=seed,
                      init_graph=init_graph, n_jobs=1, low_memory=True, compressed=True,
                      verbose=False, **rounds)
    indices, dists = index.neighbor_graph
    return indices.astype(np.int64), dists.astype(np.float32)


def exact_neighbors(features: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact kNN (self first) of float32 [M, D]: (indices int64 [M, k], dists float32 [M, k])."""
    points = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    squares = (points * points).sum(1)
    indices, dists = [], []
    for start in range(0, len(points), EXACT_CHUNK):
        chunk = points[start:start + EXACT_CHUNK]
        squared = squares[start:start + EXACT_CHUNK, None] + squares[None] - 2 * chunk @ points.T
        rows = torch.arange(len(chunk))
        squared[rows, rows + start] = -1.0  # a point is its own nearest, even among duplicates
        best, index = torch.topk(squared, k, dim=1, largest=False)
        indices.append(index)
        dists.append(best.clamp_min(0).sqrt())
    return torch.cat(indices).numpy().astype(np.int64), torch.cat(dists).numpy()


def uses_exact(n_points: int, warm_start: bool, exact_max: int = EXACT_MAX) -> bool:
    """Whether a sample of ``n_points`` gets the exact kNN rather than NN-descent (warm-started
    from the previous graph when ``warm_start``); ``exact_max``: see :func:`build_spatial_graph`."""
    return n_points <= exact_max or (not warm_start and n_points <= EXACT_FIRST_MAX)


def compile_nn_descent(k: int = DEFAULT_K, disk_cache: bool = True) -> None:
    """Run NN-descent on a tiny random set, cold and warm-started, so numba compiles both paths
    now (it cannot keep them on disk): later large samples then pay only the search."""
    data = np.random.default_rng(0).normal(size=(8 * k, 8)).astype(np.float32)
    indices, _ = nearest_neighbors(data, k, seed=0, disk_cache=disk_cache)
    nearest_neighbors(data, k, seed=0, init_graph=indices.astype(np.int32),
                      disk_cache=disk_cache)


def warm_start_graph(ids: np.ndarray, previous_ids: np.ndarray, previous_knn_ids: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    """Previous neighbours of each of ``ids`` [M] translated to rows of ``ids``: int32 [M, k].

    Neighbours (or whole rows) that have no row today get random rows, so every heap slot of
    NN-descent starts filled and new points are reachable.
    """
    m, k = len(ids), previous_knn_ids.shape[1]
    graph = rng.integers(0, m, size=(m, k))
    old_rows, seen = lookup_rows(previous_ids, ids)
    neighbour_rows, present = lookup_rows(ids, previous_knn_ids[old_rows[seen]])
    graph[seen] = np.where(present, neighbour_rows, graph[seen])
    graph[:, 0] = np.arange(m)  # every point is its own nearest neighbour
    return graph.astype(np.int32)


def build_spatial_graph(features: np.ndarray, ids: np.ndarray, k: int, seed: int,
                        previous: tuple[np.ndarray, np.ndarray] | None = None,
                        exact_max: int = EXACT_MAX, disk_cache: bool = True) -> SpatialGraph:
    """The spatial graph of sampled ``features`` float32 [M, D] with probe ``ids`` int64 [M].

    ``previous`` = (previous sampled ids [M'], previous knn_ids [M', k]) warm-starts NN-descent;
    samples of at most ``exact_max`` points (a first one: :data:`EXACT_FIRST_MAX`) take the
    exact kNN instead. ``disk_cache``: see :func:`nearest_neighbors`.
    """
    rng = np.random.default_rng(seed)
    init = None
    if previous is not None and previous[1].shape[1] == k:
        init = warm_start_graph(ids, previous[0], previous[1], rng)
    if uses_exact(len(features), init is not None, exact_max):
        knn_indices, knn_dists = exact_neighbors(features, k)
        init = None
    else:
        knn_indices, knn_dists = nearest_neighbors(features, k, seed, init, disk_cache)
    heads, tails, weights = fuzzy_union(knn_indices, knn_dists)
    return SpatialGraph(heads, tails, weights, ids[knn_indices],
                        mean_distance=float(np.mean(knn_dists[:, -1])), reused=init is not None)
