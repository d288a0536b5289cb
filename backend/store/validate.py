"""Checks on a batch before it is written: a malformed message is refused, whole batch and all,
with an error that names the item and the problem, so that nothing half-written is stored.

Only what the insert relies on is checked (shapes, dtypes, allowed values); the server's
pydantic models check frame headers before messages are built.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from sentrycam.protocol.messages import (Event, LayerStats, Message, ProbeSet, RunEnd, RunStart,
                                        Scalars, Snapshot, Status)
from sentrycam.backend.store.schema import RUN_STATUSES

_MESSAGE_CLASSES = (RunStart, ProbeSet, Scalars, LayerStats, Snapshot, Event, Status, RunEnd)
_END_STATUSES = tuple(s for s in RUN_STATUSES if s != "running")


def _problem(message: Message) -> str | None:
    """What is wrong with one message, or None. Checks only what the insert relies on."""
    if not isinstance(message.run_id, str) or not message.run_id:
        return "run_id must be a non-empty string"
    step = getattr(message, "step", 0)
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        return f"step must be an int >= 0, got {step!r}"
    if isinstance(message, RunStart):
        if not isinstance(message.config, Mapping):
            return f"config must be a mapping, got {type(message.config).__name__}"
        if not isinstance(message.started_at, (int, float)):
            return f"started_at must be seconds since the epoch, got {message.started_at!r}"
    elif isinstance(message, Event):
        if not isinstance(message.event, str) or not message.event:
            return f"event must be a non-empty string, got {message.event!r}"
        if not isinstance(message.message, str):
            return f"message must be a string, got {type(message.message).__name__}"
        if not isinstance(message.payload, Mapping):
            return f"payload must be a mapping, got {type(message.payload).__name__}"
    elif isinstance(message, ProbeSet):
        n = np.shape(message.sample_ids)
        if len(n) != 1 or np.shape(message.labels) != n or np.shape(message.split) != n:
            return "sample_ids, labels and split must be 1-d arrays of one length"
    elif isinstance(message, Scalars):
        bad = [k for k, v in message.values.items()
               if not isinstance(k, str) or not isinstance(v, (int, float, np.number))]
        if bad:
            return f"values must map names to numbers; bad entries: {bad[:5]}"
    elif isinstance(message, LayerStats):
        want = (len(message.layers), len(message.stats))
        if np.shape(message.values) != want:
            return f"values has shape {np.shape(message.values)}, expected {want}"
    elif isinstance(message, Snapshot):
        return _snapshot_problem(message)
    elif isinstance(message, RunEnd) and message.status not in _END_STATUSES:
        return f"status {message.status!r} is not one of {list(_END_STATUSES)}"
    return None


def _snapshot_problem(message: Snapshot) -> str | None:
    ids = np.asarray(message.sample_ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        return f"sample_ids must be a 1-d int array, got {ids.dtype} {ids.shape}"
    n = ids.shape[0]
    for layer, feats in message.features.items():
        feats = np.asarray(feats)
        if feats.ndim != 2 or feats.shape[0] != n or not np.issubdtype(feats.dtype, np.floating):
            return (f"features[{layer!r}] must be a float array of shape [{n}, D], "
                    f"got {feats.dtype} {feats.shape}")
    for name, values in message.outputs.items():
        if np.shape(values) != (n,):
            return f"outputs[{name!r}] has shape {np.shape(values)}, expected ({n},)"
    bad = {k: v for k, v in message.nonfinite.items()
           if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0}
    if bad:
        return f"nonfinite must map layers to counts >= 0; bad entries: {bad}"
    return None


def validate_batch(batch: Sequence[tuple[int, Message]]) -> None:
    """Raise ValueError naming the first bad item; nothing is written for a bad batch."""
    for index, item in enumerate(batch):
        if not isinstance(item, tuple) or len(item) != 2:
            raise ValueError(f"batch item {index} must be a (seq, message) tuple, got {item!r:.80}")
        seq, message = item
        if not isinstance(message, _MESSAGE_CLASSES):
            raise ValueError(f"batch item {index} holds a {type(message).__name__}, not a "
                             "sentrycam message; build messages from sentrycam.protocol.messages")
        if isinstance(seq, bool) or not isinstance(seq, (int, np.integer)) or seq < 0:
            raise ValueError(f"batch item {index}: seq must be an int >= 0, got {seq!r}")
        problem = _problem(message)
        if problem is not None:
            raise ValueError(f"batch item {index} ({message.kind} for run {message.run_id!r}, "
                             f"seq {seq}): {problem}; fix the sender, nothing of this batch "
                             "was stored")
