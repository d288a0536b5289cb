"""End-to-end dashboard latency: a snapshot entering the server -> its points drawn in Chromium.

For each probe size (2,000 and 20,000 by default) the benchmark starts a real server (in this
process, on loopback), opens the dashboard in headless Chromium and streams snapshots into the
ingest websocket at a fixed spacing (``--spacing``, default 1 s; the demo CNN snapshots every
0.5-2 s), whatever the page is doing, as a trainer would. Features: a mixture of 10 clusters in
``--dim`` dimensions (float16, as captured) whose structure drifts slowly from snapshot to
snapshot. A script in the page records when each snapshot's map is painted (dashboard_page.py).

``--projector`` (the default): the server runs the real projector worker, as ``sentrycam serve``
does. The benchmark waits for its numba warm-up, sends one un-timed snapshot whose cold first
fit is reported apart ("first map"), then times ``--snapshots`` more. A worker that falls
behind skips the oldest waiting snapshots, and the dashboard paints only the newest map it
holds: snapshots never painted are counted ("drawn 18/20") and the worker's skips reported
(``--backlog 1``: the worker keeps only the newest waiting snapshot of a layer).
``--no-projector``: a stand-in (``sentrycam.backend.testing.StandInProjector``) writes each
map the moment its snapshot is stored, so the figures cover ingest + push hub + dashboard +
browser, without the projector's time.

Reported per size: latency (snapshot sent -> its map painted: mean, p50, p95, p99, max);
bytes per snapshot on the push websocket (server -> dashboard session) and on Bokeh's websocket
(session -> browser); and responsiveness while snapshots keep streaming:
- user actions (``--actions``, 1 s apart) through the page's widgets: "colour by", the snapshot
  slider dragged to the first snapshot, "live" switched back on; each timed from touching the
  widget to the first painted frame that shows its answer. Target: every action answered, p95
  at most 1 s (``RESPONSIVE_TARGET_S``);
- the longest main-thread task and the p95 delay of a 50 ms timer in the page.

Also measured: the time to ingest 3,000 scalar messages with no dashboard subscribed and with
10 subscribed to the same run (``--fanout``), side by side in one server.

    python benchmarks/dashboard_latency.py [--sizes 2000 20000] [--snapshots 20] [--spacing 1]
        [--actions 10] [--projector | --no-projector] [--backlog N] [--dim 128] [--fanout 10]
        [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import multiprocessing
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from websockets.sync.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dashboard_page import (WATCH_JS, drawn, interact, responsiveness,  # noqa: E402
                            wait_drawn)
from results import Recorder, add_json_argument, distribution  # noqa: E402
from synthetic_features import drifting_mixture  # noqa: E402

from sentrycam.backend.settings import ServerSettings  # noqa: E402
from sentrycam.backend.testing import StandInProjector, serve_in_thread  # noqa: E402
from sentrycam.frontend.testing import LAUNCH_ARGS, chromium_path  # noqa: E402
from sentrycam.protocol import wire  # noqa: E402
from sentrycam.protocol.messages import (SPLIT_TRAIN, ProbeSet, RunStart, Scalars,  # noqa: E402
                                        Snapshot)

log = logging.getLogger("dashboard_latency")
LAYER = "fc:input"
#: A user action is answered (painted) within this many seconds, p95.
RESPONSIVE_TARGET_S = 1.0
#: Generous bounds for a loaded 2-core machine: numba warm-up, a cold first fit, the last map.
PROJECTOR_READY_S, FIRST_MAP_S, SETTLE_S = 600.0, 300.0, 300.0


def settings(db: Path, projector: bool = False, backlog: int | None = None) -> ServerSettings:
    """The server's settings: with ``projector`` it runs the projector worker as ``sentrycam
    serve`` does (``app.state.projection``); ``backlog``: its ``projector_backlog`` (None: the
    server's default)."""
    extra = {} if backlog is None else {"projector_backlog": backlog}
    return ServerSettings(db_path=db, port=0, projector=projector, **extra)


def wait_projector_ready(worker: Any) -> float:
    """Seconds until the projector worker has compiled numba (state no longer "warming")."""
    started = time.monotonic()
    while worker.state()["state"] == "warming":
        if time.monotonic() - started > PROJECTOR_READY_S:
            raise RuntimeError(f"the projector worker was still warming up after "
                               f"{PROJECTOR_READY_S:.0f} s; is the machine overloaded?")
        time.sleep(0.2)
    return time.monotonic() - started


class ProbeStream:
    """One run's probe set and its snapshots: features float16 [n, dim] from a slowly drifting
    mixture of 10 clusters (labels = clusters), predictions that grow more accurate."""

    def __init__(self, run_id: str, n: int, dim: int, seed: int = 0) -> None:
        self.run_id, self.n, self.rng = run_id, n, np.random.default_rng(seed)
        self._mixture = drifting_mixture(n, dim, None, seed, drift=0.1, jitter=0.05,
                                         tighten=0.02)
        self._first, self.labels = next(self._mixture)
        self._made = 0

    def probe_set(self) -> ProbeSet:
        return ProbeSet(self.run_id, np.arange(self.n, dtype=np.int64), self.labels,
                        np.full(self.n, SPLIT_TRAIN, np.uint8))

    def snapshot(self, step: int) -> Snapshot:
        features = self._first if self._made == 0 else next(self._mixture)[0]
        accuracy = min(0.95, 0.3 + 0.03 * self._made)
        self._made += 1
        right = self.rng.random(self.n) < accuracy
        pred = np.where(right, self.labels, self.rng.integers(0, 10, self.n)).astype(np.int64)
        confidence = np.where(right, 0.6, 0.3) + 0.3 * self.rng.random(self.n)
        loss = -np.log(np.where(right, confidence, 1 - confidence))
        return Snapshot(self.run_id, step, 0, np.arange(self.n, dtype=np.int64), {
            "pred": pred, "confidence": confidence.astype(np.float32),
            "loss": loss.astype(np.float32)}, {LAYER: features.astype(np.float16)})


class Ingest:
    """The trainer's side: one ingest websocket; sends messages in sequence and reads the
    server's acks as they come so that they never pile up."""

    def __init__(self, url: str) -> None:
        self._context = connect(url.replace("http", "ws") + "/ws/ingest", max_size=None)
        self.connection = self._context.__enter__()
        self.seq = itertools.count(0)  # a run's seqs count from 0 (one run per connection)

    def send(self, message: Any) -> float:
        """Send ``message``; returns when it was sent (ms since the epoch)."""
        frame = wire.encode(message, next(self.seq), time.time())
        sent_at = time.time() * 1000
        self.connection.send(frame)
        with contextlib.suppress(TimeoutError):
            while True:
                self.connection.recv(timeout=0)
        return sent_at

    def close(self) -> None:
        self._context.__exit__(None, None, None)


class Streamer(threading.Thread):
    """Sends a snapshot of each step every ``spacing_s`` seconds until the steps run out or
    :meth:`stop`; ``sent_at[step]``: when (ms since the epoch)."""

    def __init__(self, ingest: Ingest, stream: ProbeStream, steps: Iterable[int],
                 spacing_s: float) -> None:
        super().__init__(daemon=True, name="bench-streamer")
        self.ingest, self.stream, self.steps, self.spacing_s = ingest, stream, steps, spacing_s
        self.sent_at: dict[int, float] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        due = time.monotonic()
        for step in self.steps:
            message = self.stream.snapshot(step)  # built before its turn, as capture does
            if self._halt.wait(max(0.0, due - time.monotonic())):
                return
            self.sent_at[step] = self.ingest.send(message)
            due += self.spacing_s

    def stop(self) -> None:
        self._halt.set()
        self.join(30)


def measure(n: int, args: argparse.Namespace) -> dict[str, Any]:
    """Every figure of one probe size, in a fresh server and page (see the module doc)."""
    from playwright.sync_api import sync_playwright

    run_id = f"bench{n}"
    workdir = Path(tempfile.mkdtemp(prefix="sc-bench-"))
    result: dict[str, Any] = {"n": n, "projector": "worker" if args.projector else "stand-in",
                              "render": "webgl" if args.webgl else "canvas"}
    with serve_in_thread(settings(workdir / "bench.duckdb", args.projector, args.backlog)
                         ) as server, StandInProjector(server.app), \
            sync_playwright() as playwright:
        url, app = server.url, server.app
        if app.state.projection is not None:
            result["warm_up_s"] = wait_projector_ready(app.state.projection)
            log.info("%d points: projector ready after %.0f s", n, result["warm_up_s"])
        stream, ingest = ProbeStream(run_id, n, args.dim), Ingest(url)
        ingest.send(RunStart(run_id, f"latency-{n}", time.time(), {}))
        ingest.send(stream.probe_set())
        browser = playwright.chromium.launch(executable_path=args.chromium, args=LAUNCH_ARGS)
        try:
            render = "" if args.webgl else "&render=canvas"
            page, browser_bytes = _open_dashboard(browser, f"{url}/?run={run_id}{render}")
            result.update(_measure_page(page, browser_bytes, app, ingest, stream, args))
        finally:
            browser.close()
            ingest.close()
    shutil.rmtree(workdir, ignore_errors=True)
    return result


def _measure_page(page: Any, browser_bytes: list[int], app: Any, ingest: Ingest,
                  stream: ProbeStream, args: argparse.Namespace) -> dict[str, Any]:
    worker, hub, result = app.state.projection, app.state.hub, {}
    # The first map: a cold fit with the projector (long), timed apart and not counted.
    first_sent = ingest.send(stream.snapshot(1))
    if not wait_drawn(page, 1, FIRST_MAP_S):
        raise RuntimeError(f"the first map of {stream.n} points was not drawn in {FIRST_MAP_S} s")
    result["first_map_s"] = (drawn(page)[1]["t"] - first_sent) / 1000
    log.info("%d points: first map painted after %.1f s", stream.n, result["first_map_s"])
    page.evaluate("() => { window.__longest = 0; window.__timerLag = []; }")
    skipped = worker.state()["skipped"] if worker else 0
    push_before, browser_before = _push_bytes(hub), browser_bytes[0]
    result.update(_timed_snapshots(page, ingest, stream, args))
    result["push_bytes_per_snapshot"] = (_push_bytes(hub) - push_before) / args.snapshots
    result["browser_bytes_per_snapshot"] = (browser_bytes[0] - browser_before) / args.snapshots
    result["projector_skipped"] = worker.state()["skipped"] - skipped if worker else 0
    log.info("%d points: %d/%d snapshots painted, p95 %s s", stream.n, result["drawn"],
             result["snapshots"], result["p95_s"])
    if args.actions:
        streamer = Streamer(ingest, stream, itertools.count(2 + args.snapshots), args.spacing)
        streamer.start()
        result["actions"] = interact(page, args.actions, first_step=1)
        streamer.stop()
    return {**result, **responsiveness(page)}


def _open_dashboard(browser: Any, url: str) -> tuple[Any, list[int]]:
    """The dashboard page at ``url``, watched (``WATCH_JS``), and a counter of the bytes that
    Bokeh's websocket brings it ([0], growing)."""
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    received = [0]

    def count(payload: bytes | str) -> None:
        received[0] += len(payload if isinstance(payload, bytes) else payload.encode())

    page.on("websocket", lambda ws: ws.on("framereceived", count))
    page.goto(url)
    page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0", timeout=60000)
    page.evaluate(WATCH_JS)
    return page, received


def _timed_snapshots(page: Any, ingest: Ingest, stream: ProbeStream,
                     args: argparse.Namespace) -> dict[str, Any]:
    """Stream ``args.snapshots`` snapshots and wait for the newest to be painted; latencies of
    those painted."""
    steps = list(range(2, 2 + args.snapshots))
    streamer = Streamer(ingest, stream, steps, args.spacing)
    streamer.start()
    streamer.join()
    wait_drawn(page, steps[-1], SETTLE_S)  # the newest is never skipped: it comes in the end
    painted = drawn(page)
    latencies = [(painted[s]["t"] - t0) / 1000 for s, t0 in streamer.sent_at.items()
                 if s in painted]
    spread = distribution(latencies)
    return {"snapshots": len(steps), "drawn": len(latencies),
            "points_drawn": painted[steps[-1]]["n"] if steps[-1] in painted else None,
            **{f"{key}_s": spread[key] for key in ("mean", "p50", "p95", "p99", "max")}}


def ingest_seconds(url: str, run_id: str, messages: int) -> float:
    """Seconds to send ``messages`` scalar messages and have the last one acknowledged
    (committed by the store)."""
    with connect(url.replace("http", "ws") + "/ws/ingest", max_size=None) as ingest:
        started = time.perf_counter()
        for step in range(messages):
            ingest.send(wire.encode(Scalars(run_id, step, time.time(), {
                "loss": 1.0 / (step + 1), "lr": 1e-3, "grad_norm": 1.0}), step + 1, time.time()))
        while json.loads(ingest.recv()).get("seq", 0) < messages:
            pass
        return time.perf_counter() - started


def measure_fanout(subscribers: int, messages: int) -> dict:
    """Median ingest time with no dashboard subscribed and with ``subscribers`` reading the
    run, three trials each in ABBAAB order."""
    workdir = Path(tempfile.mkdtemp(prefix="sc-fanout-"))
    with serve_in_thread(settings(workdir / "fanout.duckdb")) as server:
        url, app = server.url, server.app
        timings: dict[int, list[float]] = {0: [], subscribers: []}
        for trial, count in enumerate((0, subscribers, subscribers, 0, 0, subscribers)):
            run_id = f"fanout{trial}"
            with connect(url.replace("http", "ws") + "/ws/ingest") as ingest:
                ingest.send(wire.encode(RunStart(run_id, run_id, time.time(), {}), 0, time.time()))
                ingest.recv()
            # Readers in their own processes: in-process threads would share the server's GIL.
            stop = multiprocessing.Event()
            readers = [multiprocessing.Process(target=_read_until, args=(url, run_id, stop),
                                               daemon=True) for _ in range(count)]
            for reader in readers:
                reader.start()
            time.sleep(1.0)
            timings[count].append(ingest_seconds(url, run_id, messages))
            stop.set()
            for reader in readers:
                reader.join(10)
        sent = app.state.hub.stats()
    shutil.rmtree(workdir, ignore_errors=True)
    alone, shared = float(np.median(timings[0])), float(np.median(timings[subscribers]))
    return {"messages": messages, "subscribers": subscribers, "seconds_alone": alone,
            "seconds_with_subscribers": shared, "ratio": shared / alone, "hub": sent,
            "trials_alone_s": timings[0], "trials_with_subscribers_s": timings[subscribers]}


def _read_until(url: str, run_id: str, stop: Any) -> None:
    with connect(url.replace("http", "ws") + f"/ws/runs/{run_id}", max_size=None) as socket:
        while not stop.is_set():
            try:
                socket.recv(timeout=0.2)
            except TimeoutError:
                pass


def _push_bytes(hub) -> int:
    """Bytes the hub has sent to its subscribers so far."""
    return sum(s.bytes_sent for group in hub._subscribers.values() for s in group)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[2000, 20000])
    parser.add_argument("--snapshots", type=int, default=20, help="timed snapshots per size")
    parser.add_argument("--spacing", type=float, default=1.0, help="seconds between snapshots")
    parser.add_argument("--actions", type=int, default=10,
                        help="user actions timed per size while snapshots stream (0: skip)")
    parser.add_argument("--projector", action=argparse.BooleanOptionalAction, default=True,
                        help="run the real projector worker (default) or a stand-in")
    parser.add_argument("--webgl", action=argparse.BooleanOptionalAction, default=True,
                        help="draw the maps with WebGL (default) or on a canvas (?render=canvas)")
    parser.add_argument("--dim", type=int, default=128, help="feature dimensions per sample")
    parser.add_argument("--backlog", type=int, default=None,
                        help="the worker's SENTRYCAM_PROJECTOR_BACKLOG (default: the server's)")
    parser.add_argument("--chromium", default=chromium_path(),
                        help="Chromium executable (default: sentrycam.frontend.testing's)")
    parser.add_argument("--fanout", type=int, default=10,
                        help="dashboards subscribed while ingest is timed (0: skip)")
    add_json_argument(parser)
    args = parser.parse_args()
    recorder = Recorder("dashboard_latency", args)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    if args.snapshots < 1 or args.spacing <= 0:
        parser.error("--snapshots must be at least 1 and --spacing above 0")
    fanout = None
    if args.fanout:
        fanout = measure_fanout(args.fanout, 3000)
        print(f"ingest of {fanout['messages']} messages: {fanout['seconds_alone']:.2f} s alone, "
              f"{fanout['seconds_with_subscribers']:.2f} s with {args.fanout} dashboards "
              f"subscribed (ratio {fanout['ratio']:.2f}); hub {fanout['hub']}", flush=True)
    results = []
    for n in args.sizes:
        results.append(measure(n, args))
        print(json.dumps(results[-1]), flush=True)
    if results:
        print_table(results, args)
    recorder.write(args.json, results, fanout=fanout)


