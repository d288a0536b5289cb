"""The Hugging Face callback with the real ``transformers.Trainer`` and a tiny BERT built from
a config (nothing downloaded): what the store holds afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from sentrycam.capture.huggingface import SentryCamCallback  # noqa: E402
from sentrycam.capture.transport import MemoryTransport  # noqa: E402
from sentrycam.protocol.messages import ProbeSet, RunEnd, Snapshot  # noqa: E402

VOCAB, LENGTH, CLASSES = 50, 12, 2


class Sentences(Dataset):
    """Token id sequences of different real lengths padded to ``LENGTH``; the label says
    whether token 7 occurs. Items are dicts, as tokenized Hugging Face datasets give them."""

    def __init__(self, n: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        lengths = torch.randint(4, LENGTH + 1, (n,), generator=gen)
        self.mask = (torch.arange(LENGTH)[None, :] < lengths[:, None]).long()
        self.ids = torch.randint(8, VOCAB, (n, LENGTH), generator=gen)
        self.labels = torch.arange(n) % CLASSES
        self.ids[self.labels == 1, 1] = 7
        self.ids = self.ids * self.mask

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i],
                "labels": self.labels[i]}


def accuracy(prediction) -> dict:
    return {"accuracy": float((np.argmax(prediction.predictions, 1)
                               == prediction.label_ids).mean())}


def tiny_bert():
    torch.manual_seed(0)
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, vocab_size=VOCAB, num_labels=CLASSES,
                                     max_position_embeddings=LENGTH)
    return transformers.BertForSequenceClassification(config)


@pytest.mark.slow
def test_a_trainer_run_streams_every_steps_loss_lr_eval_metrics_snapshots_and_maps(
        live, tmp_path):
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=8,
        per_device_eval_batch_size=16, num_train_epochs=3, learning_rate=5e-3,
        lr_scheduler_type="linear", eval_strategy="epoch", logging_steps=4, save_strategy="no",
        report_to=[], use_cpu=True, seed=0, disable_tqdm=True)
    eval_set = Sentences(32, seed=1)
    callback = SentryCamCallback(url=live.url, every=5, overhead_budget=None,
                                 run_name="hf-test")
    trainer = transformers.Trainer(model=tiny_bert(), args=args, train_dataset=Sentences(64, 0),
                                   eval_dataset=eval_set, compute_metrics=accuracy,
                                   callbacks=[callback])
    trainer.train()
    stored = live.stored("hf-test")
    steps = trainer.state.global_step
    assert steps == 24  # 3 epochs x 64 / 8
    assert stored.summary["status"] == "finished" and stored.summary["last_step"] == steps - 1
    loss = stored.scalars["loss"]
    assert sorted(loss) == list(range(steps))  # every optimizer step, not every 4th
    # Accelerate clips (max_grad_norm=1.0): the curve is the norm before, as the Trainer logs it
    logged = {entry["step"] - 1: entry["grad_norm"] for entry in trainer.state.log_history
              if "grad_norm" in entry}
    both = set(logged) & set(stored.scalars["grad_norm"])
    assert both
    for step in both:
        assert stored.scalars["grad_norm"][step] == pytest.approx(logged[step], rel=1e-4)
    # The Trainer's own logged loss is the mean over its logging window of our per-step losses.
    logged = {row["step"]: row["loss"] for row in trainer.state.log_history if "loss" in row}
    assert len(logged) == steps // 4
    for end, value in logged.items():
        window = [loss[s] for s in range(end - 4, end)]
        assert sum(window) / 4 == pytest.approx(value, rel=1e-3, abs=1e-4), end
    rates = [stored.scalars["lr"][s] for s in range(steps)]
    assert rates[0] == pytest.approx(5e-3, rel=0.05) and rates == sorted(rates, reverse=True)
    for name in ("eval_loss", "eval_accuracy"):
        assert sorted(stored.scalars[name]) == [7, 15, 23], name
    final_eval = [row for row in trainer.state.log_history if "eval_accuracy" in row][-1]
    assert stored.scalars["eval_accuracy"][23] == pytest.approx(final_eval["eval_accuracy"])
    assert "train_runtime" in stored.scalars
    assert len(stored.snapshot_steps) >= 5 and stored.snapshot_steps[-1] == steps - 1
    assert {m["step"] for m in stored.maps} == set(stored.snapshot_steps)
    assert stored.summary["n_probe"] == len(eval_set)  # by default, the eval set
    assert "classifier:input" in stored.summary["layers"]


class Ragged(Sentences):
    """The same sentences unpadded, as lists of ints: the collator has to pad them."""

    def __getitem__(self, i: int) -> dict:
        n = int(self.mask[i].sum())
        return {"input_ids": self.ids[i, :n].tolist(), "attention_mask": [1] * n,
                "labels": int(self.labels[i])}


def test_without_a_probe_the_training_set_is_padded_by_the_trainers_collator(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                               + [f"w{i}" for i in range(VOCAB - 5)]))
    tokenizer = transformers.BertTokenizerFast(vocab_file=str(vocab))
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, num_train_epochs=1,
        gradient_accumulation_steps=2, save_strategy="no", report_to=[], use_cpu=True,
        seed=0, disable_tqdm=True, logging_steps=100)
    transport = MemoryTransport()
    trainer = transformers.Trainer(
        model=tiny_bert(), args=args, train_dataset=Ragged(48, 0),
        data_collator=transformers.DataCollatorWithPadding(tokenizer),
        callbacks=[SentryCamCallback(transport=transport, every=1, overhead_budget=None)])
    trainer.train()
    assert trainer.state.global_step == 3  # 48 / 8 / 2 accumulated
    probe = next(m for m in transport.messages if isinstance(m, ProbeSet))
    assert len(probe.sample_ids) == 48 and sorted(probe.labels.tolist()) == [0] * 24 + [1] * 24
    losses = {m.step: m.values["loss"] for m in transport.of_kind("scalars")
              if "loss" in m.values}
    assert sorted(losses) == [0, 1, 2] and all(np.isfinite(list(losses.values())))
    assert [m.step for m in transport.messages if isinstance(m, Snapshot)] == [0, 1, 2]
    assert [m.status for m in transport.messages if isinstance(m, RunEnd)] == ["finished"]


def tokenizer_for(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                               + [f"w{i}" for i in range(VOCAB - 5)]))
    return transformers.BertTokenizerFast(vocab_file=str(vocab))


def short_args(tmp_path, **overrides):
    settings = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=8,
                    num_train_epochs=1, save_strategy="no", report_to=[], use_cpu=True, seed=0,
                    disable_tqdm=True, logging_steps=100)
    return transformers.TrainingArguments(**{**settings, **overrides})


class Labelled(Ragged):
    """Ragged sentences with a column the model does not take, which the Trainer removes."""

    def __getitem__(self, i: int) -> dict:
        return {**super().__getitem__(i), "sentence_id": i}


def test_without_a_probe_the_eval_set_is_the_probe_collated_by_the_trainer(tmp_path):
    transport = MemoryTransport()
    eval_set = Labelled(20, seed=1)
    trainer = transformers.Trainer(
        model=tiny_bert(), args=short_args(tmp_path), train_dataset=Ragged(32, 0),
        eval_dataset=eval_set, data_collator=transformers.DataCollatorWithPadding(
            tokenizer_for(tmp_path)),
        callbacks=[SentryCamCallback(transport=transport, every=2, overhead_budget=None)])
    trainer.train()
    probe = next(m for m in transport.messages if isinstance(m, ProbeSet))
    assert sorted(probe.sample_ids.tolist()) == list(range(20))  # the eval set, not the 32
    assert sorted(probe.labels.tolist()) == sorted(eval_set.labels.tolist())
    assert [m.step for m in transport.messages if isinstance(m, Snapshot)] == [0, 2, 3]


def trained_weights(tmp_path, callbacks) -> dict:
    trainer = transformers.Trainer(
        model=tiny_bert(), args=short_args(tmp_path, num_train_epochs=2),
        train_dataset=Sentences(32, 0), eval_dataset=Sentences(16, 1), callbacks=callbacks)
    trainer.train()
    return {name: value.clone() for name, value in trainer.model.state_dict().items()}


def test_training_is_bit_identical_with_and_without_the_callback(tmp_path):
    plain = trained_weights(tmp_path, [])
    watched = trained_weights(tmp_path, [SentryCamCallback(
        transport=MemoryTransport(), every=1, overhead_budget=None)])
    for name, value in plain.items():
        assert torch.equal(value, watched[name]), name


class Failing(transformers.Trainer):
    """Raises in the training step after ``fail_after`` optimizer steps."""

    fail_after = 2

    def training_step(self, *args, **kwargs):
        if self.state.global_step == self.fail_after:
            raise RuntimeError("boom")
        return super().training_step(*args, **kwargs)


def test_an_exception_in_training_ends_the_run_as_failed(tmp_path):
    transport = MemoryTransport()
    callback = SentryCamCallback(transport=transport, every=1, overhead_budget=None)
    trainer = Failing(model=tiny_bert(), args=short_args(tmp_path),
                      train_dataset=Sentences(32, 0), callbacks=[callback])
    with pytest.raises(RuntimeError, match="boom"):
        trainer.train()
    # The watch thread notices the loop is gone, lets go of the run, then detaches it: wait
    # for the run's end to be sent, not only for the run to be let go.
    deadline = time.monotonic() + 10
    while (not any(isinstance(m, RunEnd) for m in transport.messages)
           and time.monotonic() < deadline):
        time.sleep(0.05)
    ends = [m for m in transport.messages if isinstance(m, RunEnd)]
    assert [(end.status, end.step) for end in ends] == [("failed", 1)]
    assert callback.run is None


CRASHING_SCRIPT = """
import atexit, sys
from pathlib import Path
from sentrycam.capture.transport import MemoryTransport
from sentrycam.protocol.messages import RunEnd
transport = MemoryTransport()
# Registered first, so it runs last at exit: after sentrycam's own exit handlers.
atexit.register(lambda: print("ends:", [m.status for m in transport.messages
                                         if isinstance(m, RunEnd)], flush=True))
sys.path.insert(0, {tests!r})
from test_huggingface_callback import Failing, Sentences, SentryCamCallback, short_args, tiny_bert
Failing(model=tiny_bert(), args=short_args(Path({out!r})), train_dataset=Sentences(32, 0),
        callbacks=[SentryCamCallback(transport=transport, every=1, overhead_budget=None)]).train()
"""


@pytest.mark.slow
def test_a_script_whose_training_raises_ends_its_run_as_failed(tmp_path):
    """The process exits on the exception: the run ends failed, not detached."""
    script = CRASHING_SCRIPT.format(tests=str(Path(__file__).parent), out=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 1 and "RuntimeError: boom" in done.stderr, done.stderr[-2000:]
    assert "ends: ['failed']" in done.stdout, done.stdout[-2000:]
