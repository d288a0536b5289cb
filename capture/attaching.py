"""``attach(model, ...)``: watch a model while it trains; returns the :class:`~.run.Run` handle.

This module checks the arguments, builds the parts (layers, probe, transport: a local server is
started on demand) and hands them to :class:`~sentrycam.capture.run.Run`, which holds the hooks.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sentrycam.capture.allocator import keep_freed_memory
from sentrycam.capture.alert_actions import AlertCallback
from sentrycam.capture.budget import check_schedule
from sentrycam.capture.console import announce
from sentrycam.capture.layers import LayerTap, check_token_pool, choose_layers
from sentrycam.protocol.messages import SCHEMA_VERSION
from sentrycam.capture.probe import build_probe, check_probe_arguments
from sentrycam.capture.run import ACTIVE, Guard, Run
from sentrycam.capture.snapshot import ProbeRunner
from sentrycam.capture.telemetry import check_training_parts
from sentrycam.capture.transport import Transport

DEFAULT_EVERY = 50
DEFAULT_STATS_EVERY = 10


def attach(model: nn.Module, probe: Any = None, *, layers: list[str] | None = None,
           every: int | str | None = None, criterion: nn.Module | None = None,
           optimizer: torch.optim.Optimizer | None = None, url: str | None = None,
           db: str | os.PathLike | None = None, run_name: str | None = None,
           overhead_budget: float | None = 0.01, heldout: Any = None, probe_size: int = 2000,
           token: str | None = None, transport: Transport | None = None, seed: int = 0,
           token_pool: str = "mean", stats_every: int = DEFAULT_STATS_EVERY,
           on_alert: AlertCallback | None = None, minimum_cadence: bool = True) -> Run:
    """Watch ``model`` while it trains; returns the :class:`Run` handle.

    ``model``: the module, or its ``torch.compile`` or ``DistributedDataParallel`` wrapper
    (the module inside is watched; attach before or after compiling). Under torch.distributed
    only rank 0 captures; other ranks get a run that records nothing and opens no connection.

    ``probe``: ``(inputs [N, ...], labels int [N] or None)``, a map-style Dataset or a DataLoader
    (its dataset); at most ``probe_size`` samples are kept, class-stratified with ``seed``.
    ``heldout``: the same, stored as the held-out split. Without a probe there are no snapshots.
    ``layers``: module names (``"features.3"``, ``"fc:input"``); default: the classifier's input
    and blocks at 25/50/75% depth. ``every``: snapshot interval in optimizer steps (default 50),
    or ``"epoch"`` (a snapshot when ``run.log(epoch=...)`` changes the epoch); the budget can only
    stretch it. ``criterion``: an nn.Module whose output is the loss (hooked); otherwise call
    ``run.log(loss=...)``. ``optimizer``: the model's optimizer; otherwise the first optimizer
    that steps the model's parameters is adopted (after replacing it, attach again).
    ``url`` (or env ``SENTRYCAM_URL``): stream to that server; ``db``: a DuckDB file served by a
    local server started on demand; neither: ``./sentrycam-runs/sentrycam.duckdb``. ``token`` (or
    env ``SENTRYCAM_TOKEN``): the server's token. ``overhead_budget``: fraction of step time that
    capture may use (None: fixed schedule); it holds on the run's total, what a warm-up or the
    minimum cadence spent beyond it being paid back later. ``minimum_cadence``: True (default),
    the budget never spaces snapshots, statistics and telemetry past a floor (see
    :data:`sentrycam.capture.budget.CADENCE_FLOOR`), so that a short run still gets maps even
    where they cost more than the budget; False, the budget alone decides. ``token_pool``:
    ``"mean"`` or ``"cls"`` for token sequences. ``stats_every``: minimum interval of
    activation statistics.
    ``transport`` (advanced): a Transport to use instead of a server. ``on_alert`` (opt-in):
    ``callback(alert, control)`` called on the training thread for each alert the server's audit
    engine raises on this run; ``control.lower_lr(f)`` / ``control.stop()`` (see
    :mod:`sentrycam.capture.alert_actions`). Default: alerts are only reported.

    Steps are counted in optimizer steps; every message carries the 0-based index of its step,
    and a snapshot labelled ``s`` shows the model right after the update of step ``s``
    (snapshots at ``s % every == 0``). Bad arguments raise ValueError naming the problem and
    the fix.
    """
    model = unwrapped(model)
    check_training_parts(model, criterion, optimizer)
    check_materialized(model)
    every = check_schedule(every, overhead_budget, stats_every, DEFAULT_EVERY)
    check_probe_arguments(probe, heldout, probe_size)
    check_token_pool(token_pool)
    if not isinstance(minimum_cadence, bool):
        raise ValueError("minimum_cadence must be True or False")
    if on_alert is not None and not callable(on_alert):
        raise ValueError("on_alert must be a callable taking (alert, control)")
    if transport is not None and not isinstance(transport, Transport):
        raise ValueError("transport must implement send/flush/close/counters (see "
                         "sentrycam.capture.transport.Transport)")
    if url is not None and db is not None:
        raise ValueError("pass url= (a running server) or db= (a local server for that file), "
                         "not both")
    rank, world_size = _distributed_rank()
    if rank != 0:
        return Run.inactive(rank)
    previous = ACTIVE.get(model)
    if previous is not None and previous() is not None:
        previous().detach("detached")
    device = next(model.parameters()).device
    specs = choose_layers(model, layers)
    probe_set = (build_probe(probe, heldout, probe_size, seed, pin=device.type == "cuda")
                 if probe is not None else None)
    guard = Guard()
    modules = dict(model.named_modules())
    taps = [LayerTap(spec, modules[spec.module_name], token_pool=token_pool, seed=seed,
                     on_error=guard.fail) for spec in specs]
    run_id = uuid.uuid4().hex
    try:
        runner = ProbeRunner(model, probe_set, taps, device) if probe_set is not None else None
        if runner is not None:
            runner.check()
        owns = transport is None
        if owns:
            transport, url = _open_transport(run_id, url, db, token)
    except BaseException:
        for tap in taps:
            tap.disarm()
        raise
    config = {
        "schema": SCHEMA_VERSION, "model": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()), "torch": torch.__version__,
        "device": str(device), "layers": [tap.describe() for tap in taps],
        "probe_size": len(probe_set) if probe_set is not None else 0,
        "heldout_size": int(probe_set.split.sum()) if probe_set is not None else 0,
        "schedule": {"snapshot_every": every, "telemetry_every": 1, "stats_every": stats_every,
                     "adaptive": overhead_budget is not None,
                     "minimum_cadence": minimum_cadence},
        "overhead_budget": overhead_budget, "token_pool": token_pool, "seed": seed,
        "rank": rank, "world_size": world_size, "freed_memory": keep_freed_memory()}
    name = run_name or f"{type(model).__name__}-{time.strftime('%Y%m%d-%H%M%S')}"
    run = Run(model, run_id=run_id, name=name, transport=transport, owns_transport=owns,
              url=url, guard=guard, taps=taps, runner=runner, every=every,
              stats_every=stats_every, budget=overhead_budget,
              minimum_cadence=minimum_cadence, criterion=criterion,
              optimizer=optimizer, config=config, on_alert=on_alert)
    if url is not None:
        announce(f"sentrycam: dashboard at {url} (run {run_id})")
    return run


def unwrapped(model: Any) -> Any:
    """The module inside ``torch.compile`` and ``DistributedDataParallel`` wrappers (both share
    its parameters): layer names are then the model's own, and probe forwards neither
    recompile nor run DDP's collectives on rank 0 alone (which would hang the other ranks)."""
    from torch.nn.parallel import DistributedDataParallel

    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif isinstance(model, nn.Module) and type(model).__name__ == "OptimizedModule" \
                and isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def check_materialized(model: nn.Module) -> None:
    """ValueError for a model with parameters or buffers on the ``meta`` device: they have
    shapes but no values, so there is nothing to train, snapshot or record."""
    on_meta = [name for name, tensor in (*model.named_parameters(), *model.named_buffers())
               if tensor.is_meta]
    if on_meta:
        listed = ", ".join(repr(name) for name in on_meta[:3]) + (
            ", ..." if len(on_meta) > 3 else "")
        raise ValueError(
            f"the model has {len(on_meta)} tensors on the 'meta' device ({listed}): they hold "
            "shapes but no values, so nothing could be recorded. Materialise the model first "
            "(model.to_empty(device='cpu') then load its weights, or load_state_dict(..., "
            "assign=True)) and attach after that")


def _distributed_rank() -> tuple[int, int]:
    """(rank, world size) under torch.distributed, else (0, 1)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _open_transport(run_id: str, url: str | None, db: Any, token: str | None
                    ) -> tuple[Transport, str]:
    """A websocket transport to ``url`` / env SENTRYCAM_URL, or to a local server for ``db``."""
    url = url or os.environ.get("SENTRYCAM_URL") or None
    if url is not None:
        spool_root = Path("sentrycam-runs")
    else:
        from sentrycam.capture import launcher

        db_path = Path(db) if db is not None else launcher.default_db_path()
        url = launcher.ensure_local_server(db_path)
        spool_root = db_path.parent
    from sentrycam.capture.sender import WebSocketTransport

    transport = WebSocketTransport(url, run_id, spool_dir=spool_root / "spool",
                                   token=token or os.environ.get("SENTRYCAM_TOKEN") or None)
    return transport, url

