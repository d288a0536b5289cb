"""The probe set: a fixed, class-stratified set of samples with stable ids.

Sources: a tuple ``(inputs [N, ...], labels int [N] or None)`` of tensors or arrays, a map-style
``torch.utils.data.Dataset`` (indexed, items ``(input, label, ...)``, a bare input or a mapping
``{"input_ids": ..., "label": ...}``), or a ``DataLoader`` (its ``.dataset``; its sampler is
never iterated, because a RandomSampler draws from the global torch RNG and would change
training). Sample ids are indices into the source;
held-out ids continue after the training source's length. Inputs may be a mapping of named
tensors (keyword inputs, as Hugging Face models take): a tuple ``({"input_ids": [N, T], ...},
labels)``, a collated batch ``{"input_ids": [N, T], ..., "labels": [N]}``, or a Dataset of
mapping items (see :mod:`~sentrycam.capture.batches`; ``labels``/``label`` keys are the labels).
Several positional inputs: a tuple ``((a [N, ...], b [N, ...]), labels)`` or items ``((a, b),
label)``.

Selection uses a local ``np.random.default_rng(seed)``, never a global RNG; reading items of a
dataset (whose transforms may draw random numbers) happens with the global torch, numpy and
Python RNG states saved and restored.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from sentrycam.capture import batches
from sentrycam.capture.batches import Batch
from sentrycam.protocol.messages import SPLIT_HELDOUT, SPLIT_TRAIN, ProbeSet

#: A dataset larger than this many times the wanted probe size is sampled from a random pool of
#: that size before stratifying, so that attaching never reads a whole large dataset.
POOL_FACTOR = 5
#: Probe samples checked for NaN/Inf at a time (bounds the temporary mask).
FINITE_CHECK_ROWS = 256


@dataclass(frozen=True)
class Probe:
    """Selected probe samples. ``inputs`` [N, ...] (or a tuple or dict of such tensors) on
    CPU (pinned when the model is on CUDA); ``sample_ids`` int64 [N] (unique); ``labels``
    int64 [N] (-1 unknown); ``split`` uint8 [N]."""

    inputs: Batch
    sample_ids: np.ndarray
    labels: np.ndarray
    split: np.ndarray

    def __len__(self) -> int:
        return len(self.sample_ids)

    def message(self, run_id: str) -> ProbeSet:
        return ProbeSet(run_id=run_id, sample_ids=self.sample_ids, labels=self.labels,
                        split=self.split)


@contextlib.contextmanager
def preserved_global_rngs() -> Iterator[None]:
    """Restore the global torch (CPU and CUDA), numpy and Python RNG states on exit."""
    torch_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    np_state = np.random.get_state()
    py_state = random.getstate()
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        np.random.set_state(np_state)
        random.setstate(py_state)


class _Source:
    """Uniform read access to one probe source: its length, labels and selected inputs."""

    def __init__(self, source: Any, what: str) -> None:
        self.what = what
        self.tensors: tuple[Batch, torch.Tensor | None] | None = None
        self.dataset: Dataset | None = None
        if isinstance(source, DataLoader):
            source = source.dataset
        if isinstance(source, TensorDataset):
            source = source.tensors[:2] if len(source.tensors) > 1 else (source.tensors[0], None)
        if isinstance(source, Mapping):  # a collated batch, labels under "labels"
            source = batches.split_mapping(source, what)
        if isinstance(source, (tuple, list)):
            self.tensors = _check_tensors(source, what)
        elif isinstance(source, IterableDataset):
            raise ValueError(f"{what} is an IterableDataset, which cannot be indexed; pass a "
                             "map-style Dataset or a tuple (inputs, labels) of tensors")
        elif isinstance(source, Dataset) or (
                hasattr(source, "__getitem__") and hasattr(source, "__len__")
                and not isinstance(source, (str, bytes, np.ndarray, torch.Tensor))):
            self.dataset = source
        else:
            raise ValueError(f"{what} must be a tuple (inputs, labels), a Dataset or a "
                             "DataLoader (or a mapping of input tensors); "
                             f"got {type(source).__name__}")
        if len(self) == 0:
            raise ValueError(f"{what} is empty; pass at least one sample")

    def __len__(self) -> int:
        return batches.size(self.tensors[0]) if self.tensors is not None else len(self.dataset)

    def candidate_labels(self, limit: int, rng: np.random.Generator
                         ) -> tuple[np.ndarray, np.ndarray]:
        """(indices, labels) of the candidates for selection: all samples, or a random pool."""
        n = len(self)
        if self.tensors is not None:
            labels = self.tensors[1]
            return np.arange(n), (np.full(n, -1, np.int64) if labels is None
                                  else labels.numpy().astype(np.int64))
        targets = getattr(self.dataset, "targets", None)
        if targets is not None and len(targets) == n:
            return np.arange(n), _check_labels(np.asarray(targets), n, self.what)
        pool = np.arange(n) if n <= limit else np.sort(rng.choice(n, limit, replace=False))
        return pool, np.array([_item_label(self._item(int(i)), self.what) for i in pool],
                              dtype=np.int64)

    def inputs(self, indices: np.ndarray) -> Batch:
        if self.tensors is not None:
            rows = torch.from_numpy(indices)
            return batches.apply(self.tensors[0], lambda tensor: tensor[rows])
        if isinstance(self.dataset, batches.Collated):
            items = [self._item(int(i)) for i in indices]
            with preserved_global_rngs():  # a collator may draw random numbers too
                return self.dataset.inputs(items, self.what)
        return batches.stack([_item_input(self._item(int(i)), self.what) for i in indices],
                             self.what)

    def _item(self, index: int) -> Any:
        with preserved_global_rngs():
            return self.dataset[index]


def _check_labels(labels: np.ndarray, n: int, what: str) -> np.ndarray:
    if labels.ndim != 1 or not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise ValueError(f"{what} labels must be a 1-D integer tensor of class indices "
                         f"(got shape {labels.shape}, dtype {labels.dtype}); pass labels=None "
                         "if there are none")
    if len(labels) != n:
        raise ValueError(f"{what} has {n} inputs but {len(labels)} labels; they must match")
    if len(labels) and labels.min() < -1:
        raise ValueError(f"{what} labels must be class indices >= 0 (or -1 for unknown), "
                         f"found {labels.min()}")
    return labels.astype(np.int64)


def _check_tensors(source: tuple | list, what: str) -> tuple[Batch, torch.Tensor | None]:
    if len(source) != 2:
        raise ValueError(f"{what} must be a pair (inputs, labels) with labels possibly None; got "
                         f"a sequence of {len(source)} items")
    inputs = source[0]
    if isinstance(inputs, Mapping):
        inputs = batches.split_mapping(inputs, what)[0]
    elif batches.is_tensor_tuple(inputs):  # several positional inputs
        inputs = tuple(inputs)
    inputs = batches.apply(inputs, lambda value: batches.as_tensor(value, f"{what} inputs"))
    if any(tensor.ndim == 0 for tensor in batches.tensors(inputs)):
        raise ValueError(f"{what} inputs must have a batch dimension: shape [N, ...]")
    n = {len(tensor) for tensor in batches.tensors(inputs)}
    if len(n) > 1:
        raise ValueError(f"{what} input tensors have different numbers of samples {sorted(n)}")
    if source[1] is None:
        return inputs, None
    labels = _check_labels(batches.as_tensor(source[1], f"{what} labels").numpy(),
                           batches.size(inputs), what)
    return inputs, torch.from_numpy(labels)


def _item_input(item: Any, what: str) -> torch.Tensor | dict[str, Any]:
    if isinstance(item, Mapping):
        return batches.split_mapping(item, f"{what} item")[0]
    value = item[0] if isinstance(item, (tuple, list)) else item
    if isinstance(value, Mapping):
        return dict(value)
    if batches.is_tensor_tuple(value):
        return tuple(value)
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return batches.as_tensor(value, what)
    raise ValueError(f"{what} items must be (input, label) pairs or bare inputs with a tensor "
                     f"input; got an input of type {type(value).__name__}")


def _item_label(item: Any, what: str) -> int:
    if isinstance(item, Mapping):
        label = batches.split_mapping(item, f"{what} item")[1]
    elif isinstance(item, (tuple, list)) and len(item) >= 2:
        label = item[1]
    else:
        return -1
    if label is None:
        return -1
    if isinstance(label, torch.Tensor):
        label = label.detach().cpu().numpy()
    if isinstance(label, (np.ndarray, np.generic)) and label.size == 1:
        label = label.reshape(()).item()
    if isinstance(label, bool) or not isinstance(label, int):
        raise ValueError(f"{what} items must be (input, label) with an integer class label; got "
                         f"a label of type {type(label).__name__}")
    return int(label)


def stratified_choice(labels: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions of ``k`` samples, class proportions kept and every class present when
    ``k`` >= the number of classes. ``labels`` int64 [N] (-1 unknown counts as one class)."""
    n = len(labels)
    if k >= n:
        return np.arange(n)
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    quota = _class_quota(counts, k, rng)
    chosen = [rng.choice(np.flatnonzero(inverse == c), quota[c], replace=False)
              for c in range(len(classes)) if quota[c]]
    return np.sort(np.concatenate(chosen))


