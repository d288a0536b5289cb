"""Hugging Face: ``Trainer(..., callbacks=[SentryCamCallback()])`` watches ``trainer.train()``.

``SentryCamCallback(probe=None, **attach_kwargs)`` attaches on train begin (the world's main
process only) to the Trainer's model and optimizer (the torch optimizer inside accelerate's
wrapper, so steps skipped by a gradient scaler are not counted). It records the loss of every
optimizer step (the mean of the model's ``output.loss`` over the step's accumulated batches,
read by a forward hook during training forwards only), the learning rate (from the optimizer,
after the scheduler), every metric the Trainer logs or evaluates under its own name
(``eval_loss``, ``eval_accuracy``, ``train_runtime``, ...; the Trainer's averaged ``loss``,
``learning_rate`` and ``grad_norm`` are left out, as the run records each step's own), the
epochs, and detaches at train end after a last snapshot. When ``train()`` ends in an exception
the run ends with status ``failed``, as a ``with attach(...)`` block does.

Without ``probe=``, the probe comes from the Trainer's eval dataset (the first one of a dict),
else from its training dataset; a Dataset given as ``probe=`` is collated like the training
batches. Either way the Trainer's own data collator pads the probe, with the columns the model
does not take removed as the Trainer removes them.

The Trainer hands callbacks neither itself nor its eval dataset before the first evaluation,
and calls none of them when ``train()`` raises. So the callback finds the Trainer whose
training loop called it on the call stack, and a :class:`TrainingLoopWatch` notices that loop's
frame leaving the stack without ``on_train_end``.
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading
from collections.abc import Mapping
from types import FrameType
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Dataset

from sentrycam.capture.batches import Collated
from sentrycam.capture.callbacks import CallbackRun, loader_probe, missing_framework

try:
    from transformers import Trainer, TrainerCallback
except ImportError as exc:
    raise missing_framework("transformers", "huggingface") from exc

__all__ = ["SentryCamCallback"]

log = logging.getLogger(__name__)

#: What the Trainer logs that the run records per step itself.
TRAINER_OWN = frozenset({"learning_rate", "grad_norm", "epoch"})
#: How many frames above ``on_train_begin`` to look for the Trainer's training loop: the
#: callback handler's two, a subclass's overrides, accelerate's batch-size finder.
TRAINER_SEARCH_DEPTH = 12
#: How often (seconds) the watch looks whether the training loop is still running.
LOOP_POLL_S = 0.5


class SentryCamCallback(TrainerCallback):
    """Streams ``Trainer.train()`` to sentrycam; ``attach_kwargs`` as for ``capture.attach``."""

    def __init__(self, probe: Any = None, **attach_kwargs: Any) -> None:
        self._capture = CallbackRun(probe, attach_kwargs, skip=TRAINER_OWN)
        self._hook: Any = None
        self._watch: TrainingLoopWatch | None = None
        self._ending = threading.Lock()  # the watch may end the run from its own thread

    @property
    def run(self) -> Any:
        """The :class:`~sentrycam.capture.run.Run` while training on the main process."""
        return self._capture.run

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None,
                       optimizer: Any = None, train_dataloader: Any = None,
                       eval_dataloader: Any = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        self._end("failed")  # a previous train() that raised and went unnoticed so far
        trainer, loop = calling_trainer(sys._getframe(1))
        probe = self._capture.probe
        if probe is None:
            probe = _default_probe(trainer, eval_dataloader, train_dataloader)
        elif _map_style(probe):
            collate = getattr(train_dataloader, "collate_fn", None)
            probe = Collated(probe, collate) if collate is not None else probe
        self._capture.start(model, _torch_optimizer(optimizer), probe)
        self._hook = model.register_forward_hook(self._on_forward)
        if loop is not None:
            self._watch = TrainingLoopWatch(loop, self._on_loop_gone)

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
        self._end("finished")

    def _on_loop_gone(self) -> None:
        log.warning("sentrycam: the Trainer's training loop ended without finishing (an "
                    "exception); the run ends as failed")
        self._end("failed")

    def _end(self, status: str) -> None:
        with self._ending:
            watch, self._watch = self._watch, None
            hook, self._hook = self._hook, None
            if watch is not None:
                watch.stop()
            if hook is not None:
                hook.remove()
            self._capture.finish(status)


class TrainingLoopWatch:
    """Calls ``on_gone()`` once, when ``loop`` (a frame running on the calling thread) has left
    that thread's stack, which happens without ``stop()`` only when it raised; looked for every
    ``LOOP_POLL_S`` seconds on a daemon thread, and at interpreter exit. A traceback keeping the
    frame alive does not keep it on the stack."""

    def __init__(self, loop: FrameType, on_gone: Callable[[], None]) -> None:
        self._loop, self._on_gone = loop, on_gone
        self._thread_id = threading.get_ident()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        atexit.register(self._at_exit)
        threading.Thread(target=self._poll, name="sentrycam-trainer-watch", daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            self._stopped.set()
            self._loop = None
        atexit.unregister(self._at_exit)

    def _running(self) -> bool:
        frame = sys._current_frames().get(self._thread_id)
        while frame is not None and frame is not self._loop:
            frame = frame.f_back
        return frame is not None

    def _poll(self) -> None:
        while not self._stopped.wait(LOOP_POLL_S):
            if not self._running():
                self._gone()

    def _at_exit(self) -> None:  # before the run's own exit handler, which says "detached"
        self._gone()

    def _gone(self) -> None:
        with self._lock:
            if self._stopped.is_set():
                return
            self._stopped.set()
            self._loop = None
        self._on_gone()


def calling_trainer(frame: FrameType | None) -> tuple[Any, FrameType | None]:
    """(the ``transformers.Trainer``, the frame of its method) nearest above ``frame`` on the
    call stack, or (None, None)."""
    for _ in range(TRAINER_SEARCH_DEPTH):
        if frame is None:
            break
        owner = frame.f_locals.get("self")
        if isinstance(owner, Trainer):
            return owner, frame
        frame = frame.f_back
    return None, None


def _default_probe(trainer: Any, eval_loader: Any, train_loader: Any) -> Any:
    """The eval dataset through the Trainer's eval collator (its eval dataloader, built but
    never iterated), else the training dataloader's dataset through its collator."""
    if eval_loader is None and trainer is not None and trainer.eval_dataset is not None:
        sets = trainer.eval_dataset
        eval_loader = trainer.get_eval_dataloader(
            next(iter(sets)) if isinstance(sets, Mapping) else None)
    return loader_probe(eval_loader if eval_loader is not None else train_loader)


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
