"""Hugging Face: ``Trainer(..., callbacks=[SentryCamCallback()])`` watches ``trainer.train()``.

``SentryCamCallback(probe=None, **attach_kwargs)`` attaches on train begin (the world's main
process only) to the Trainer's model and optimizer (the torch optimizer inside accelerate's
wrapper, so steps skipped by a gradient scaler are not counted). It records the loss of every
optimizer step (the mean of the model's ``output.loss`` over the step's accumulated batches,
read by a forward hook during training forwards only), the learning rate (from the optimizer,
after the scheduler), every metric the Trainer logs or evaluates under its own name
(``eval_loss``, ``eval_accuracy``, ``train_runtime``, ...; the Trainer's averaged ``loss``,
``learning_rate`` and ``grad_norm`` are left out, as the run records each step's own), the
epochs, and detaches at train end after a last snapshot.

Without ``probe=``, the probe comes from the Trainer's eval dataloader when one exists at train
begin, else from its training dataset; a Dataset given as ``probe=`` (``eval_dataset``, say) is
collated like the training batches. Either way the Trainer's own data collator pads the probe.
The Trainer does not hand callbacks its eval dataset before the first evaluation: pass
``probe=eval_dataset`` to map the evaluation set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from sentrycam.capture.batches import Collated
from sentrycam.capture.callbacks import CallbackRun, loader_probe, missing_framework

try:
    from transformers import TrainerCallback
except ImportError as exc:
    raise missing_framework("transformers", "huggingface") from exc

__all__ = ["SentryCamCallback"]

#: What the Trainer logs that the run records per step itself.
TRAINER_OWN = frozenset({"learning_rate", "grad_norm", "epoch"})


class SentryCamCallback(TrainerCallback):
    """Streams ``Trainer.train()`` to sentrycam; ``attach_kwargs`` as for ``capture.attach``."""

    def __init__(self, probe: Any = None, **attach_kwargs: Any) -> None:
        self._capture = CallbackRun(probe, attach_kwargs, skip=TRAINER_OWN)
        self._hook: Any = None

    @property
    def run(self) -> Any:
        """The :class:`~sentrycam.capture.run.Run` while training on the main process."""
        return self._capture.run

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None,
                       optimizer: Any = None, train_dataloader: Any = None,
                       eval_dataloader: Any = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        collate = getattr(train_dataloader, "collate_fn", None)
        probe = self._capture.probe
        if probe is None:
            probe = loader_probe(eval_dataloader or train_dataloader)
        elif collate is not None and _map_style(probe):
            probe = Collated(probe, collate)
        self._capture.start(model, _torch_optimizer(optimizer), probe)
        self._hook = model.register_forward_hook(self._on_forward)

    def _on_forward(self, module: Any, args: Any, output: Any) -> None:
        if module.training and torch.is_grad_enabled():  # not the probe, not evaluation
            loss = output.get("loss") if isinstance(output, Mapping) else getattr(
                output, "loss", None)
            self._capture.add_loss(loss)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._capture.after_batch()

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.epoch is not None:
            self._capture.epoch(round(state.epoch))

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None,
               **kwargs: Any) -> None:
        if logs:
            self._capture.log_metrics(logs)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self._capture.finish()


def _map_style(probe: Any) -> bool:
    """True for an indexable dataset of items (torch's or the ``datasets`` library's), which
    the Trainer's collator has to batch; False for tensors, batches and loaders."""
    if isinstance(probe, (tuple, list, Mapping, torch.Tensor, DataLoader, Collated)):
        return False
    return isinstance(probe, Dataset) or (hasattr(probe, "__getitem__")
                                          and hasattr(probe, "__len__"))


def _torch_optimizer(optimizer: Any) -> Any:
    """The torch optimizer inside accelerate's ``AcceleratedOptimizer`` (or the one given)."""
    inner = getattr(optimizer, "optimizer", None)
    return inner if isinstance(inner, torch.optim.Optimizer) else optimizer
