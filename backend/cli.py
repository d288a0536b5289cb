"""The sentrycam command line: serve, demo, inspect, alerts, incidents, export, compact, sync,
stop.

Each subcommand imports what it needs when it runs: ``sentrycam demo`` is a training process and
must not load the web stack or DuckDB (the server it talks to runs in its own process).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from sentrycam import __version__
from sentrycam.backend.cli_errors import CLIError

if TYPE_CHECKING:
    from sentrycam.backend.settings import ServerSettings

log = logging.getLogger("sentrycam.cli")


DESCRIPTION = ("sentrycam: watch a PyTorch model while it trains. Start with 'sentrycam demo', "
               "or call sentrycam.capture.attach(model, probe) in your own training script.")
RUN_HELP = "the run: its id, a unique prefix of the id, or its name"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sentrycam", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"sentrycam {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=summary, description=summary)

    _serve_arguments(command("serve", "run the server: websocket ingest, REST API, dashboard"))

    demo = command("demo", "train a small CNN on sklearn digits with capture attached")
    demo.add_argument("--steps", type=int, default=2000, help="optimizer steps (default 2000)")
    demo.add_argument("--db", type=Path, default=None,
                      help="DuckDB file for a local server (default "
                           "./sentrycam-runs/sentrycam.duckdb; its folder is created)")
    demo.add_argument("--url", default=None, help="stream to this running server instead")
    demo.add_argument("--every", type=int, default=None,
                      help="snapshot every N steps, a fixed schedule (default: attach's "
                           "defaults, within its overhead budget)")
    demo.add_argument("--seed", type=int, default=0,
                      help="seed of the data split, the model and the probe (default 0)")
    demo.add_argument("--exit-when-done", action="store_true",
                      help="exit after training (stopping the server the demo started)")
    demo.add_argument("--no-browser", action="store_true", help="do not open a browser")

    inspect = command("inspect", "summarise the runs of a database or server")
    _source_arguments(inspect)
    inspect.add_argument("--json", action="store_true", help="print JSON")

    alerts = command("alerts", "list the audit engine's alerts")
    _source_arguments(alerts)
    alerts.add_argument("--min-severity", type=int, default=0, choices=range(4),
                        help="only alerts of at least this severity (0-3)")
    alerts.add_argument("--json", action="store_true", help="print JSON")

    incidents = command("incidents", "list incidents: grouped alerts with a diagnosis")
    _source_arguments(incidents)
    incidents.add_argument("--json", action="store_true", help="print JSON")

    export = command("export", "write a run's tables as Parquet files")
    export.add_argument("--db", type=Path, required=True, help="DuckDB file no server holds")
    export.add_argument("--run", dest="run_id", metavar="RUN", required=True, help=RUN_HELP)
    export.add_argument("--out", type=Path, required=True, help="output folder")

    sync = command("sync", "send spooled messages (written while no server answered)")
    sync.add_argument("--spool", type=Path, default=Path("sentrycam-runs") / "spool",
                      help="spool folder (default ./sentrycam-runs/spool)")
    sync.add_argument("--url", required=True, help="base URL of a running server")
    sync.add_argument("--token", default=None,
                      help="the server's write token (or SENTRYCAM_TOKEN)")

    compact = command("compact", "delete old feature vectors by the retention policy and "
                      "shrink the database file")
    compact.add_argument("--db", type=Path, required=True, help="DuckDB file no server holds")
    compact.add_argument("--run", dest="run_id", metavar="RUN", default=None,
                         help=f"{RUN_HELP} (default: every run)")
    compact.add_argument("--keep-newest", type=int, default=None, metavar="N",
                         help="snapshots per run and layer that keep their features (default: "
                              "SENTRYCAM_RETENTION_MAX_SNAPSHOTS, else 20)")
    compact.add_argument("--history", type=int, default=None, metavar="H",
                         help="older snapshots kept per doubling of age (default: "
                              "SENTRYCAM_RETENTION_HISTORY, else 4)")

    stop = command("stop", "stop the local server that holds a database file")
    stop.add_argument("--db", type=Path, required=True, help="the server's DuckDB file")
    return parser


def _serve_arguments(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--db", required=True, type=Path,
                       help="DuckDB file (created if missing; its folder must exist)")
    serve.add_argument("--create-dirs", action="store_true",
                       help="create the database's folder if it does not exist")
    serve.add_argument("--host", default=None,
                       help="bind address (default: SENTRYCAM_HOST, else loopback 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None,
                       help="port, 0 picks a free one (default: SENTRYCAM_PORT, else 8765)")
    serve.add_argument("--token", default=None,
                       help="write token (trainers, admins); visible to other users in 'ps': "
                            "prefer SENTRYCAM_TOKEN or --token-file. A write token is "
                            "mandatory on a non-loopback address")
    serve.add_argument("--token-file", type=Path, default=None,
                       help="file whose first line is the write token (or SENTRYCAM_TOKEN)")
    serve.add_argument("--read-token-file", type=Path, default=None,
                       help="file whose first line is the read-only token for viewers: "
                            "dashboard, REST reads, push (or SENTRYCAM_READ_TOKEN)")
    serve.add_argument("--allowed-host", action="append", default=None, metavar="HOST",
                       help="a host name the server answers to besides loopback and the bind "
                            "address, e.g. the name of a reverse proxy (repeatable; or "
                            "SENTRYCAM_ALLOWED_HOSTS=a,b)")
    serve.add_argument("--allowed-origin", action="append", default=None, metavar="ORIGIN",
                       help="a browser origin (https://team.example.com) whose pages may open "
                            "websockets and change state, besides the server's own "
                            "(repeatable; or SENTRYCAM_ALLOWED_ORIGINS=a,b)")
    serve.add_argument("--idle-timeout", type=float, default=None,
                       help="exit after this many idle seconds, 0: never (default: "
                            "SENTRYCAM_IDLE_TIMEOUT_S, else 0)")
    serve.add_argument("--projector", choices=("pool", "thread", "ray", "off"), default=None,
                       help="where 2D maps are computed: worker processes (pool), a thread of "
                            "the server, Ray actors (needs sentrycam[ray]; RAY_ADDRESS or a "
                            "local Ray), or not at all (default: SENTRYCAM_PROJECTOR_ENGINE, "
                            "else pool)")
    serve.add_argument("--projector-workers", type=int, default=None, metavar="N",
                       help="projector worker processes, or Ray jobs at once (default: "
                            "SENTRYCAM_PROJECTOR_WORKERS, else one per core, at most 4)")


def _source_arguments(command: argparse.ArgumentParser) -> None:
    """Where a read command looks (a file or a server), and which run."""
    where = command.add_mutually_exclusive_group(required=True)
    where.add_argument("--db", type=Path, help="DuckDB file (its running server is used if any)")
    where.add_argument("--url", help="base URL of a running server")
    command.add_argument("--token", default=None, help="server token (or SENTRYCAM_TOKEN)")
    command.add_argument("--run", dest="run_id", metavar="RUN", default=None,
                         help=f"{RUN_HELP} (default: every run)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sentrycam`` console script. Returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    commands = {"serve": _serve, "demo": _demo, "inspect": _inspect, "alerts": _alerts,
                "incidents": _incidents, "export": _export, "sync": _sync, "stop": _stop,
                "compact": _compact}
    try:
        return commands[args.command](args)
    except KeyboardInterrupt:
        return 130
    except CLIError as exc:
        print(f"sentrycam {args.command}: {exc}", file=sys.stderr)
        return 2


def serve_settings(args: argparse.Namespace) -> ServerSettings:
    """The server's settings from ``sentrycam serve``'s flags; a flag not given leaves its
    setting to the environment (``SENTRYCAM_PORT`` ...) or its default."""
    from pydantic import ValidationError

    from sentrycam.backend.settings import ServerSettings

    if args.token:
        log.warning("--token shows the token to every user of this machine (`ps`); set "
                    "SENTRYCAM_TOKEN or use --token-file instead")
    given = {"db_path": args.db, "host": args.host, "port": args.port,
             "idle_timeout_s": args.idle_timeout, "token": args.token or None,
             "token_file": args.token_file, "read_token_file": args.read_token_file,
             "allowed_hosts": args.allowed_host, "allowed_origins": args.allowed_origin,
             "projector_workers": args.projector_workers, **_projector_settings(args.projector)}
    try:
        return ServerSettings(**{name: value for name, value in given.items()
                                 if value is not None})
    except ValidationError as exc:
        raise CLIError("; ".join(e["msg"].removeprefix("Value error, ")
                                 for e in exc.errors())) from None


def _projector_settings(choice: str | None) -> dict[str, Any]:
    """The settings ``--projector CHOICE`` stands for (none when not given)."""
    if choice is None:
        return {}
    return {"projector": False} if choice == "off" else {"projector": True,
                                                         "projector_engine": choice}


def _serve(args: argparse.Namespace) -> int:
    from sentrycam.backend.server import ServerStartError, run_server
    from sentrycam.capture.launcher import idle_timeout_text

    _check_db_folder(args.db, create=args.create_dirs)
    settings = serve_settings(args)
    log.info("this server %s", idle_timeout_text(settings.idle_timeout_s))
    try:
        run_server(settings)
    except ServerStartError as exc:
        raise CLIError(str(exc)) from None
    return 0


def _check_db_folder(db: Path, *, create: bool) -> None:
    """Refuse a database whose folder is missing (a typo would otherwise leave the data in a
    new folder nobody looks at), unless ``create`` asks for it."""
    folder = db.expanduser().absolute().parent
    if folder.is_dir():
        return
    if folder.exists():
        raise CLIError(f"{folder} is not a folder, so it cannot hold the database {db}")
    if not create:
        raise CLIError(f"the folder {folder} does not exist; create it, fix the --db path, or "
                       "pass --create-dirs to have sentrycam create it")
    folder.mkdir(parents=True, exist_ok=True)


def _demo(args: argparse.Namespace) -> int:
    from sentrycam.backend.cli_demo import run_demo

    return run_demo(args)


def _inspect(args: argparse.Namespace) -> int:
    from sentrycam.backend.cli_data import inspect_runs, render_table

    runs = inspect_runs(db=args.db, url=args.url, run_id=args.run_id, token=args.token)
    print(json.dumps(runs, indent=2, default=str) if args.json else render_table(runs))
    return 0


def _alerts(args: argparse.Namespace) -> int:
    from sentrycam.backend.cli_alerts import list_alerts, render_alerts

    found = list_alerts(db=args.db, url=args.url, run_id=args.run_id, token=args.token,
                        min_severity=args.min_severity)
    print(json.dumps(found, indent=2, default=str) if args.json else render_alerts(found))
    return 0


def _incidents(args: argparse.Namespace) -> int:
    from sentrycam.backend.cli_incidents import list_incidents, render_incidents

    found = list_incidents(db=args.db, url=args.url, run_id=args.run_id, token=args.token)
    print(json.dumps(found, indent=2, default=str) if args.json else render_incidents(found))
    return 0


def _export(args: argparse.Namespace) -> int:
    from sentrycam.backend.cli_data import export_run

    for path in export_run(db=args.db, run_id=args.run_id, out=args.out):
        print(path)
    return 0


def _compact(args: argparse.Namespace) -> int:
    from sentrycam.backend.cli_compact import compact

    print(compact(db=args.db, run=args.run_id, keep_newest=args.keep_newest,
                  history=args.history))
    return 0


def _sync(args: argparse.Namespace) -> int:
    from sentrycam.backend.cli_sync import sync_spool

    acked = sync_spool(args.spool, args.url, token=args.token)
    print(f"{acked} spooled messages stored by {args.url}")
    return 0


def _stop(args: argparse.Namespace) -> int:
    from sentrycam.capture.launcher import stop_local_server
    from sentrycam.protocol.server_info import info_file_path

    if not args.db.exists() and not info_file_path(args.db).exists():
        raise CLIError(f"no database file at {args.db} (and no server info file next to it); "
                       "give the --db path the server was started with")
    if stop_local_server(args.db):
        print(f"server stopped ({args.db})")
    else:
        print(f"no running server holds {args.db}; nothing to stop")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
