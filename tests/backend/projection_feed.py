"""Snapshots fed straight to a projector worker's change feed (the pool and Ray tests share
them)."""

from __future__ import annotations

import os

import numpy as np

from sentrycam.backend.feed import Change, ChangeFeed
from sentrycam.protocol.changes import ChangeKind
from sentrycam.protocol.messages import ProbeSet, RunStart, Snapshot

N = 120
WAIT_S = 900.0  # worker warm-ups on a busy 2-core machine take minutes
#: A step budget and no time limit: maps that do not depend on how busy the machine is.
FAST = {"first_steps": 60, "steps": 10, "time_limit_s": None, "first_time_limit_s": None}
RUNS = ("run0000001", "run0000002")


def snapshot(run_id: str, step: int, labels: np.ndarray) -> Snapshot:
    """A snapshot of two layers, features float16 [N, 16] and [N, 8] in 4 clusters, the same
    for the same (run, step)."""
    rng = np.random.default_rng([step, len(run_id), ord(run_id[-1])])
    centres = np.eye(4, 16)[labels] * 6.0
    wide = (centres + rng.normal(size=(N, 16))).astype(np.float16)
    narrow = (centres[:, :8] + rng.normal(size=(N, 8))).astype(np.float16)
    return Snapshot(run_id, step, 0, np.arange(N, dtype=np.int64),
                    {"pred": labels.astype(np.int64)}, {"conv": wide, "fc": narrow},
                    {"conv": 0, "fc": 0})


def start_runs(store, runs=RUNS) -> np.ndarray:
    labels = np.random.default_rng(0).integers(0, 4, N).astype(np.int64)
    seq = 0
    for run_id in runs:
        store.write([(seq, RunStart(run_id, "toy", 1.7e9, {})),
                     (seq + 1, ProbeSet(run_id, np.arange(N, dtype=np.int64), labels,
                                        np.zeros(N, np.uint8)))])
        seq += 2
    return labels


def publish(feed: ChangeFeed, run_id: str, step: int, labels: np.ndarray) -> None:
    feed.publish([Change(run_id, ChangeKind.SNAPSHOT, step, None,
                         snapshot(run_id, step, labels))])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
