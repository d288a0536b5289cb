"""Probe batches of any structure: one tensor ``[N, ...]``, a tuple of tensors or a mapping of
named tensors.

Hugging Face models take keyword inputs (``{"input_ids": int64 [N, T], "attention_mask":
int64 [N, T], ...}``), some models several positional tensors, most one. These helpers treat
all alike: rows are selected, concatenated, moved and fed to the model the same way, so the
probe code never asks which kind it holds. A mapping batch is a plain ``dict``, a positional
one a ``tuple``; their tensors all share their first (sample) dimension.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Union

import numpy as np
import torch
from torch import nn

Batch = Union[torch.Tensor, tuple[torch.Tensor, ...], dict[str, torch.Tensor]]

#: Keys of a mapping item or batch that hold the class labels, not model inputs.
LABEL_KEYS = ("labels", "label")
#: The key whose [N, T] mask marks real tokens (1) and padding (0).
MASK_KEY = "attention_mask"


def apply(batch: Batch, fn: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
    """``fn`` applied to the tensor, or to every tensor of a tuple or mapping batch."""
    if isinstance(batch, dict):
        return {key: fn(value) for key, value in batch.items()}
    if isinstance(batch, tuple):
        return tuple(fn(value) for value in batch)
    return fn(batch)


def tensors(batch: Batch) -> list[torch.Tensor]:
    if isinstance(batch, dict):
        return list(batch.values())
    return list(batch) if isinstance(batch, tuple) else [batch]


def is_tensor_tuple(value: Any) -> bool:
    """True for a tuple/list of tensors or arrays: several positional inputs."""
    return isinstance(value, (tuple, list)) and len(value) > 0 and all(
        isinstance(item, (torch.Tensor, np.ndarray)) for item in value)


def size(batch: Batch) -> int:
    """The number of samples N."""
    return len(tensors(batch)[0])


def sample_shape(batch: Batch) -> Any:
    """Per-sample shape (without N): a tuple, or ``(key, tuple)`` pairs for a mapping batch,
    or ``("#0", tuple), ...`` for a tuple batch."""
    if isinstance(batch, dict):
        return tuple(sorted((key, tuple(value.shape[1:])) for key, value in batch.items()))
    if isinstance(batch, tuple):
        return tuple((f"#{i}", tuple(value.shape[1:])) for i, value in enumerate(batch))
    return tuple(batch.shape[1:])


def describe(batch: Batch) -> str:
    """``"shape (2, 8) (dtype torch.float32)"``, ``"input_ids (2, 16) int64, ..."`` or
    ``"#0 (2, 8) float32, #1 (2, 3) int64"``."""
    if isinstance(batch, (dict, tuple)):
        named = batch.items() if isinstance(batch, dict) else (
            (f"#{i}", value) for i, value in enumerate(batch))
        return ", ".join(f"{key} {tuple(value.shape)} {str(value.dtype).removeprefix('torch.')}"
                         for key, value in named)
    return f"shape {tuple(batch.shape)} (dtype {batch.dtype})"


def concat(parts: list[Batch]) -> Batch:
    """Parts with the same keys joined along the sample dimension."""
    if isinstance(parts[0], dict):
        return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}
    if isinstance(parts[0], tuple):
        return tuple(torch.cat(column) for column in zip(*parts))
    return torch.cat(parts)


def stack(items: list[Any], what: str) -> Batch:
    """Per-sample inputs (tensors, tuples of them, or mappings of tensors/arrays/number lists)
    as one batch; ValueError when their shapes, keys or lengths differ."""
    if isinstance(items[0], Mapping):
        keys = list(items[0])
        if any(list(item) != keys for item in items):
            raise ValueError(f"{what} items have different keys; every item needs {keys}")
        return {key: stack([as_tensor(item[key], f"{what} {key!r}") for item in items],
                           f"{what} {key!r}") for key in keys}
    if isinstance(items[0], tuple):
        if len({len(item) for item in items}) > 1:
            raise ValueError(f"{what} items have different numbers of input tensors")
        return tuple(stack([as_tensor(value, what) for value in column], what)
                     for column in zip(*items))
    shapes = {tuple(x.shape) for x in items}
    if len(shapes) > 1:
        raise ValueError(f"{what} samples have different shapes ({sorted(shapes)[:3]}); pad or "
                         "resize them to one shape (for token ids: pad to one length, e.g. a "
                         "tokenizer with padding='max_length'), or pass a collated batch")
    return torch.stack(items)


def as_tensor(value: Any, what: str) -> torch.Tensor:
    """A CPU tensor from a tensor, an array or a (nested) list of numbers."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, (list, tuple)):
        try:
            return torch.tensor(value)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"{what} is a list that is not a rectangle of numbers") from exc
    raise ValueError(f"{what} must be a torch tensor or numpy array, got {type(value).__name__}")


def split_mapping(mapping: Mapping, what: str) -> tuple[dict[str, Any], Any]:
    """``(inputs, labels or None)`` of a mapping item or batch: the label key comes out."""
    if not mapping:
        raise ValueError(f"{what} is an empty mapping; it needs the model's input tensors")
    found = [key for key in LABEL_KEYS if key in mapping]
    inputs = {str(key): value for key, value in mapping.items() if key not in LABEL_KEYS}
    if not inputs:
        raise ValueError(f"{what} holds only labels; it needs the model's input tensors too")
    return inputs, (mapping[found[0]] if found else None)


def call(model: nn.Module, batch: Batch) -> Any:
    """The model's forward on a batch: keyword arguments for a mapping, positional ones for a
    tuple."""
    if isinstance(batch, dict):
        return model(**batch)
    return model(*batch) if isinstance(batch, tuple) else model(batch)


def token_mask(batch: Batch) -> torch.Tensor | None:
    """The batch's attention mask ([N, T], nonzero on real tokens), if it has one."""
    if isinstance(batch, dict):
        mask = batch.get(MASK_KEY)
        if isinstance(mask, torch.Tensor) and mask.ndim == 2:
            return mask
    return None


class Collated:
    """A map-style dataset read through its training collate function (the framework's
    padding collator, say): probe samples are taken from ``dataset`` one by one, then the
    selected ones are collated together, so a probe of variable-length token sequences is
    padded as a training batch would be. ``collate(items)`` returns a batch: a tensor, a
    mapping (labels under ``labels``/``label``) or a tuple ``(inputs, labels, ...)``."""

    def __init__(self, dataset: Any, collate: Callable[[list[Any]], Any]) -> None:
        self.dataset, self.collate = dataset, collate

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[index]

    def inputs(self, items: list[Any], what: str) -> Batch:
        """The model inputs of ``items`` collated: a tensor [N, ...] or a dict of them."""
        batch = self.collate(items)
        if isinstance(batch, Mapping):
            batch = split_mapping(batch, what)[0]
        elif isinstance(batch, (tuple, list)):
            batch = batch[0]
        return apply(batch, lambda value: as_tensor(value, f"{what} inputs"))
