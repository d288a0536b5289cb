"""The first map of a layer in seconds: a PCA start laid out by UMAP's own SGD.

Fitting the network to a layer's first snapshot takes hundreds of Adam steps (tens of seconds
on a CPU). So the first snapshot is drawn at once from a fast initial layout: the sample's top
two principal components, scaled as umap-learn scales its initial coords, then ``epochs`` of
UMAP's edge-sampling SGD at full learning rate on the snapshot's fuzzy graph (the polish code,
with the rate of a fresh layout): UMAP's layout from a PCA start. The network
is then fitted in the background *anchored to this map* (each sampled point is tied to where
the initial map drew it, as later snapshots are tied to earlier ones), so the fitted map, which
later snapshots link to, stays where the initial map put things.
"""

from __future__ import annotations

import numpy as np

from sentrycam.projector import polish
from sentrycam.projector.temporal import MARGIN_RANGE, TemporalEdges

#: umap-learn's spread of initial coords: the layout SGD's step sizes are tuned to it.
INITIAL_EXTENT = 10.0
#: Learning rate of a fresh layout (umap-learn's default ``learning_rate``).
LAYOUT_LEARNING_RATE = 1.0


def pca_start(scaled: np.ndarray, rows: np.ndarray, seed: int) -> np.ndarray:
    """All points float32 [N, 2] on the top two principal axes of the ``rows`` (int [M]) of
    ``scaled`` [N, D], scaled so the largest coordinate is :data:`INITIAL_EXTENT`, plus a
    tiny seeded jitter so duplicate points do not start on top of each other."""
    sample = scaled[rows].astype(np.float64)
    mean = sample.mean(axis=0)
    # Eigenvectors of the D x D covariance: cheaper than an SVD of the [M, D] sample.
    _, vectors = np.linalg.eigh(np.cov(sample - mean, rowvar=False))
    coords = (scaled - mean) @ vectors[:, [-1, -2]]
    coords *= INITIAL_EXTENT / max(float(np.abs(coords).max()), 1e-12)
    jitter = np.random.default_rng(seed).normal(scale=1e-4 * INITIAL_EXTENT, size=coords.shape)
    return (coords + jitter).astype(np.float32)


def initial_layout(scaled: np.ndarray, rows: np.ndarray, heads: np.ndarray, tails: np.ndarray,
                   weights: np.ndarray, epochs: int, curve: tuple[float, float],
                   seed: int) -> np.ndarray:
    """The initial map float32 [N, 2] of ``scaled`` features [N, D] whose sampled ``rows``
    (int [M]) carry the fuzzy graph ``heads``/``tails`` (int [E], rows of the sample) with
    ``weights`` float [E]; points outside the sample follow their sampled neighbours."""
    start = pca_start(scaled, rows, seed)
    return polish.polish(start, rows, heads, tails, weights, epochs, curve, seed,
                         LAYOUT_LEARNING_RATE)


def anchor_edges(scaled: np.ndarray, rows: np.ndarray, coords: np.ndarray) -> TemporalEdges:
    """Edges that tie each sampled row (int [M]) of ``scaled`` [N, D] to where the initial map
    ``coords`` [N, 2] drew it, with the tightest margin (no drift): the fit reproduces it."""
    count = len(rows)
    return TemporalEdges(rows.astype(np.int64), scaled[rows].astype(np.float32),
                         coords[rows].astype(np.float32),
                         np.full(count, MARGIN_RANGE[0], np.float32),
                         np.ones(count, np.float32))
