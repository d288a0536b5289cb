"""What the framework callbacks (Lightning, Hugging Face) share: a thin adapter over ``attach``.

:class:`CallbackRun` attaches once training starts (rank 0 only), feeds the run the mean loss
of each optimizer step and the metrics the framework logs, and detaches at the end. Everything
else (step counting, learning rates, telemetry, snapshots) is ``attach``'s own hooks: there is
no second capture path. Imports neither framework: each callback module imports its own.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from sentrycam.capture.batches import Collated
from sentrycam.protocol.signals import LOSS

log = logging.getLogger(__name__)


def missing_framework(package: str, extra: str) -> ImportError:
    """The ImportError raised when a callback's framework is not installed."""
    return ImportError(f"this sentrycam callback needs {package}, which is not installed; "
                       f"install it with: pip install 'sentrycam[{extra}]'")


def loader_probe(loader: Any) -> Any:
    """A probe source from a DataLoader without iterating it (a sampler would draw from the
    global RNG): its dataset, read through its collate function; None without a dataset."""
    dataset = getattr(loader, "dataset", None)
    if dataset is None:
        return None
    collate = getattr(loader, "collate_fn", None)
    return Collated(dataset, collate) if collate is not None else dataset


def scalar(value: Any) -> float | None:
    """A logged metric as a float, or None when it is not one number."""
    if isinstance(value, torch.Tensor):
        return float(value.detach().item()) if value.numel() == 1 else None
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return None


class CallbackRun:
    """One ``attach`` run driven by a framework's callback events.

    ``attach_kwargs``: passed to :func:`~sentrycam.capture.attach` as given (``every``,
    ``url``, ``layers``, ...). ``skip``: metric names the framework logs that the run records
    itself (its averaged loss, its learning rate), so the curves are not written twice.
    """

    def __init__(self, probe: Any, attach_kwargs: dict[str, Any],
                 skip: frozenset[str] = frozenset()) -> None:
        for taken in ("model", "optimizer", "criterion"):
            if taken in attach_kwargs:
                raise ValueError(f"{taken}= is taken from the trainer; leave it out")
        self.probe, self.attach_kwargs, self.skip = probe, dict(attach_kwargs), skip
        self.run: Any = None
        self._losses: list[torch.Tensor] = []
        self._steps_logged = 0
        self._logged: dict[str, float] = {}

    @property
    def active(self) -> bool:
        return self.run is not None

    def start(self, model: nn.Module, optimizer: torch.optim.Optimizer | None,
              default_probe: Any) -> None:
        """Attach to ``model`` (its optimizer adopted); ``default_probe`` unless one was given."""
        from sentrycam.capture.attaching import attach

        probe = self.probe if self.probe is not None else default_probe
        self.run = attach(model, probe, optimizer=optimizer, **self.attach_kwargs)
        self._steps_logged = self.run.step

    def add_loss(self, loss: Any) -> None:
        """One forward's training loss (a tensor); kept on its device until the step ends."""
        if isinstance(loss, torch.Tensor) and loss.numel() == 1:
            self._losses.append(loss.detach())

    def after_batch(self, metrics: Mapping[str, Any] | None = None) -> None:
        """Call after each training batch: when an optimizer step was taken since the last
        call, records the mean loss of its batches and the new values of ``metrics``."""
        if self.run is None or self.run.step == self._steps_logged:
            return
        self._steps_logged = self.run.step
        values = self.new_metrics(metrics or {})
        if self._losses:
            values[LOSS.name] = float(torch.stack(self._losses).float().mean())
            self._losses.clear()
        self.run.log(**values)

    def new_metrics(self, metrics: Mapping[str, Any], every: bool = False) -> dict[str, float]:
        """The number-valued ``metrics`` not in ``skip`` whose value changed since they were
        last recorded (``every``: all of them)."""
        found = {}
        for key, value in metrics.items():
            number = scalar(value)
            if number is None or key in self.skip or key == LOSS.name:
                continue
            if every or self._logged.get(key) != number:
                found[key] = self._logged[key] = number
        return found

    def log_metrics(self, metrics: Mapping[str, Any]) -> None:
        """Record every number in ``metrics`` (evaluation results) at the last step."""
        if self.run is not None:
            values = self.new_metrics(metrics, every=True)
            if values:
                self.run.log(**values)

    def epoch(self, epoch: int) -> None:
        """A new epoch began (every="epoch" takes its snapshot here)."""
        if self.run is not None:
            self.run.log(epoch=epoch)

    def finish(self, status: str = "finished") -> None:
        """A last snapshot of the trained model (when finished), then detach."""
        run, self.run = self.run, None
        if run is None:
            return
        if status == "finished":
            run.snapshot()
        run.detach(status)
