"""Framework callback overhead: step time of a Lightning fit and of a Hugging Face
``Trainer.train()`` with ``SentryCamCallback()`` (attach's defaults, streaming to a real local
server) against the same training without it.

A framework runs its own loop, so the two trainings of a round cannot alternate step by step:
they run one after the other in this process, the watched one first in even rounds and second
in odd ones, each from the same seed. A timing callback in both notes the wall time from the
start of one optimizer step to the start of the next (data loading, forward, backward, update
and every callback). Per model: the median over rounds of the ratio watched/plain of the
median, mean, p95, p99 and max step time, as in ``capture_overhead.py``; ``--aa`` adds an A/A
row per model (no callback on either side) for the noise floor. :func:`framework_rows` returns
the rows, for ``capture_overhead.py`` to add to its own.

    python benchmarks/framework_overhead.py [--steps 300] [--rounds 4] [--aa] [--json OUT]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead_workloads import local_server  # noqa: E402
from results import Recorder, add_json_argument, distribution  # noqa: E402

from sentrycam.capture import demo  # noqa: E402

RESULT = Path(__file__).resolve().parent / "results" / "framework_overhead.json"
#: Steps of each training left out of the figures (the framework's and the server's start).
WARMUP_STEPS = 20
RATIO_KEYS = ("p50", "mean", "p95", "p99", "max")

# ---------------------------------------------------------------- Lightning: the demo CNN


def lightning_round(steps: int, callback: Any | None) -> tuple[list[float], dict[str, float]]:
    """Step times (s) of a Lightning fit of the demo CNN on the digits, ``steps`` optimizer
    steps of 64 samples, with ``callback`` (or none) besides the timing callback; and
    :func:`run_figures` of the callback's run."""
    import lightning

    class Timing(lightning.Callback):
        def __init__(self) -> None:
            self.starts: list[float] = []
            self.figures: dict[str, float] = {}

        def on_train_batch_start(self, *args: Any) -> None:
            self.starts.append(time.perf_counter())

        def on_train_end(self, *args: Any) -> None:  # before the watched callback detaches
            self.figures = run_figures(callback)

    class Digits(lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = demo.build_model("cnn", seed=0)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return nn.functional.cross_entropy(self(x), y)

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.log("val_loss", nn.functional.cross_entropy(self(x), y))

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=2e-3)

    data = demo.load_digits_data(seed=0)
    lightning.seed_everything(0, verbose=False)
    timing = Timing()
    trainer = lightning.Trainer(
        max_steps=steps + WARMUP_STEPS + 1, accelerator="cpu", devices=1, logger=False,
        callbacks=[timing] + ([callback] if callback is not None else []),
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, check_val_every_n_epoch=10_000)
    train = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=64, shuffle=True)
    val = DataLoader(TensorDataset(data.x_val, data.y_val), batch_size=256)
    trainer.fit(Digits(), train, val)
    return _intervals(timing.starts), timing.figures


# ------------------------------------------------------ Hugging Face: a tiny BERT from a config

VOCAB, LENGTH = 200, 32


class Sentences(Dataset):
    """Seeded token sequences (int64 [LENGTH] ids and mask, label 0/1), as dict items."""

    def __init__(self, n: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        lengths = torch.randint(8, LENGTH + 1, (n,), generator=gen)
        self.mask = (torch.arange(LENGTH)[None, :] < lengths[:, None]).long()
        self.labels = torch.arange(n) % 2
        self.ids = torch.randint(8, VOCAB, (n, LENGTH), generator=gen)
        self.ids[self.labels == 1, 1] = 7
        self.ids = self.ids * self.mask

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i],
                "labels": self.labels[i]}


def huggingface_round(steps: int, callback: Any | None) -> tuple[list[float], dict[str, float]]:
    """Step times (s) of ``Trainer.train()`` of a BertForSequenceClassification (hidden size
    32, 2 layers), ``steps`` optimizer steps of 16 sentences, with ``callback`` (or none); and
    :func:`run_figures` of the callback's run."""
    import transformers

    class Timing(transformers.TrainerCallback):
        def __init__(self) -> None:
            self.starts: list[float] = []
            self.figures: dict[str, float] = {}

        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            self.starts.append(time.perf_counter())

        def on_train_end(self, *args: Any, **kwargs: Any) -> None:
            self.figures = run_figures(callback)

    torch.manual_seed(0)
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, vocab_size=VOCAB, num_labels=2,
                                     max_position_embeddings=LENGTH)
    timing = Timing()
    with tempfile.TemporaryDirectory() as out:
        args = transformers.TrainingArguments(
            output_dir=out, per_device_train_batch_size=16, max_steps=steps + WARMUP_STEPS + 1,
            learning_rate=5e-4, eval_strategy="no", logging_steps=50, save_strategy="no",
            report_to=[], use_cpu=True, seed=0, disable_tqdm=True)
        trainer = transformers.Trainer(
            model=transformers.BertForSequenceClassification(config), args=args,
            train_dataset=Sentences(1024, 0), eval_dataset=Sentences(256, 1),
            callbacks=[timing] + ([callback] if callback is not None else []))
        trainer.remove_callback(transformers.PrinterCallback)  # its log lines, on stdout
        trainer.train()
    return _intervals(timing.starts), timing.figures


