"""Server memory while several trainers stream large snapshots at once.

For each mode a fresh ``sentrycam serve`` process (projector and audit off unless asked: this
measures ingest) takes ``--clients`` snapshots of ``--rows`` x ``--dim`` float16 features
(plus a prediction and a loss per row), one from each of ``--clients`` client processes that
start together. Recorded: the server's resident memory when idle (VmRSS) and its peak over
the whole run (VmHWM, /proc/PID/status), the data size, and each client's time from the start
to the server's acknowledgement of its last message (every row committed); mean and max.
Afterwards the store is opened to check that every snapshot is stored whole.

Modes:

- ``chunked``: sentrycam as it is: the real client (``WebSocketTransport``) sends each
  snapshot in row chunks of at most ``CHUNK_TARGET_BYTES``; the server's default
  ``max_frame_bytes``, ``ingest_max_bytes`` and keepalive.
- ``whole``: as before row chunks: each snapshot in one frame (a plain websocket client),
  the server's frame limit raised to 512 MiB, no bound on frame bytes in flight and the
  keepalive timeout at the websocket default of 20 s (DuckDB's memory limit as in
  ``chunked``).

    python benchmarks/ingest_memory.py [--clients 4] [--rows 100000] [--dim 512]
        [--modes chunked,whole] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import Recorder, add_json_argument, distribution  # noqa: E402

from sentrycam.backend.store import Store  # noqa: E402
from sentrycam.protocol import wire  # noqa: E402
from sentrycam.protocol.messages import RunEnd, RunStart, Snapshot  # noqa: E402
from sentrycam.protocol.server_info import read_info_file  # noqa: E402

MIB = 1024 * 1024
START_TIMEOUT_S = 120.0
#: Server settings of each mode (environment variables of ``sentrycam serve``).
MODE_ENV = {"chunked": {},
            "whole": {"SENTRYCAM_MAX_FRAME_BYTES": str(512 * MIB),
                      "SENTRYCAM_INGEST_MAX_BYTES": str(16 * 1024 * MIB),
                      "SENTRYCAM_WS_PING_TIMEOUT_S": "20"}}


def snapshot(run_id: str, rows: int, dim: int, seed: int) -> Snapshot:
    """One step's snapshot: float16 features [rows, dim], pred int64 and loss float32 [rows]."""
    rng = np.random.default_rng(seed)
    return Snapshot(run_id, 100, 1, np.arange(rows, dtype=np.int64),
                    {"pred": rng.integers(0, 10, rows), "loss": rng.random(rows, np.float32)},
                    {"fc:input": rng.standard_normal((rows, dim), np.float32).astype(np.float16)})


