"""``sentrycam demo``: train the digits CNN with capture attached while the server shows it.

This runs in the training process, so it imports only the capture side; the server it streams
to runs in its own process (started here unless ``--url`` names one).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import webbrowser
from pathlib import Path

from sentrycam.backend.cli_errors import CLIError

log = logging.getLogger("sentrycam.demo")

#: Probe samples of the demo's maps: few enough that attach's default budget affords a map
#: every 50-100 steps on the digits CNN (its probe pass costs about a training step).
DEMO_PROBE_SIZE = 300
#: How long ``--exit-when-done`` waits for the server's projector to catch up.
PROJECTOR_WAIT_S = 600.0
#: How often the demo, done training, checks that its server still runs.
SERVER_POLL_S = 1.0


def run_demo(args: argparse.Namespace) -> int:
    """Train, then keep serving until interrupted (or exit at once with ``--exit-when-done``)."""
    from sentrycam import capture
    from sentrycam.capture import demo, launcher

    for name in ("steps", "every"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise CLIError(f"--{name} must be at least 1, got {getattr(args, name)}")
    db = None if args.url else Path(args.db or launcher.default_db_path()).resolve()
    url, started_here = _server_url(args.url, db)
    _say(f"sentrycam dashboard: {url}")
    if not args.no_browser:
        webbrowser.open(url)
    runs: list = []

    def attach(model, **parts):  # keeps the run to report on it
        runs.append(capture.attach(model, url=url, run_name=f"demo-cnn-seed{args.seed}",
                                   probe_size=DEMO_PROBE_SIZE, seed=args.seed,
                                   **schedule(args.every), **parts))
        return runs[-1]

    started = time.perf_counter()
    result = demo.train(args.steps, attach=attach, seed=args.seed,
                        on_epoch=lambda e, loss, acc: log.info(
                            "epoch %d: val_loss %.4f val_acc %.3f", e + 1, loss, acc))
    _say(f"demo trained {args.steps} steps in {time.perf_counter() - started:.1f} s: "
         f"val_loss {result['val_loss']:.4f}, val_acc {result['val_acc']:.3f}")
    _say(overhead_note(runs[0]))
    if args.exit_when_done:
        if started_here:
            _wait_for_projector(url)
            launcher.stop_local_server(db)
        return 0
    _say(f"training done; the dashboard stays at {url} (Ctrl-C to stop)")
    try:
        _wait_while_served(db if started_here else None)
    except KeyboardInterrupt:
        if started_here:
            launcher.stop_local_server(db)
    return 0


def _wait_while_served(db: Path | None) -> None:
    """Sleep until Ctrl-C or, for a server this demo started (``db``), until that server exits
    (``sentrycam stop``, its idle timeout): then say so and return. Polling its pid also reaps
    it, so a stopped server does not linger as this process's zombie."""
    from sentrycam.protocol.server_info import pid_alive, read_info_file

    info = read_info_file(db) if db is not None else None
    pid = info.get("pid") if info else None
    while True:
        time.sleep(SERVER_POLL_S)
        if isinstance(pid, int) and not pid_alive(pid):
            _say("the server stopped; the demo exits")
            return


def schedule(every: int | None) -> dict:
    """attach's schedule arguments: its defaults (an overhead budget), or with ``--every`` a
    fixed schedule of a snapshot every ``every`` steps."""
    return {} if every is None else {"every": every, "overhead_budget": None}


def overhead_note(run) -> str:
    """The measured capture overhead against what bounds it: attach's default budget, or the
    fixed schedule ``--every`` asked for."""
    budget = run.overhead_budget
    if budget is None:
        return (f"capture took {run.overhead:.1%} of the training time at the fixed schedule "
                "--every asked for (no overhead budget)")
    return (f"capture took {run.overhead:.1%} of the training time, against attach's default "
            f"overhead budget of {budget:.0%} (a probe of {run.probe_size} samples)")


def _server_url(url: str | None, db: Path | None) -> tuple[str, bool]:
    """The server to stream to, and whether this call started it."""
    from sentrycam.capture import launcher

    if url is not None:
        return url.rstrip("/"), False
    db.parent.mkdir(parents=True, exist_ok=True)
    running_before = launcher.running_server_url(db)
    try:
        url = launcher.ensure_local_server(db)
    except RuntimeError as exc:
        raise CLIError(str(exc)) from None
    return url, running_before is None


def _wait_for_projector(url: str, timeout: float = PROJECTOR_WAIT_S) -> None:
    """Let the server's projector finish the queued snapshots before the server is stopped
    (it reports on ``GET /api/projector``); gives up quietly after ``timeout`` s."""
    import json
    import urllib.request

    deadline = time.monotonic() + timeout
    idle_since = None
    said = False
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/api/projector", timeout=5) as response:
                state = json.load(response)
        except (OSError, ValueError) as exc:
            log.warning("cannot read the projector state (%s); not waiting for it", exc)
            return
        idle = state.get("state") in ("off", "ready") and not state.get("queue_depth") \
            and not state.get("busy_with") and not state.get("quality_queue")
        idle_since = (idle_since or time.monotonic()) if idle else None
        if idle_since is not None and time.monotonic() - idle_since >= 1.0:
            return
        if not said:
            _say("waiting for the projector to draw the last snapshots ...")
            said = True
        time.sleep(0.25)
    log.warning("the projector was still busy after %.0f s; stopping the server anyway", timeout)


def _say(text: str) -> None:
    """The demo's own console output (the CLI's output, not logging)."""
    print(text, file=sys.stdout, flush=True)