def run_figures(callback: Any | None) -> dict[str, float]:
    """The watched run's own measured overhead and dropped messages (zeros without one)."""
    run = getattr(callback, "run", None)
    if run is None:
        return {"overhead": 0.0, "dropped": 0}
    return {"overhead": run.overhead, "dropped": run.counters().dropped}


def _intervals(starts: list[float]) -> list[float]:
    """Start-to-start times of the steps after the warm-up."""
    return [b - a for a, b in zip(starts[WARMUP_STEPS:], starts[WARMUP_STEPS + 1:])]


# ------------------------------------------------------------------------------ measuring

def _lightning_callback(db: Path) -> Any:
    from sentrycam.capture.lightning import SentryCamCallback
    return SentryCamCallback(db=db, run_name="overhead-lightning")


def _huggingface_callback(db: Path) -> Any:
    from sentrycam.capture.huggingface import SentryCamCallback
    return SentryCamCallback(db=db, run_name="overhead-huggingface")


#: model name -> (one training's step times, the callback watching it).
Round = Callable[[int, Any], tuple[list[float], dict[str, float]]]
FRAMEWORKS: dict[str, tuple[Round, Callable[[Path], Any]]] = {
    "lightning cnn": (lightning_round, _lightning_callback),
    "huggingface bert": (huggingface_round, _huggingface_callback),
}


def measure(model: str, steps: int, rounds: int, db: Path | None) -> dict[str, float]:
    """Median over ``rounds`` of the watched/plain step-time ratios (``db`` None: A/A, no
    callback on either side), the plain training's median and p95 step time (ms), and the
    watched run's own measured overhead and dropped messages."""
    train, make_callback = FRAMEWORKS[model]
    results = []
    for r in range(rounds):
        watched_first = r % 2 == 0
        times, figures = {}, {}
        for watched in ((True, False) if watched_first else (False, True)):
            callback = make_callback(db) if watched and db is not None else None
            step_times, figures[watched] = train(steps, callback)
            times[watched] = distribution(step_times)
        ratio = {f"{key}_ratio": times[True][key] / times[False][key] for key in RATIO_KEYS}
        results.append({**ratio, "median_ms": 1e3 * times[False]["p50"],
                        "p95_ms": 1e3 * times[False]["p95"], **figures[True]})
    return {key: statistics.median(r[key] for r in results) for key in results[0]}


def framework_rows(steps: int, rounds: int, db: Path, aa: bool = False
                   ) -> list[dict[str, float | str]]:
    """One row per framework (``setting`` "callback, defaults"; with ``aa`` an A/A row
    before each), in ``capture_overhead.py``'s row format; the sentrycam runs stream to
    the local server of ``db``, which the caller starts (``overhead_workloads.local_server``)."""
    rows: list[dict[str, float | str]] = []
    for model in FRAMEWORKS:
        settings = [("A/A (no callback)", None)] if aa else []
        for setting, target in settings + [("callback, defaults", db)]:
            result = measure(model, steps, rounds, target)
            print(f"{model + ' ' + setting:<40} plain step {result['median_ms']:6.3f} ms  "
                  f"median ratio {result['p50_ratio']:.4f}  mean ratio "
                  f"{result['mean_ratio']:.4f}  p99 ratio {result['p99_ratio']:.3f}", flush=True)
            rows.append({"model": model, "setting": setting, **result})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="timed steps per training")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per row (even)")
    parser.add_argument("--aa", action="store_true", help="add an A/A row per framework")
    add_json_argument(parser)
    parser.set_defaults(json=RESULT)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # its tips and notices
    warnings.filterwarnings("ignore")  # the frameworks' advice on CPU training and workers
    recorder = Recorder("framework_overhead", args)
    with local_server("framework_overhead") as db:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
              f"{args.rounds} rounds x {args.steps} timed steps, order swapped each round",
              flush=True)
        rows = framework_rows(args.steps, args.rounds, db, aa=args.aa)
    recorder.write(args.json, rows, threads=torch.get_num_threads())


if __name__ == "__main__":
    main()