def _class_quota(counts: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Samples per class: proportional, at least one each when possible, summing to ``k``."""
    if k < len(counts):
        quota = np.zeros_like(counts)
        quota[rng.choice(len(counts), k, replace=False)] = 1
        return quota
    target = counts / counts.sum() * k
    quota = np.minimum(np.maximum(np.floor(target).astype(np.int64), 1), counts)
    while quota.sum() > k:  # the minimum of one per class overshot: trim the largest
        quota[np.argmax(quota)] -= 1
    while quota.sum() < k:  # hand out the rest by largest remainder, where room is left
        room = quota < counts
        remainder = np.where(room, target - quota, -np.inf)
        quota[np.argmax(remainder)] += 1
    return quota


def _split_sizes(n_train: int, n_heldout: int, probe_size: int) -> tuple[int, int]:
    """How many train and held-out samples fit in ``probe_size``: all of both if they fit, else
    the held-out split gets at least a quarter (or what the train split leaves free)."""
    if n_train + n_heldout <= probe_size:
        return n_train, n_heldout
    heldout = min(n_heldout, max(probe_size // 4, probe_size - n_train))
    return min(n_train, probe_size - heldout), heldout


def check_finite(inputs: Batch, indices: np.ndarray, what: str) -> None:
    """ValueError naming the samples whose inputs hold NaN or Inf.

    ``inputs`` [n, ...] or a dict of them (any dtype; only floating and complex inputs can hold
    NaN/Inf);
    ``indices`` int64 [n]: each row's index in its source, which the message quotes. A probe
    sample with NaN gives NaN features and predictions at every snapshot, so its maps and the
    alerts computed from them would describe the data, not the training: refuse it here.
    """
    bad = torch.zeros(len(indices), dtype=torch.bool)
    for tensor in batches.tensors(inputs):
        if (tensor.is_floating_point() or tensor.is_complex()) and tensor.numel():
            # In chunks: the mask of a whole probe of images would be a quarter of its size.
            bad |= torch.cat([~torch.isfinite(chunk.reshape(len(chunk), -1)).all(dim=1)
                              for chunk in tensor.split(FINITE_CHECK_ROWS)])
    n_bad = int(bad.sum())
    if not n_bad:
        return
    shown = [int(i) for i in indices[bad.numpy()][:5]]
    listed = ", ".join(map(str, shown)) + (", ..." if n_bad > len(shown) else "")
    raise ValueError(
        f"{what} data has NaN or Inf input values in {n_bad} of the {len(indices)} samples "
        f"selected (indices in the {what} source: {listed}). Those samples cannot be mapped "
        f"and would make every snapshot's predictions non-finite. Drop or repair them before "
        f"attaching, e.g. keep = torch.isfinite(x).flatten(1).all(1); x, y = x[keep], y[keep]")


def check_probe_arguments(probe: Any, heldout: Any, probe_size: Any) -> None:
    """ValueError for a held-out set without a probe, or a probe size that is not an int > 0."""
    if heldout is not None and probe is None:
        raise ValueError("heldout needs a probe: pass probe=(inputs, labels) as well")
    if isinstance(probe_size, bool) or not isinstance(probe_size, int) or probe_size < 1:
        raise ValueError(f"probe_size must be a positive integer, got {probe_size!r}")


def build_probe(probe: Any, heldout: Any, probe_size: int, seed: int, pin: bool) -> Probe:
    """Read, check and select the probe samples (ValueError naming any problem)."""
    rng = np.random.default_rng(seed)
    sources = [_Source(probe, "probe")]
    if heldout is not None:
        sources.append(_Source(heldout, "heldout"))
    sizes = ((min(len(sources[0]), probe_size), 0) if heldout is None
             else _split_sizes(len(sources[0]), len(sources[1]), probe_size))
    parts, offset = [], 0
    for split, (source, size) in enumerate(zip(sources, sizes)):
        if size:
            pool, labels = source.candidate_labels(POOL_FACTOR * size, rng)
            keep = stratified_choice(labels, size, rng)
            inputs = source.inputs(pool[keep])
            check_finite(inputs, pool[keep], source.what)
            parts.append((inputs, pool[keep] + offset, labels[keep],
                          np.full(size, SPLIT_HELDOUT if split else SPLIT_TRAIN, np.uint8)))
        offset += len(source)
    shapes = {batches.sample_shape(p[0]) for p in parts}
    if len(shapes) > 1:
        raise ValueError(f"probe and heldout inputs have different sample shapes {sorted(shapes)}; "
                         "they must match what the model takes")
    inputs = batches.apply(batches.concat([p[0] for p in parts]), torch.Tensor.contiguous)
    return Probe(inputs=batches.apply(inputs, torch.Tensor.pin_memory) if pin else inputs,
                 sample_ids=np.concatenate([p[1] for p in parts]).astype(np.int64),
                 labels=np.concatenate([p[2] for p in parts]).astype(np.int64),
                 split=np.concatenate([p[3] for p in parts]))
