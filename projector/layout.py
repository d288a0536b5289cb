"""UMAP's layout optimisation: edge-sampling SGD of 2D coords on a fuzzy graph, one numba kernel.

Every epoch each edge is sampled in proportion to its membership weight: its two ends attract
(gradient of log q, q = 1 / (1 + a d^(2b))), and its head repels a few uniformly drawn points
(gradient of log (1 - q)); the step size falls linearly to 0 over the epochs and every gradient
component is clipped. This is the layout stage of UMAP (McInnes et al. 2018, section 3.2).

The kernel is the projector's own (rather than umap-learn's) so that a fresh process loads one
small compiled function from the disk cache of :mod:`~sentrycam.projector.jit_cache` instead of
importing umap-learn. It runs serially on its own seeded random stream, so a seed reproduces
the layout exactly, and releases the GIL (a server's other threads keep running).
"""

from __future__ import annotations

import numba
import numpy as np

#: Repulsive samples per attractive one (umap-learn's ``negative_sample_rate``).
NEGATIVE_RATE = 5.0
#: Bound of each gradient component (keeps a near-collision from throwing a point away).
GRADIENT_CLIP = 4.0
#: Added to a squared distance in the repulsion, so coincident points do not divide by 0.
REPULSION_EPS = 1e-3


@numba.njit(nogil=True)
def _next(state: np.ndarray) -> np.uint64:
    """xorshift64* step of the one-element uint64 ``state``; a 64-bit random number."""
    x = state[0]
    x ^= x >> np.uint64(12)
    x ^= x << np.uint64(25)
    x ^= x >> np.uint64(27)
    state[0] = x
    return x * np.uint64(2685821657736338717)


@numba.njit(nogil=True)
def _clip(value: float) -> float:
    return min(max(value, -GRADIENT_CLIP), GRADIENT_CLIP)


@numba.njit(nogil=True)
def _sgd(coords: np.ndarray, heads: np.ndarray, tails: np.ndarray, period: np.ndarray,
         epochs: int, a: float, b: float, learning_rate: float, seed: np.uint64) -> None:
    """In place on float32 ``coords`` [M, 2]: ``epochs`` of SGD over edges (``heads``,
    ``tails`` int64 [E]) each sampled every ``period`` float64 [E] epochs."""
    state = np.full(1, seed | np.uint64(1), dtype=np.uint64)
    n_points = np.uint64(coords.shape[0])
    due = period.copy()
    negative_period = period / NEGATIVE_RATE
    negative_due = negative_period.copy()
    for epoch in range(1, epochs + 1):
        rate = learning_rate * (1.0 - (epoch - 1) / epochs)
        for edge in range(heads.shape[0]):
            if due[edge] > epoch:
                continue
            due[edge] += period[edge]
            head, tail = heads[edge], tails[edge]
            dx = coords[head, 0] - coords[tail, 0]
            dy = coords[head, 1] - coords[tail, 1]
            squared = dx * dx + dy * dy
            if squared > 0.0:
                power = squared ** b
                pull = -2.0 * a * b * power / squared / (a * power + 1.0)
                step_x, step_y = rate * _clip(pull * dx), rate * _clip(pull * dy)
                coords[head, 0] += step_x
                coords[head, 1] += step_y
                coords[tail, 0] -= step_x
                coords[tail, 1] -= step_y
            n_negative = int((epoch - negative_due[edge]) / negative_period[edge])
            negative_due[edge] += max(n_negative, 0) * negative_period[edge]
            for _ in range(n_negative):
                other = np.int64(_next(state) % n_points)
                if other == head:
                    continue
                dx = coords[head, 0] - coords[other, 0]
                dy = coords[head, 1] - coords[other, 1]
                squared = dx * dx + dy * dy
                power = squared ** b
                push = 2.0 * b / ((REPULSION_EPS + squared) * (a * power + 1.0))
                coords[head, 0] += rate * _clip(push * dx)
                coords[head, 1] += rate * _clip(push * dy)


def optimise_layout(coords: np.ndarray, heads: np.ndarray, tails: np.ndarray,
                    weights: np.ndarray, epochs: int, curve: tuple[float, float], seed: int,
                    learning_rate: float) -> np.ndarray:
    """``epochs`` of UMAP SGD on ``coords`` [M, 2] for the graph (``heads``/``tails`` int [E]
    rows of ``coords``, membership ``weights`` float [E]); returns new float32 [M, 2]."""
    layout = np.array(coords, dtype=np.float32, order="C")
    weights = np.asarray(weights, dtype=np.float64)
    keep = weights > 0
    # The heaviest edge is sampled every epoch, an edge of half its weight every other one.
    period = weights.max(initial=0.0) / weights[keep]
    stream = np.random.default_rng(seed).integers(1, np.iinfo(np.int64).max, dtype=np.uint64)
    a, b = curve
    _sgd(layout, np.asarray(heads, np.int64)[keep], np.asarray(tails, np.int64)[keep], period,
         int(epochs), float(a), float(b), float(learning_rate), np.uint64(stream))
    return layout
