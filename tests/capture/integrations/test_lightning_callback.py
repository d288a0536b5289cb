"""The Lightning callback with the real ``lightning.Trainer``: what the store holds afterwards,
training left bit-identical, failures closing the run."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

lightning = pytest.importorskip("lightning")

from sentrycam.capture.lightning import SentryCamCallback  # noqa: E402
from sentrycam.capture.transport import MemoryTransport  # noqa: E402
from sentrycam.protocol.messages import ProbeSet, RunEnd, Snapshot  # noqa: E402

CLASSES, FEATURES = 3, 8


class Classifier(lightning.LightningModule):
    """A small MLP with dropout (so a stray draw from the global RNG would change training);
    keeps the loss of every training batch in ``batch_losses``."""

    def __init__(self, fail_at_batch: int | None = None) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(FEATURES, 16), nn.ReLU(), nn.Dropout(0.2),
                                 nn.Linear(16, CLASSES))
        self.fail_at_batch = fail_at_batch
        self.batch_losses: list[float] = []

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        if batch_idx == self.fail_at_batch:
            raise RuntimeError("boom")
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.batch_losses.append(loss.item())
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", nn.functional.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def loaders(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(144) % CLASSES
    x = torch.randn(144, FEATURES, generator=gen) + 2.0 * nn.functional.one_hot(y, FEATURES)
    train = DataLoader(TensorDataset(x[:96], y[:96]), batch_size=16, shuffle=True)
    return train, DataLoader(TensorDataset(x[96:], y[96:]), batch_size=16)


def fit(callbacks: list, max_epochs: int = 4, accumulate: int = 2, validate: bool = True,
        **module_kwargs):
    lightning.seed_everything(0, verbose=False)
    module = Classifier(**module_kwargs)
    trainer = lightning.Trainer(
        max_epochs=max_epochs, accelerator="cpu", devices=1, deterministic=True,
        accumulate_grad_batches=accumulate, callbacks=callbacks, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        log_every_n_steps=1)
    train, val = loaders()
    trainer.fit(module, train, val if validate else None)
    return module, trainer


@pytest.mark.projector
def test_a_lightning_fit_streams_loss_lr_metrics_snapshots_and_maps(projecting_live):
    """The 2D maps are the real projector's (the deepest two layers of each snapshot)."""
    live = projecting_live
    callback = SentryCamCallback(url=live.url, every=2, overhead_budget=None,
                                 run_name="lightning-test")
    module, trainer = fit([callback])
    stored = live.stored("lightning-test")
    steps = trainer.global_step  # 4 epochs x 6 batches / 2 accumulated = 12 optimizer steps
    assert steps == 12
    assert stored.summary["status"] == "finished" and stored.summary["last_step"] == steps - 1
    # The loss of every optimizer step: the mean of its two accumulated batches' losses.
    expected = [sum(module.batch_losses[2 * s: 2 * s + 2]) / 2 for s in range(steps)]
    assert sorted(stored.scalars["loss"]) == list(range(steps))
    assert [stored.scalars["loss"][s] for s in range(steps)] == pytest.approx(expected, rel=1e-5)
    assert set(stored.scalars["lr"]) == set(range(steps))
    assert all(v == pytest.approx(0.1) for v in stored.scalars["lr"].values())
    # One validation per epoch, each recorded at the epoch's last step under its own name.
    for name in ("val_loss", "val_acc"):
        assert sorted(stored.scalars[name]) == [2, 5, 8, 11], name
    assert math.isclose(stored.scalars["val_acc"][11], float(trainer.callback_metrics["val_acc"]))
    assert "train_loss" in stored.scalars
    assert len(stored.snapshot_steps) >= 5 and stored.snapshot_steps[-1] == steps - 1
    assert {m["step"] for m in stored.maps} == set(stored.snapshot_steps)
    assert {m["n"] for m in stored.maps} == {48}
    assert live.projector()["projected"] >= len(stored.snapshot_steps)
    assert stored.summary["n_probe"] == 48  # the validation set, never the shuffled sampler


def test_training_is_bit_identical_with_and_without_the_callback():
    plain, _ = fit([], max_epochs=2)
    watched, _ = fit([SentryCamCallback(transport=MemoryTransport(), every=1,
                                        overhead_budget=None)], max_epochs=2)
    for (name, a), b in zip(plain.state_dict().items(), watched.state_dict().values()):
        assert torch.equal(a, b), name
    assert plain.batch_losses == watched.batch_losses


def total_norm(module: nn.Module) -> float:
    return float(torch.linalg.vector_norm(torch.stack(
        [p.grad.norm() for p in module.parameters() if p.grad is not None])))


class NormKeeper(Classifier):
    """Keeps the gradients' total norm of each optimizer step before Lightning clips them
    (``before_clip``) and as the optimizer used them (``after_clip``)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.before_clip: list[float] = []
        self.after_clip: list[float] = []

    def on_before_optimizer_step(self, optimizer) -> None:
        self.before_clip.append(total_norm(self))

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        self.after_clip.append(total_norm(self))


def test_the_gradient_norms_are_each_steps_own_before_and_after_lightnings_clipping():
    lightning.seed_everything(0, verbose=False)
    module = NormKeeper()
    transport = MemoryTransport()
    trainer = lightning.Trainer(
        max_epochs=1, accelerator="cpu", devices=1, gradient_clip_val=0.5, logger=False,
        callbacks=[SentryCamCallback(transport=transport, every=100, overhead_budget=None)],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, loaders()[0])
    norms = {m.step: m.values for m in transport.of_kind("scalars")
             if "grad_norm" in m.values}
    assert len(module.before_clip) == trainer.global_step == 6
    assert sorted(norms) == list(range(6))
    for step, before in enumerate(module.before_clip):
        assert before > 0.5
        assert norms[step]["grad_norm"] == pytest.approx(before, rel=1e-5), step
        assert norms[step]["grad_norm_clipped"] == pytest.approx(
            module.after_clip[step], rel=1e-5), step


def test_every_epoch_follows_lightnings_epochs():
    transport = MemoryTransport()
    fit([SentryCamCallback(transport=transport, every="epoch", overhead_budget=None)],
        max_epochs=3)
    snapshots = [m for m in transport.messages if isinstance(m, Snapshot)]
    # After each epoch (3 optimizer steps), labelled with the epochs completed.
    assert [(s.step, s.epoch) for s in snapshots] == [(2, 1), (5, 2), (8, 3)]


def test_an_exception_in_training_ends_the_run_as_failed():
    transport = MemoryTransport()
    callback = SentryCamCallback(transport=transport, every=1, overhead_budget=None)
    with pytest.raises(RuntimeError, match="boom"):
        fit([callback], fail_at_batch=3, accumulate=1)
    ends = [m for m in transport.messages if isinstance(m, RunEnd)]
    assert [(end.status, end.step) for end in ends] == [("failed", 2)]
    assert callback.run is None


def test_without_validation_the_probe_comes_from_the_training_set():
    transport = MemoryTransport()
    fit([SentryCamCallback(transport=transport, every=5, overhead_budget=None)], max_epochs=1,
        validate=False)
    probe = next(m for m in transport.messages if isinstance(m, ProbeSet))
    assert sorted(probe.sample_ids.tolist()) == list(range(96))  # dataset indices, in full
    assert [m.step for m in transport.messages if isinstance(m, Snapshot)] == [0, 2]
