"""A team server under load: many trainers streaming at once, dashboards subscribed to each.

One real ``sentrycam serve`` process (projector on, as by default; the trainers start once its
numba warm-up is over) takes ``--trainers`` trainer processes at once, each the demo's small
digits model (``--model``, default the CNN of ``sentrycam demo``) with the real
``capture.attach`` (probe ``--probe`` samples, a snapshot every ``--every`` steps, fixed
schedule), training ``--steps`` steps. Each run has ``--subscribers`` push subscriptions
(``/ws/runs/{run_id}``, through the dashboard's own client,
:class:`sentrycam.frontend.client.PushSubscription`), held by a few subscriber processes.

Every ``LAG_EVERY`` steps a trainer logs a scalar ``bench_sent_at`` whose value is its
``time.time()``; a subscriber receiving it in a live scalars frame records ``now - value``:
the send-to-frame lag (the trainer's capture queue, the websocket, the writer's queue and
commit, the push hub, the subscriber's websocket). Projector lag: from a subscriber seeing a
snapshot's step announced to it seeing that step's 2D map.

Printed (and written with ``--json``): messages/s committed (the server's ``/health``
counters, from the first trainer's start to the last one's detach), send-to-frame lag
mean/p50/p95/p99/max, the time each ``run.detach()`` took, peak writer queue depth, maps
produced vs snapshot layers received by the projector (skipped ones counted), projector lag,
server RSS peak (VmHWM), and the end check of the store: every run finished, each run's stored
``last_seq`` equal to what its trainer had acknowledged, nothing dropped or spooled by a
trainer, every logged ``bench_sent_at`` stored once, no duplicate rows.

The trainers stand in for training jobs on other machines, so by default each trains at the
lowest CPU priority (``os.nice(19)`` once its start-up is over, ``--trainer-nice``): on the
2-core machine the figures then measure the server, not how the scheduler shares the cores
with 20 busy trainers.
``--trainer-nice 0`` keeps them at the server's priority (the co-located setting).

``--projector MODE`` is passed on to ``sentrycam serve --projector MODE`` (``off`` runs the
server without a projector); ``--no-audit`` runs it without the audit engine,
``--audit-engine thread`` with the engine on a thread of the server (default: its own
process; the CPU of the server's child processes is reported apart); any other option
this script does not know goes to ``sentrycam serve`` too (``-- --flag value``).

    python benchmarks/team_load.py [--trainers 20] [--subscribers 5] [--steps 400]
        [--every 20] [--probe 500] [--model cnn|mlp] [--projector MODE] [--no-audit]
        [--audit-engine process|thread] [--trainer-nice 19] [--json OUT]
        [-- SERVE ARGS...]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import queue
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest_memory import proc_status_kib, start_server  # noqa: E402
from report import audit_label  # noqa: E402
from results import Recorder, add_json_argument, distribution  # noqa: E402

from sentrycam.protocol.push import PushType  # noqa: E402

#: A trainer logs its send time every this many steps (the lag probe).
LAG_EVERY = 5
LAG_SCALAR = "bench_sent_at"
#: Subscriber processes (each holds its share of the subscriptions as threads).
SUBSCRIBER_PROCESSES = 4
#: Generous bounds for a loaded machine: a trainer's silence, the projector's numba warm-up
#: before the trainers start, the projector's backlog after they end.
RUN_TIMEOUT_S, WARM_UP_S, SETTLE_S = 3600.0, 900.0, 300.0


# ----------------------------------------------------------------------------- trainers

def trainer(index: int, url: str, args: dict[str, Any], barrier: Any, out: Any) -> None:
    """Train one seeded digits model with capture attached; report its run id at once, and
    at the end its counters and how long ``detach()`` took."""
    import torch
    from torch import nn

    from sentrycam import capture
    from sentrycam.capture.demo import batches, build_model, load_digits_data

    torch.set_num_threads(1)
    data = load_digits_data(seed=index)
    model = build_model(args["model"], seed=index)
    criterion, optimizer = nn.CrossEntropyLoss(), torch.optim.Adam(model.parameters(), 2e-3)
    barrier.wait()
    # A stand-in for a job on another machine: the server goes first. After the start-up
    # (imports, data), which a loaded machine would otherwise starve past the barrier's wait.
    os.nice(args["nice"])
    run = capture.attach(model, probe=(data.x_train, data.y_train), probe_size=args["probe"],
                         every=args["every"], criterion=criterion, optimizer=optimizer,
                         url=url, run_name=f"load-{index}", overhead_budget=None, seed=index)
    out.put(("run", run.run_id))
    logged = 0
    for step, (x, y, _epoch) in zip(range(args["steps"]), batches(
            data.x_train, data.y_train, 64, index)):
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        optimizer.step()
        if step % LAG_EVERY == 0:
            run.log(**{LAG_SCALAR: time.time()})
            logged += 1
    started = time.perf_counter()
    run.detach()
    detach_s = time.perf_counter() - started
    counters = run.counters()
    out.put(("done", {"run_id": run.run_id, "detach_s": detach_s, "logged": logged,
                      "sent": counters.sent, "acked": counters.acked,
                      "dropped": counters.dropped, "spooled": counters.spooled,
                      "finished_at": time.time()}))


# ----------------------------------------------------------------------------- subscribers

def subscriber(url: str, run_ids: list[str], per_run: int, stop: Any, out: Any) -> None:
    """Hold ``per_run`` push subscriptions to each run until ``stop``; report the lags seen
    on live frames (after each connection's catch-up)."""
    from sentrycam.frontend.client import ApiClient

    lock = threading.Lock()
    lags: list[float] = []
    map_lags: list[float] = []
    dropped = [0]

    def watcher() -> Any:
        live = [False]
        announced: dict[int, float] = {}

        def on_frame(frame: Any) -> None:
            now, header = time.time(), frame.header
            if header.type == PushType.CAUGHT_UP:
                live[0] = True
            elif header.type == PushType.DROPPED:
                dropped[0] = max(dropped[0], header.count)
            elif not live[0]:
                return
            elif header.type == PushType.SCALARS and LAG_SCALAR in header.names:
                code = header.names.index(LAG_SCALAR)
                sent = frame.arrays["value"][frame.arrays["name"] == code]
                with lock:
                    lags.extend((now - sent).tolist())
            elif header.type == PushType.SNAPSHOTS:
                for step in header.steps:
                    announced.setdefault(step, now)
            elif header.type == PushType.EMBEDDING and header.step in announced:
                with lock:
                    map_lags.append(now - announced[header.step])
        return on_frame

    client = ApiClient(url)
    subscriptions = [client.subscribe(run_id, watcher()) for run_id in run_ids
                     for _ in range(per_run)]
    stop.wait()
    for subscription in subscriptions:
        subscription.close()
    client.close()
    out.put({"lags": lags, "map_lags": map_lags, "dropped": dropped[0],
             "connects": sum(s.connects for s in subscriptions)})


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, every thread) the process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """The processes ``pid`` started, and theirs (the audit process, projector workers)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except OSError:  # the thread ended meanwhile
            continue
        for child in children:
            found += [child, *descendants(child)]
    return found


def children_cpu_seconds(pid: int) -> float:
    """CPU time the processes under ``pid`` (alive now) have used so far."""
    total = 0.0
    for child in descendants(pid):
        try:
            total += cpu_seconds(child)
        except OSError:
            continue
    return total


def collect(results: Any, trainers: list[Any]) -> Any:
    """The next thing a trainer reports; RuntimeError once a trainer died without reporting
    (its traceback is on stderr) or nothing came for ``RUN_TIMEOUT_S``."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            return results.get(timeout=1.0)[1]
        except queue.Empty:
            failed = [p.exitcode for p in trainers if p.exitcode not in (None, 0)]
            if failed:
                raise RuntimeError(f"{len(failed)} trainer(s) failed (exit codes {failed})")
    raise RuntimeError(f"no trainer reported for {RUN_TIMEOUT_S:.0f} s")


