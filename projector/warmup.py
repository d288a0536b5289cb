"""Warm-up of a process that will project: what a layer's first snapshot needs, ready ahead.

One function for every kind of worker (a thread, a process, a Ray actor): it loads the numba
layout kernel from the disk cache (compiling and caching it the first time on a machine), and
runs the initial layout, the torch fit (whose optimizer imports ``torch._dynamo``) and a later
snapshot's update once, on a tiny projector.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from sentrycam.projector import jit_cache
from sentrycam.projector.graph import compile_nn_descent
from sentrycam.projector.projector import Projector

log = logging.getLogger(__name__)

#: The warm-up's tiny snapshots: float32 [WARM_POINTS, WARM_DIM].
WARM_POINTS, WARM_DIM = 200, 16


def warm_up(nn_descent: bool = False) -> float:
    """Prepare this process to project; returns the seconds it took (about 3 s of CPU with a
    warm disk cache, a few more on a machine's first run). ``nn_descent``: also compile the
    NN-descent paths that samples above ``exact_knn_max`` points use (numba cannot cache them
    on disk; otherwise a layer's first background fit compiles them when its samples need
    them)."""
    started = time.perf_counter()
    jit_cache.enable()
    data = np.random.default_rng(0).normal(size=(WARM_POINTS, WARM_DIM)).astype(np.float32)
    ids = np.arange(WARM_POINTS)
    projector = Projector(seed=0, first_steps=2, steps=2, polish_epochs=2)
    projector.update(data, ids)  # initial layout, then the fit in the background
    projector.wait_for_fit()
    projector.update(data, ids)  # a later snapshot: temporal edges, short fit, polish
    if nn_descent:
        compile_nn_descent()
    seconds = time.perf_counter() - started
    log.info("projector warmed up in %.1f s (numba cache %s)", seconds, jit_cache.cache_dir())
    return seconds