def print_table(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\nprojector: {results[0]['projector']}; maps drawn with {results[0]['render']}; "
          f"snapshots every {args.spacing:g} s; "
          f"user-action target: p95 <= {RESPONSIVE_TARGET_S:g} s")
    print("| probe samples | first map (s) | drawn | projector skipped | p50 (s) | p95 (s) | "
          "push bytes/snapshot | browser bytes/snapshot | user action p50 / p95 (s) | "
          "action's data in page p50 (s) | longest task (ms) | 50 ms timer lag p95 (ms) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        actions = r.get("actions") or {}
        answered = (f"{_num(actions.get('p50_s'))} / {_num(actions.get('p95_s'))}"
                    + (f" ({len(actions['unanswered'])} unanswered)"
                       if actions.get("unanswered") else "")) if actions else "-"
        print(f"| {r['n']:,} | {_num(r['first_map_s'])} | {r['drawn']}/{r['snapshots']} | "
              f"{r['projector_skipped']} | {_num(r['p50_s'])} | {_num(r['p95_s'])} | "
              f"{r['push_bytes_per_snapshot']:,.0f} | {r['browser_bytes_per_snapshot']:,.0f} | "
              f"{answered} | {_num(actions.get('data_in_p50_s'))} | {r['longest_task_ms']:.0f} | "
              f"{_num(r['timer_lag_p95_ms'], 0)} |")


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


if __name__ == "__main__":
    main()