# ----------------------------------------------------------------------------- the server

class HealthWatch(threading.Thread):
    """Polls ``/health`` and ``/api/projector`` twice a second: committed messages over time,
    the writer's peak queue depth, the projector's peak backlog age."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        from sentrycam.frontend.client import ApiClient
        self.client = ApiClient(url)
        self.samples: list[tuple[float, int]] = []
        self.peak_queue = 0
        self.peak_behind_s = 0.0
        self.stopping = threading.Event()

    def committed_at(self, when: float) -> int:
        """Messages committed by ``when`` (the last sample before it)."""
        before = [count for at, count in self.samples if at <= when]
        return before[-1] if before else 0

    def run(self) -> None:
        while not self.stopping.wait(0.5):
            try:
                ingest = self.client.health()["ingest"]
                projector = self.client.projector_state() or {}
            except Exception:  # a busy server may answer late; the next poll counts
                continue
            self.samples.append((time.time(), int(ingest["committed"])))
            self.peak_queue = max(self.peak_queue, int(ingest["queue_depth"]))
            self.peak_behind_s = max(self.peak_behind_s, float(projector.get("behind_by_s", 0)))


def warm_up(watch: HealthWatch) -> float:
    """Seconds until the projector (if any) has compiled numba, so that the projector lag
    measures projections, not the one-off warm-up."""
    started = time.monotonic()
    while (watch.client.projector_state() or {}).get("state") == "warming":
        if time.monotonic() - started > WARM_UP_S:
            raise RuntimeError(f"the projector was still warming up after {WARM_UP_S:.0f} s")
        time.sleep(1.0)
    return time.monotonic() - started


def settle(watch: HealthWatch, timeout: float) -> dict[str, Any]:
    """Wait until the writer's queue is empty and the projector has nothing waiting; returns
    the projector's final state ({} without one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ingest = watch.client.health()["ingest"]
        projector = watch.client.projector_state() or {}
        idle = projector.get("queue_depth", 0) == 0 and projector.get("state") != "busy"
        if ingest["queue_depth"] == 0 and idle:
            return projector
        time.sleep(1.0)
    return watch.client.projector_state() or {}


