"""One rank of a 2-process DDP training (gloo, CPU), started by ``torch.multiprocessing.spawn``
from test_ddp.py: lives in its own module so that the spawned processes can import it."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from tests.capture.setups.tiny_training import batches, make_data, make_model

STEPS = 8


def train_rank(rank: int, world_size: int, rendezvous: str, out: str, url: str | None) -> None:
    """Train this rank's shard for STEPS steps (attached when ``url`` is set); save the trained
    parameters and what the run said to ``out``/rank<rank>.pt."""
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)
        model = DistributedDataParallel(make_model())
        criterion = nn.CrossEntropyLoss()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        run = None
        if url is not None:
            from sentrycam.capture import attach

            run = attach(model, make_data(), criterion=criterion, optimizer=optimizer, url=url,
                         every=3, overhead_budget=None, run_name="ddp")
        x, y = make_data()
        data = batches(x[rank::world_size], y[rank::world_size], size=8)
        for _ in range(STEPS):
            inputs, labels = next(data)
            criterion(model(inputs), labels).backward()
            optimizer.step()
            optimizer.zero_grad()
        said = {"run_id": run.run_id if run else None, "url": run.url if run else None,
                "step": run.step if run else None}
        if run is not None:
            run.detach()
        torch.save({"state": model.module.state_dict(), "run": said},
                   Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
