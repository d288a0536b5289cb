"""End-to-end dashboard latency: a snapshot entering the server -> its points drawn in Chromium.

For each probe size (2,000 and 20,000 by default) the benchmark starts a real server (in this
process, on loopback), opens the dashboard in headless Chromium, and sends snapshots through
the ingest websocket one at a time. Each snapshot's 2D map encodes its step in the first point,
and a script in the page records when the embedding view's data holds it and one animation
frame has been painted. Reported per size: p50/p95 latency, bytes per snapshot on the push
websocket (server -> dashboard session) and on Bokeh's websocket (session -> browser), and the
page's responsiveness while snapshots stream (the longest main-thread task, and the p95 delay
of a 50 ms timer).

Without a projector worker in the server (``app.state.projection``), a stand-in writes each
map the moment the snapshot is stored, so the figures then cover ingest + push hub + dashboard
+ browser, not the projector's own time (see docs/benchmarks.md for the projector's figures).

Also measured: the time to ingest 3,000 scalar messages with no dashboard subscribed and with
10 subscribed to the same run (``--fanout``), side by side in one server.

    python benchmarks/dashboard_latency.py [--sizes 2000 20000] [--snapshots 20] [--fanout 10]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import uvicorn
from websockets.sync.client import connect

from sentrycam.backend.app import create_app
from sentrycam.backend.feed import Change
from sentrycam.backend.server import bind_socket, uvicorn_config
from sentrycam.backend.settings import ServerSettings
from sentrycam.capture import wire
from sentrycam.capture.messages import SPLIT_TRAIN, ProbeSet, RunStart, Scalars, Snapshot

LAYER = "fc:input"
DIM = 64
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync"]

# Records, in the page, when the embedding view first paints a map whose first x is new.
WATCH_JS = """() => {
  window.__drawn = {}; window.__timerLag = []; window.__longest = 0;
  const source = () => { for (const d of Bokeh.documents) {
      const s = d.get_model_by_name('sc-embedding-points'); if (s) return s; } return null; };
  let last = null;
  const tick = () => { const s = source();
    if (s && s.data.x.length) { const marker = Math.round(s.data.x[0]);
      if (marker !== last) { last = marker; const n = s.data.x.length;
        requestAnimationFrame(() => { window.__drawn[marker] = {t: Date.now(), n: n}; }); } }
    requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
  let expected = performance.now() + 50;
  setInterval(() => { const now = performance.now(); window.__timerLag.push(now - expected);
                      expected = now + 50; }, 50);
  new PerformanceObserver(list => { for (const e of list.getEntries())
      window.__longest = Math.max(window.__longest, e.duration); }).observe({entryTypes: ['longtask']});
}"""


@contextlib.contextmanager
def serve(db: Path) -> Iterator[tuple[str, object]]:
    # The projector's own time is benchmarked in projector_vs_umap.py; here a stand-in draws
    # each map at once, so that these figures isolate ingest, push and drawing.
    settings = ServerSettings(db_path=db, port=0, projector=False)
    sock = bind_socket("127.0.0.1", 0)
    app = create_app(settings)
    server = uvicorn.Server(uvicorn_config(app, settings, log_config=None))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", app
    finally:
        server.should_exit = True
        thread.join(30)


class StandInProjector:
    """Writes each snapshot's map at once (first point's x = the step), as the worker would."""

    def __init__(self, app: object, n: int) -> None:
        self.app, self.rng = app, np.random.default_rng(0)
        self.base = self.rng.normal(size=(n, 2)).astype(np.float32)
        self.subscription = app.state.feed.subscribe(self._on_changes, name="bench-projector")
        self.queue: list[Change] = []
        self.wake = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _on_changes(self, changes) -> None:
        self.queue += [c for c in changes if c.kind == "snapshot"]
        self.wake.set()

    def _run(self) -> None:
        while self.wake.wait():
            self.wake.clear()
            while self.queue:
                change = self.queue.pop(0)
                coords = self.base + self.rng.normal(scale=0.05, size=self.base.shape)
                coords[0, 0] = change.step
                ids = np.asarray(change.message.sample_ids, dtype=np.int64)
                self.app.state.store.write_embedding(change.run_id, LAYER, change.step, ids,
                                                     coords.astype(np.float32))
                self.app.state.feed.publish([Change(change.run_id, "embedding", change.step,
                                                    LAYER)])


def snapshot_message(run_id: str, step: int, n: int) -> Snapshot:
    rng = np.random.default_rng(step)
    ids = np.arange(n, dtype=np.int64)
    return Snapshot(run_id, step, 0, ids, {
        "pred": rng.integers(0, 10, n), "confidence": rng.random(n).astype(np.float32),
        "loss": rng.random(n).astype(np.float32)},
        {LAYER: rng.normal(size=(n, DIM)).astype(np.float16)})


def measure(n: int, snapshots: int, pause_s: float, chromium: str) -> dict:
    from playwright.sync_api import sync_playwright

    run_id = f"bench{n}"
    workdir = Path(tempfile.mkdtemp(prefix="sc-bench-"))
    with serve(workdir / "bench.duckdb") as (url, app), sync_playwright() as playwright:
        if getattr(app.state, "projection", None) is None:
            StandInProjector(app, n)
        ingest = connect(url.replace("http", "ws") + "/ws/ingest", max_size=None).__enter__()
        seq = iter(range(1, 1_000_000))

        def send(message) -> None:
            ingest.send(wire.encode(message, next(seq), time.time()))

        send(RunStart(run_id, f"latency-{n}", time.time(), {}))
        send(ProbeSet(run_id, np.arange(n, dtype=np.int64), np.arange(n) % 10,
                      np.full(n, SPLIT_TRAIN, np.uint8)))
        send(snapshot_message(run_id, 1, n))
        browser = playwright.chromium.launch(executable_path=chromium, args=LAUNCH_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        bokeh_bytes = [0]
        page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: bokeh_bytes.__setitem__(
            0, bokeh_bytes[0] + len(payload if isinstance(payload, bytes) else payload.encode()))))
        page.goto(f"{url}/?run={run_id}")
        page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0", timeout=60000)
        page.evaluate(WATCH_JS)
        page.wait_for_function("() => Object.keys(window.__drawn).length > 0", timeout=120000)
        hub = app.state.hub
        push_before, bokeh_before = _push_bytes(hub), bokeh_bytes[0]
        sent_at = {}
        for step in range(2, 2 + snapshots):
            sent_at[step] = time.time() * 1000
            send(snapshot_message(run_id, step, n))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and str(step) not in page.evaluate(
                    "() => window.__drawn"):
                time.sleep(0.02)
            page.wait_for_timeout(int(pause_s * 1000))
        drawn = page.evaluate("() => window.__drawn")
        lag = page.evaluate("() => window.__timerLag")
        longest = page.evaluate("() => window.__longest")
        push_bytes = _push_bytes(hub) - push_before
        browser.close()
        ingest.close()
    shutil.rmtree(workdir, ignore_errors=True)
    latencies = [(drawn[str(s)]["t"] - t0) / 1000 for s, t0 in sent_at.items() if str(s) in drawn]
    return {"n": n, "snapshots": snapshots, "drawn": len(latencies),
            "points_drawn": drawn[str(max(sent_at))]["n"] if str(max(sent_at)) in drawn else None,
            "p50_s": float(np.percentile(latencies, 50)), "p95_s": float(np.percentile(latencies, 95)),
            "push_bytes_per_snapshot": push_bytes / snapshots,
            "browser_bytes_per_snapshot": (bokeh_bytes[0] - bokeh_before) / snapshots,
            "longest_task_ms": float(longest),
            "timer_lag_p95_ms": float(np.percentile(lag, 95)) if lag else None,
            "projector": ("stand-in" if getattr(app.state, "projection", None) is None
                          else "worker")}


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
    with serve(workdir / "fanout.duckdb") as (url, app):
        timings: dict[int, list[float]] = {0: [], subscribers: []}
        for trial, count in enumerate((0, subscribers, subscribers, 0, 0, subscribers)):
            run_id = f"fanout{trial}"
            with connect(url.replace("http", "ws") + "/ws/ingest") as ingest:
                ingest.send(wire.encode(RunStart(run_id, run_id, time.time(), {}), 1, time.time()))
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
            "seconds_with_subscribers": shared, "ratio": shared / alone, "hub": sent}


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
    parser.add_argument("--snapshots", type=int, default=20)
    parser.add_argument("--pause", type=float, default=0.5, help="seconds between snapshots")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--fanout", type=int, default=10,
                        help="dashboards subscribed while ingest is timed (0: skip)")
    args = parser.parse_args()
    if args.fanout:
        fanout = measure_fanout(args.fanout, 3000)
        print(f"ingest of {fanout['messages']} messages: {fanout['seconds_alone']:.2f} s alone, "
              f"{fanout['seconds_with_subscribers']:.2f} s with {args.fanout} dashboards "
              f"subscribed (ratio {fanout['ratio']:.2f}); hub {fanout['hub']}")
    results = [measure(n, args.snapshots, args.pause, args.chromium) for n in args.sizes]
    if not results:
        return
    print("| probe samples | drawn | p50 (s) | p95 (s) | push bytes/snapshot | browser bytes/"
          "snapshot | longest main-thread task (ms) | 50 ms timer lag p95 (ms) | projector |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['n']:,} | {r['drawn']}/{r['snapshots']} | {r['p50_s']:.3f} | "
              f"{r['p95_s']:.3f} | {r['push_bytes_per_snapshot']:,.0f} | "
              f"{r['browser_bytes_per_snapshot']:,.0f} | {r['longest_task_ms']:.0f} | "
              f"{r['timer_lag_p95_ms']:.0f} | {r['projector']} |")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
