"""CPU per message on the server's write path, by message kind.

One seeded trainer (the demo's digits model and ``capture.attach`` as in
``benchmarks/team_load.py``: probe ``--probe``, a snapshot every ``--every`` steps, a lag
scalar every 5 steps, ``--steps`` steps) is recorded with a :class:`MemoryTransport`; its
stream is then replayed as ``--runs`` interleaved runs (fresh run ids) through the server's own
parts, in one process on one thread, each stage timed with ``time.process_time`` (the CPU of
the whole process, DuckDB's threads included; nothing else runs in it):

- ``decode``: ``parse_frame`` of each wire frame (decoding and validation, on the event loop);
- ``store``: ``Store.write`` of the mixed stream in batches of ``--batch`` messages, as the
  ingest writer takes them (one transaction each; the server's default retention);
- ``frames``: the push hub's ``FrameBuilder.live`` for the stored changes, once per run and
  batch (shared by every subscriber of the run);
- ``audit``: the audit engine's ``RunAudit.handle`` of each change.

The store cost per kind comes from replaying each kind's messages alone (after every run's
``RunStart`` and ``ProbeSet``, not timed) in batches of ``--batch`` and of 1. A row per kind,
and one for the mixed stream.

    python benchmarks/write_path.py [--runs 6] [--steps 200] [--batch 50] [--json OUT]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import Recorder, add_json_argument  # noqa: E402
from team_load import LAG_EVERY, LAG_SCALAR  # noqa: E402

from sentrycam.backend.app import open_store  # noqa: E402
from sentrycam.backend.audit.engine import RunAudit  # noqa: E402
from sentrycam.backend.feed import changes_of  # noqa: E402
from sentrycam.backend.push_frames import FrameBuilder  # noqa: E402
from sentrycam.backend.settings import ServerSettings  # noqa: E402
from sentrycam.protocol import wire  # noqa: E402
from sentrycam.protocol.messages import Message, ProbeSet, RunStart  # noqa: E402
from sentrycam.protocol.validation import parse_frame  # noqa: E402

Item = tuple[int, Message]


def record(args: argparse.Namespace) -> list[Message]:
    """Every message one seeded trainer sends, in order."""
    import torch
    from torch import nn

    from sentrycam import capture
    from sentrycam.capture.demo import batches, build_model, load_digits_data
    from sentrycam.capture.transport import MemoryTransport

    torch.manual_seed(0)
    torch.set_num_threads(1)
    data = load_digits_data(seed=0)
    model = build_model(args.model, seed=0)
    criterion, optimizer = nn.CrossEntropyLoss(), torch.optim.Adam(model.parameters(), 2e-3)
    transport = MemoryTransport()
    run = capture.attach(model, probe=(data.x_train, data.y_train), probe_size=args.probe,
                         every=args.every, criterion=criterion, optimizer=optimizer,
                         transport=transport, run_name="write-path", overhead_budget=None,
                         seed=0)
    for step, (x, y, _epoch) in zip(range(args.steps), batches(data.x_train, data.y_train,
                                                               64, 0)):
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        optimizer.step()
        if step % LAG_EVERY == 0:
            run.log(**{LAG_SCALAR: time.time()})
    run.detach()
    return list(transport.messages)


def interleave(messages: list[Message], runs: int) -> list[Item]:
    """``runs`` copies of the stream under fresh run ids, round-robin like concurrent trainers."""
    ids = [uuid.uuid4().hex for _ in range(runs)]
    return [(seq, dataclasses.replace(m, run_id=run_id))
            for seq, m in enumerate(messages) for run_id in ids]


def cpu(work: Callable[[], Any]) -> float:
    """CPU seconds ``work()`` took."""
    started = time.process_time()
    work()
    return time.process_time() - started


def batches_of(items: Sequence[Item], size: int) -> list[list[Item]]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def per_kind(items: Sequence[Item]) -> dict[str, list[Item]]:
    kinds: dict[str, list[Item]] = {}
    for item in items:
        kinds.setdefault(item[1].kind.value, []).append(item)
    return kinds


def replay_mixed(items: list[Item], batch: int, workdir: Path) -> dict[str, dict[str, float]]:
    """CPU seconds per stage and kind for the whole stream (decode, store, frames, audit)."""
    seconds: dict[str, dict[str, float]] = {}

    def add(stage: str, kind: str, value: float) -> None:
        seconds.setdefault(kind, {}).setdefault(stage, 0.0)
        seconds[kind][stage] += value

    for seq, m in items:
        frame = wire.encode(m, seq, time.time())
        add("decode", m.kind.value, cpu(lambda: parse_frame(frame)))
    store = open_store(ServerSettings(db_path=workdir / "mixed.duckdb"))
    builder, audits = FrameBuilder(store), {}
    try:
        for chunk in batches_of(items, batch):
            stored: list[Message] = []
            spent = cpu(lambda: store.write(chunk, stored=stored, refused=[], checked=True))
            for seq, m in chunk:  # a batch's store CPU, shared out by message count
                add("store", m.kind.value, spent / len(chunk))
            for change in changes_of(stored):
                run_id = change.run_id
                audit = audits.setdefault(run_id, RunAudit(run_id, store, lambda a: None))
                add("frames", change.kind.value, cpu(lambda: builder.live(run_id, [change])))
                add("audit", change.kind.value, cpu(lambda: audit.handle(change)))
    finally:
        store.close()
    return seconds


def replay_kind(items: list[Item], kind: str, batch: int, workdir: Path) -> float:
    """CPU seconds to store the messages of ``kind`` alone, in batches of ``batch``."""
    store = open_store(ServerSettings(db_path=workdir / f"{kind}-{batch}.duckdb"))
    try:
        setup = [item for item in items if isinstance(item[1], (RunStart, ProbeSet))]
        store.write(setup, checked=True)
        timed = [item for item in items if item[1].kind == kind
                 and not isinstance(item[1], (RunStart, ProbeSet))]
        return sum(cpu(lambda: store.write(chunk, checked=True))
                   for chunk in batches_of(timed, batch))
    finally:
        store.close()


def measure(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    messages = record(args)
    items = interleave(messages, args.runs)
    mixed = replay_mixed(items, args.batch, workdir)
    rows = []
    for kind, group in per_kind(items).items():
        n = len(group)
        alone = ({} if kind in ("run_start", "probe") else
                 {f"store_alone_ms_batch_{b}": 1000 * replay_kind(items, kind, b, workdir) / n
                  for b in (1, args.batch)})
        rows.append({"kind": kind, "messages": n,
                     "frame_bytes": sum(len(wire.encode(m, s, 0.0)) for s, m in group) / n,
                     **{f"{stage}_ms": 1000 * value / n
                        for stage, value in mixed.get(kind, {}).items()}, **alone})
    total = len(items)
    rows.append({"kind": "all", "messages": total, **{
        f"{stage}_ms": 1000 * sum(s.get(stage, 0.0) for s in mixed.values()) / total
        for stage in ("decode", "store", "frames", "audit")}})
    return rows


def summary(rows: list[dict[str, Any]]) -> str:
    stages = ("decode_ms", "store_ms", "frames_ms", "audit_ms", "store_alone_ms_batch_1")
    lines = [f"{'kind':<12}{'messages':>9}" + "".join(f"{s[:-3]:>24}" for s in stages)]
    for row in rows:
        lines.append(f"{row['kind']:<12}{row['messages']:>9}" + "".join(
            f"{row.get(s, float('nan')):>24.3f}" for s in stages))
    return "CPU ms per message\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--every", type=int, default=20, help="snapshot interval (steps)")
    parser.add_argument("--probe", type=int, default=500)
    parser.add_argument("--model", choices=("cnn", "mlp"), default="cnn")
    parser.add_argument("--batch", type=int, default=50, help="messages per store transaction")
    add_json_argument(parser)
    args = parser.parse_args(argv)
    recorder = Recorder("write_path", args)
    with tempfile.TemporaryDirectory(prefix="sentrycam-write-path-") as tmp:
        rows = measure(args, Path(tmp))
    print(summary(rows))
    recorder.write(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
