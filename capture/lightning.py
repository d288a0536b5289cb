"""Lightning: ``trainer = Trainer(callbacks=[SentryCamCallback()])`` watches the fit.

``SentryCamCallback(probe=None, **attach_kwargs)`` attaches to the LightningModule when training
starts (global rank 0 only) with the trainer's optimizer, records the loss Lightning computed
on each optimizer step (the mean over accumulated batches), every metric the module logs
(``self.log("val_loss", ...)``: training metrics as they change, all of them after each
validation) and Lightning's epochs (so ``every="epoch"`` snapshots the model after each
epoch, labelled with the epochs completed), then takes a last
snapshot and detaches when fitting ends (status ``failed`` on an exception). Without
``probe=``, the probe is drawn from the validation dataloader's dataset (else the training
one) through its collate function, without iterating its sampler.

Works with the ``lightning`` package or the older ``pytorch_lightning``.
"""

from __future__ import annotations

from typing import Any

from sentrycam.capture.callbacks import CallbackRun, loader_probe, missing_framework

try:
    from lightning.pytorch import Callback
except ImportError:  # the older standalone package
    try:
        from pytorch_lightning import Callback
    except ImportError as exc:
        raise missing_framework("lightning", "lightning") from exc

__all__ = ["SentryCamCallback"]


class SentryCamCallback(Callback):
    """Streams a Lightning fit to sentrycam; ``attach_kwargs`` as for ``capture.attach``."""

    def __init__(self, probe: Any = None, **attach_kwargs: Any) -> None:
        super().__init__()
        self._capture = CallbackRun(probe, attach_kwargs)

    @property
    def run(self) -> Any:
        """The :class:`~sentrycam.capture.run.Run` while fitting on rank 0, else None."""
        return self._capture.run

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.global_rank != 0:
            return
        optimizers = trainer.optimizers
        self._capture.start(pl_module, optimizers[0] if len(optimizers) == 1 else None,
                            _default_probe(trainer))

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        # As with run.log(epoch=...) in a plain loop: the number of epochs completed.
        self._capture.epoch(trainer.current_epoch + 1)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self._capture.active:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None:
            # Lightning divides the loss by the accumulation count: undo it for the batch mean.
            self._capture.add_loss(loss * trainer.accumulate_grad_batches)
        self._capture.after_batch(trainer.callback_metrics)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            self._capture.log_metrics(trainer.callback_metrics)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._capture.finish()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._capture.finish("failed")


def _default_probe(trainer: Any) -> Any:
    """The validation dataloader's dataset, else the training one's (never iterated)."""
    for loaders in (trainer.val_dataloaders, trainer.train_dataloader):
        if isinstance(loaders, (list, tuple)):
            loaders = loaders[0] if loaders else None
        elif isinstance(loaders, dict):
            loaders = next(iter(loaders.values()), None)
        probe = loader_probe(loaders) if loaders is not None else None
        if probe is not None:
            return probe
    return None