def proc_status_kib(pid: int, field: str) -> int:
    """A ``kB`` field of /proc/PID/status (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def start_server(db: Path, env: dict[str, str],
                 extra_args: list[str] | tuple[str, ...] = ()) -> tuple[subprocess.Popen, str]:
    """``sentrycam serve`` for ``db`` on a free port, with ``env`` added to the environment
    and ``extra_args`` to its command line; returns the process and its URL."""
    log = open(db.with_suffix(".log"), "ab")
    process = subprocess.Popen([sys.executable, "-m", "sentrycam", "serve", "--db", str(db),
                                "--port", "0", *extra_args], stdout=log,
                               stderr=subprocess.STDOUT, env={**os.environ, **env})
    deadline = time.monotonic() + START_TIMEOUT_S
    while (info := read_info_file(db)) is None:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start: {db.with_suffix('.log')}")
        time.sleep(0.1)
    return process, info["url"]


def client(url: str, mode: str, run_id: str, rows: int, dim: int, seed: int,
           spool: str, barrier: Any, results: Any) -> None:
    """One trainer: build the snapshot, wait for the others, stream it, report the time."""
    message = snapshot(run_id, rows, dim, seed)
    barrier.wait()
    started = time.perf_counter()
    try:
        ok = (send_chunked if mode == "chunked" else send_whole)(url, message, spool)
    except Exception as exc:  # a connection cut: reported as a failure, not a crash
        ok = f"{type(exc).__name__}: {exc}"
    results.put((run_id, time.perf_counter() - started, ok))


def send_chunked(url: str, message: Snapshot, spool: str) -> bool | str:
    from sentrycam.capture.sender import WebSocketTransport
    with WebSocketTransport(url, message.run_id, spool) as transport:
        for sent in (RunStart(message.run_id, "bench", time.time()), message,
                     RunEnd(message.run_id, message.step, "finished")):
            transport.send(sent)
        if not transport.wait_acked(600.0):
            return "not acknowledged within 600 s"
        counters = transport.counters()
    return True if counters.dropped == 0 else f"{counters.dropped} dropped"


def send_whole(url: str, message: Snapshot, spool: str) -> bool | str:
    """As a trainer did before row chunks: the snapshot in one frame."""
    from websockets.sync.client import connect
    frames = [wire.encode(m, seq, time.time()) for seq, m in enumerate((
        RunStart(message.run_id, "bench", time.time()), message,
        RunEnd(message.run_id, message.step, "finished")))]
    with connect(url.replace("http", "ws", 1) + "/ws/ingest", max_size=None,
                 compression=None) as ws:
        for frame in frames:
            ws.send(frame)
        while True:
            reply = json.loads(ws.recv(timeout=600.0))
            if reply.get("type") == "ack" and reply.get("seq") == len(frames) - 1:
                return True
            if reply.get("type") == "error":
                return reply.get("error")


def stored_whole(db: Path, run_ids: list[str], rows: int) -> int:
    """How many of the runs have their snapshot stored with every row."""
    with Store(db, read_only=True) as store:
        return sum(any(row["n"] == rows for row in store.snapshot_index(run_id))
                   for run_id in run_ids)


def measure(mode: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    db = workdir / f"{mode}.duckdb"
    process, url = start_server(db, {"SENTRYCAM_PROJECTOR": "on" if args.projector else "off",
                                     "SENTRYCAM_AUDIT": "on" if args.audit else "off",
                                     **MODE_ENV[mode]})
    try:
        time.sleep(1.0)
        idle_kib = proc_status_kib(process.pid, "VmRSS")
        context = multiprocessing.get_context("spawn")
        barrier, results = context.Barrier(args.clients), context.Queue()
        run_ids = [f"{mode}{i}" for i in range(args.clients)]
        clients = [context.Process(target=client, args=(
            url, mode, run_id, args.rows, args.dim, i, str(workdir / "spool"), barrier, results))
            for i, run_id in enumerate(run_ids)]
        for process_ in clients:
            process_.start()
        outcomes = [results.get(timeout=1200) for _ in clients]
        for process_ in clients:
            process_.join(60)
        peak_kib = proc_status_kib(process.pid, "VmHWM")
    finally:
        process.terminate()
        process.wait(60)
    snapshot_bytes = args.rows * (args.dim * 2 + 8 + 8 + 4)
    seconds = distribution(s for _, s, ok in outcomes if ok is True)
    failures = sorted({ok for _, _, ok in outcomes if ok is not True})
    return {"mode": mode, "clients": args.clients, "rows": args.rows, "dim": args.dim,
            "snapshot_mb": snapshot_bytes / MIB, "data_mb": args.clients * snapshot_bytes / MIB,
            "idle_rss_mb": idle_kib / 1024, "peak_rss_mb": peak_kib / 1024,
            "growth_mb": (peak_kib - idle_kib) / 1024,
            "store_s_mean": seconds["mean"], "store_s_max": seconds["max"],
            "stored_whole": stored_whole(db, run_ids, args.rows), "failures": failures}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--modes", default="chunked,whole",
                        help="comma-separated: chunked (as now), whole (one frame each)")
    parser.add_argument("--projector", action="store_true", help="run the projector worker")
    parser.add_argument("--audit", action="store_true", help="run the audit engine")
    add_json_argument(parser)
    args = parser.parse_args(argv)
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    unknown = sorted(set(modes) - set(MODE_ENV))
    if unknown:
        parser.error(f"unknown modes {unknown}; choose from {sorted(MODE_ENV)}")
    recorder = Recorder("ingest_memory", args)
    rows = []
    with tempfile.TemporaryDirectory(prefix="sentrycam-ingest-memory-") as tmp:
        for mode in modes:
            row = measure(mode, args, Path(tmp))
            rows.append(row)
            print(json.dumps(row))
    recorder.write(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
