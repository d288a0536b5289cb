"""What a local server costs the training it watches: step times of the demo CNN (a plain loop)
and of a Lightning fit of it, with no capture, attached to a local server with the projector
off, and attached while the server's projector draws maps (pool and thread engines, at the
local defaults and at a team server's normal priority).

Every setting runs in this one process, one after the other: per model a plain block first,
then for each setting a fresh local server (started as ``attach`` starts it, its projector
warmed up before timing), a watched block at a fixed schedule (a snapshot every ``--every``
steps of a ``--probe``-sample probe: more than the projector draws, so it has a backlog),
then a plain block beside the projector still busy with that backlog (the projector's cost
to training, without capture's own), the server stopped, and a plain block with no server.
Ratios are over the median of the model's plain blocks without a server; their spread
(slowest / fastest plain block's mean) is the noise floor of the run. Numbers measured on a
loaded machine move together: read the ratios, not the absolute times.

    python benchmarks/local_server_cost.py [--steps 300] [--every 10] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from framework_overhead import lightning_round  # noqa: E402
from results import Recorder, add_json_argument, distribution  # noqa: E402

from sentrycam import capture  # noqa: E402
from sentrycam.backend.projection_engines import default_workers  # noqa: E402
from sentrycam.capture import demo, launcher  # noqa: E402

RESULT = Path(__file__).resolve().parent / "results" / "local_server_cost.json"
#: Steps of each block left out of the figures (lazy initialisation, the first snapshot).
WARMUP_STEPS = 10
FIGURES = ("mean", "p95", "p99")


#: The environment of a server that projects in a pool (the benchmark's own may turn it off).
PROJECTING = {"SENTRYCAM_PROJECTOR": "on", "SENTRYCAM_PROJECTOR_ENGINE": "pool"}
THREADED = {**PROJECTING, "SENTRYCAM_PROJECTOR_ENGINE": "thread"}


def _team_pool() -> dict[str, str]:
    """A team server's pool (``sentrycam serve`` defaults) run beside the training."""
    workers = default_workers()
    return {**PROJECTING, "SENTRYCAM_PROJECTOR_PRIORITY": "normal",
            "SENTRYCAM_PROJECTOR_WORKERS": str(workers),
            "SENTRYCAM_PROJECTOR_THREADS": str(max(1, launcher.usable_cores() // workers))}


#: setting name -> environment of its local server (over :func:`launcher.
#: local_server_environment`'s defaults).
SETTINGS: dict[str, Callable[[], dict[str, str]]] = {
    "projector off": lambda: {"SENTRYCAM_PROJECTOR": "off"},
    "pool, local default": lambda: PROJECTING,
    "pool, team default": _team_pool,
    "thread, local default": lambda: THREADED,
    "thread, normal priority": lambda: {
        **THREADED, "SENTRYCAM_PROJECTOR_PRIORITY": "normal",
        "SENTRYCAM_PROJECTOR_THREADS": str(launcher.usable_cores())},
}


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """This process's environment with ``values`` set (the launcher passes it on)."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def projector_state(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/api/projector", timeout=10) as response:
        return json.load(response)


def wait_ready(url: str, timeout: float) -> float | None:
    """Seconds until the projector finished warming up (None: off, or not in ``timeout`` s)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        state = projector_state(url)["state"]
        if state == "off":
            return None
        if state in ("ready", "busy"):
            return time.monotonic() - started
        time.sleep(0.5)
    return None


@contextmanager
def local_server(setting: str, ready_wait_s: float) -> Iterator[tuple[Path, dict[str, Any]]]:
    """A local server for ``setting`` on a fresh database: yields its path and what its start
    took (``ready_s``: projector warm-up seconds, None when off or not ready within
    ``ready_wait_s``: timing then starts anyway, the warm-up being projector work too)."""
    with tempfile.TemporaryDirectory() as tmp, environment(SETTINGS[setting]()):
        db = Path(tmp) / "cost.duckdb"
        url = launcher.ensure_local_server(db, timeout=180)
        try:
            yield db, {"url": url, "ready_s": wait_ready(url, ready_wait_s)}
        finally:
            launcher.stop_local_server(db)


def cnn_block(steps: int, db: Path | None, every: int, probe: int) -> list[float]:
    """Step times (s) of the demo CNN's plain loop, batch 64, watched through ``db`` (None:
    no capture), after :data:`WARMUP_STEPS`."""
    data = demo.load_digits_data(seed=0)
    model = demo.build_model("cnn", seed=0)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    run = None
    if db is not None:
        run = capture.attach(model, probe=(data.x_train, data.y_train), db=db, every=every,
                             overhead_budget=None, probe_size=probe, criterion=criterion,
                             optimizer=optimizer, run_name="local-server-cost")
    times = []
    batches = demo.batches(data.x_train, data.y_train, 64, 0)
    for _, (xb, yb, _epoch) in zip(range(steps + WARMUP_STEPS), batches):
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        criterion(model(xb), yb).backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    if run is not None:
        run.detach()
    return times[WARMUP_STEPS:]


def lightning_block(steps: int, db: Path | None, every: int, probe: int) -> list[float]:
    """Step times (s) of a Lightning fit of the demo CNN (start to start of a step)."""
    import lightning  # noqa: F401  (it sets its loggers' levels as it is imported)

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # a banner on every fit
    callback = None
    if db is not None:
        from sentrycam.capture.lightning import SentryCamCallback

        data = demo.load_digits_data(seed=0)
        callback = SentryCamCallback((data.x_train, data.y_train), db=db, every=every,
                                     overhead_budget=None, probe_size=probe,
                                     run_name="local-server-cost-lightning")
    return lightning_round(steps, callback)[0]


#: One block of training: (steps, database or None, snapshot interval, probe size) -> step
#: times (s).
Block = Callable[[int, Path | None, int, int], list[float]]
MODELS: dict[str, Block] = {
    "demo cnn": cnn_block, "lightning cnn": lightning_block}


def busy(state: dict[str, Any]) -> bool:
    """Whether the projector has work in hand (warming up counts: it is projector work too)."""
    return bool(state["state"] == "warming" or state.get("queue_depth")
                or state.get("busy_with"))


def measure_setting(block: Block, setting: str, args: argparse.Namespace) -> dict[str, Any]:
    """The watched block's step times, then a plain block's beside the projector still busy
    with the snapshots the watched block sent; the maps drawn meanwhile."""
    with local_server(setting, args.ready_wait) as (db, started):
        before = projector_state(started["url"])
        watched = distribution(block(args.steps, db, args.every, args.probe))
        beside = distribution(block(args.steps, None, args.every, args.probe))
        after = projector_state(started["url"])
    return {"watched": watched, "beside": beside, "warm_up_s": started["ready_s"],
            "maps": after.get("projected", 0) - before.get("projected", 0),
            "busy_to_the_end": busy(after)}


def _figures(prefix: str, figures: dict[str, float], base: dict[str, float]) -> dict[str, float]:
    return {**{f"{prefix}{key}_ms": 1e3 * figures[key] for key in FIGURES},
            **{f"{prefix}{key}_ratio": figures[key] / base[key] for key in FIGURES}}


def measure_model(model: str, settings: list[str], args: argparse.Namespace
                  ) -> list[dict[str, Any]]:
    """One row per setting of ``model`` (see module doc)."""
    block = MODELS[model]
    plain = [distribution(block(args.steps, None, args.every, args.probe))]
    measured = {}
    for setting in settings:
        measured[setting] = measure_setting(block, setting, args)
        plain.append(distribution(block(args.steps, None, args.every, args.probe)))
        logging.info("%s, %s: watched %.2f ms, beside %.2f ms, %d maps", model, setting,
                     1e3 * measured[setting]["watched"]["mean"],
                     1e3 * measured[setting]["beside"]["mean"], measured[setting]["maps"])
    base = {key: statistics.median(p[key] for p in plain) for key in FIGURES}
    noise = max(p["mean"] for p in plain) / min(p["mean"] for p in plain)
    rows = [{"model": model, "setting": "no capture, no server", **_figures("", base, base),
             **_figures("beside_", base, base), "plain_spread": noise, "maps": None,
             "warm_up_s": None, "busy_to_the_end": None}]
    for setting, got in measured.items():
        rows.append({"model": model, "setting": setting, **_figures("", got["watched"], base),
                     **_figures("beside_", got["beside"], base), "plain_spread": noise,
                     "maps": got["maps"], "warm_up_s": got["warm_up_s"],
                     "busy_to_the_end": got["busy_to_the_end"]})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="timed steps per block")
    parser.add_argument("--every", type=int, default=10, help="snapshot interval (steps)")
    parser.add_argument("--probe", type=int, default=300, help="probe samples per snapshot")
    parser.add_argument("--ready-wait", type=float, default=240.0,
                        help="seconds a projector may take to warm up before timing starts")
    parser.add_argument("--threads", type=int, default=None,
                        help="the trainer's torch threads (default: one per usable core)")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    add_json_argument(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads or launcher.usable_cores())
    recorder = Recorder("local_server_cost", args)
    rows = [row for model in args.models for row in measure_model(model, args.settings, args)]
    for row in rows:
        print(f"{row['model']:<14} {row['setting']:<24} watched: mean {row['mean_ms']:8.2f} ms "
              f"ratio mean/p99 {row['mean_ratio']:.3f}/{row['p99_ratio']:.3f}  plain beside "
              f"the projector: ratio mean/p99 {row['beside_mean_ratio']:.3f}/"
              f"{row['beside_p99_ratio']:.3f}  maps {row['maps']}  busy to the end "
              f"{row['busy_to_the_end']}  plain spread {row['plain_spread']:.3f}")
    recorder.write(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