def store_check(db: Path, trainers: list[dict[str, Any]]) -> dict[str, Any]:
    """What the store holds, against what the trainers had acknowledged."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        def one(sql: str, params: list[Any]) -> Any:
            return con.execute(sql, params).fetchone()
        problems, snapshots = [], 0
        for t in trainers:
            run_id = t["run_id"]
            status, last_seq = one("SELECT status, last_seq FROM runs WHERE run_id = ?",
                                   [run_id])
            stored_lag, distinct_lag = one(
                "SELECT count(*), count(DISTINCT value) FROM scalars WHERE run_id = ? "
                "AND name = ?", [run_id, LAG_SCALAR])
            # A row twice: a training scalar, a snapshot layer or a feature row. The
            # sentrycam/* scalars of Status messages are left out: the closing Status repeats
            # the step of the last periodic one, rightly.
            dup = one("SELECT (SELECT count(*) - count(DISTINCT (step, name, wall_time)) FROM "
                      "scalars WHERE run_id = $1 AND NOT starts_with(name, 'sentrycam/')) + "
                      "(SELECT count(*) - count(DISTINCT (step, "
                      "layer)) FROM snapshots WHERE run_id = $1) + (SELECT count(*) - "
                      "count(DISTINCT (step, layer, sample_id)) FROM features WHERE run_id = $1)",
                      [run_id])[0] + stored_lag - distinct_lag
            snapshots += one("SELECT count(DISTINCT step) FROM snapshots WHERE run_id = ?",
                             [run_id])[0]
            if status != "finished" or last_seq + 1 != t["acked"] or t["dropped"] \
                    or t["spooled"] or stored_lag != t["logged"] or dup:
                problems.append({"run_id": run_id, "status": status, "stored": last_seq + 1,
                                 "acked": t["acked"], "dropped": t["dropped"],
                                 "spooled": t["spooled"], "lag_scalars": [stored_lag,
                                                                          t["logged"]],
                                 "duplicates": dup})
        maps = one("SELECT count(DISTINCT (run_id, step, layer)) FROM embeddings", [])[0]
        return {"runs_complete": len(trainers) - len(problems), "problems": problems,
                "snapshots": snapshots, "maps": maps}
    finally:
        con.close()


# ----------------------------------------------------------------------------- one load run

def measure(args: argparse.Namespace, serve_args: list[str], workdir: Path) -> dict[str, Any]:
    db = workdir / "team.duckdb"
    env_projector = "off" if args.projector == "off" else "on"
    forwarded = serve_args + ([] if args.projector in (None, "off")
                              else ["--projector", args.projector])
    env = {"SENTRYCAM_PROJECTOR": env_projector, "SENTRYCAM_AUDIT": str(args.audit).lower(),
           "SENTRYCAM_AUDIT_ENGINE": args.audit_engine}
    server, url = start_server(db, env=env, extra_args=forwarded)
    watch = HealthWatch(url)
    warm_up_s = warm_up(watch)
    watch.start()
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(args.trainers + 1), context.Queue()
    config = {k: getattr(args, k) for k in ("model", "probe", "every", "steps")}
    config["nice"] = args.trainer_nice
    trainers = [context.Process(target=trainer, args=(i, url, config, barrier, results))
                for i in range(args.trainers)]
    stop, lag_out = context.Event(), context.Queue()
    subscribers: list[Any] = []
    try:
        for process in trainers:
            process.start()
        barrier.wait(timeout=600)
        started, cpu_started = time.time(), cpu_seconds(server.pid)
        children_started = children_cpu_seconds(server.pid)
        run_ids = [collect(results, trainers) for _ in trainers]
        groups = [run_ids[i::SUBSCRIBER_PROCESSES] for i in range(SUBSCRIBER_PROCESSES)]
        subscribers = [context.Process(target=subscriber, args=(
            url, group, args.subscribers, stop, lag_out)) for group in groups if group]
        for process in subscribers:
            process.start()
        done = [collect(results, trainers) for _ in trainers]
        finished = max(t["finished_at"] for t in done)
        server_cpu_s = cpu_seconds(server.pid) - cpu_started
        children_cpu_s = children_cpu_seconds(server.pid) - children_started
        time.sleep(1.0)  # one more health sample after the last detach
        projector = settle(watch, SETTLE_S)
        stop.set()
        seen = [lag_out.get(timeout=120) for _ in subscribers]
        for process in trainers + subscribers:
            process.join(60)
        peak_kib = proc_status_kib(server.pid, "VmHWM")
    finally:
        stop.set()
        for process in trainers + subscribers:
            if process.is_alive():
                process.terminate()
        watch.stopping.set()
        server.terminate()
        server.wait(120)
    committed = watch.committed_at(finished) - watch.committed_at(started)
    check = store_check(db, done)
    lags = distribution(lag for s in seen for lag in s["lags"])
    return {
        "trainers": args.trainers, "subscribers_per_run": args.subscribers,
        "steps": args.steps, "projector": args.projector or "default", "audit": args.audit,
        "audit_engine": args.audit_engine, "trainer_nice": args.trainer_nice,
        "projector_warm_up_s": warm_up_s,
        "serve_args": forwarded, "messages": committed,
        "messages_per_s": committed / max(finished - started, 1e-9),
        "seconds": finished - started, "lag_s": lags,
        "server_cpu_s": server_cpu_s, "server_cpu_ms_per_message": 1000 * server_cpu_s / max(
            committed, 1),
        "server_children_cpu_s": children_cpu_s,
        "server_children_cpu_ms_per_message": 1000 * children_cpu_s / max(committed, 1),
        "detach_s": distribution(t["detach_s"] for t in done),
        "peak_queue_depth": watch.peak_queue, "server_rss_peak_mb": peak_kib / 1024,
        "snapshots": check["snapshots"], "maps": check["maps"],
        "projector_counts": {k: projector.get(k) for k in ("received", "projected", "skipped")},
        "projector_lag_s": distribution(lag for s in seen for lag in s["map_lags"]),
        "projector_peak_behind_s": watch.peak_behind_s,
        "subscriber_dropped_frames": sum(s["dropped"] for s in seen),
        "runs_complete": check["runs_complete"], "lost_or_duplicated": check["problems"],
    }


def summary(row: dict[str, Any]) -> str:
    lag, detach, pl = row["lag_s"], row["detach_s"], row["projector_lag_s"]

    def f(value: Any) -> str:
        return "-" if value is None else f"{value:.2f}"
    return "\n".join([
        f"{row['trainers']} trainers x {row['subscribers_per_run']} subscribers, "
        f"{row['steps']} steps, projector {row['projector']}, audit "
        f"{audit_label(row)}, trainers at nice {row.get('trainer_nice', 0)} (warm-up "
        f"{row['projector_warm_up_s']:.0f} s before the trainers started)",
        f"  ingested      {row['messages']} messages, {row['messages_per_s']:.0f}/s "
        f"over {row['seconds']:.1f} s; peak writer queue {row['peak_queue_depth']}",
        f"  server CPU    {row['server_cpu_s']:.1f} s, "
        f"{row['server_cpu_ms_per_message']:.2f} ms per message; its child processes (audit, "
        f"projector workers) {row.get('server_children_cpu_ms_per_message', 0):.2f} ms",
        f"  lag (s)       mean {f(lag['mean'])}  p50 {f(lag['p50'])}  p95 {f(lag['p95'])}  "
        f"p99 {f(lag['p99'])}  max {f(lag['max'])}  (n={lag['n']})",
        f"  detach (s)    mean {f(detach['mean'])}  max {f(detach['max'])}",
        f"  maps          {row['maps']} for {row['snapshots']} snapshots; projector "
        f"{row['projector_counts']}; lag p50 {f(pl['p50'])} p95 {f(pl['p95'])} s",
        f"  server RSS    peak {row['server_rss_peak_mb']:.0f} MB; dropped frames "
        f"{row['subscriber_dropped_frames']}",
        f"  store         {row['runs_complete']}/{row['trainers']} runs complete; "
        f"lost or duplicated: {row['lost_or_duplicated'] or 'none'}"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trainers", type=int, default=20)
    parser.add_argument("--subscribers", type=int, default=5, help="push subscriptions per run")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--every", type=int, default=20, help="snapshot interval (steps)")
    parser.add_argument("--probe", type=int, default=500)
    parser.add_argument("--model", choices=("cnn", "mlp"), default="cnn")
    parser.add_argument("--projector", default=None,
                        help="passed on as `sentrycam serve --projector MODE`; off: none")
    parser.add_argument("--no-audit", dest="audit", action="store_false",
                        help="run the server without its audit engine")
    parser.add_argument("--audit-engine", choices=("process", "thread"), default="process",
                        help="the server's audit engine in its own process or a thread")
    parser.add_argument("--trainer-nice", type=int, default=19,
                        help="niceness of the trainer processes (0: co-located with the server)")
    add_json_argument(parser)
    args, serve_args = parser.parse_known_args(argv)
    serve_args = [a for a in serve_args if a != "--"]
    recorder = Recorder("team_load", args)
    with tempfile.TemporaryDirectory(prefix="sentrycam-team-load-") as tmp:
        row = measure(args, serve_args, Path(tmp))
    print(summary(row))
    recorder.write(args.json, [row])
    return 0 if row["runs_complete"] == args.trainers else 1


if __name__ == "__main__":
    raise SystemExit(main())
