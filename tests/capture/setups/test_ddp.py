"""DistributedDataParallel, gloo on CPU, 2 processes: rank 0 streams the run (with its world
size), rank 1 opens no connection, and both ranks train exactly as without sentrycam."""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp

from tests.capture.integrations.conftest import get
from tests.capture.setups.ddp_worker import STEPS, train_rank

pytestmark = pytest.mark.slow  # two processes per training
WORLD = 2


def train(tmp_path, name: str, url: str | None) -> list[dict]:
    """What each rank saved: {"state": trained parameters, "run": what its run said}."""
    out = tmp_path / name
    out.mkdir()
    rendezvous = f"file://{tmp_path / (name + '.rendezvous')}"
    mp.spawn(train_rank, args=(WORLD, rendezvous, str(out), url), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{rank}.pt") for rank in range(WORLD)]


def test_rank_0_streams_the_run_and_training_is_unchanged_on_every_rank(live, tmp_path):
    watched = train(tmp_path, "watched", live.url)
    plain = train(tmp_path, "plain", None)
    assert watched[0]["run"]["run_id"] is not None and watched[0]["run"]["step"] == STEPS
    assert watched[1]["run"] == {"run_id": None, "url": None, "step": 0}  # never connected
    for rank in range(WORLD):
        for name, value in plain[rank]["state"].items():
            assert torch.equal(value, watched[rank]["state"][name]), (rank, name)
    assert [run["name"] for run in get(f"{live.url}/api/runs")] == ["ddp"]  # one run, rank 0's
    stored = live.stored("ddp")
    assert stored.summary["config"]["world_size"] == WORLD
    assert stored.summary["config"]["rank"] == 0
    assert sorted(stored.scalars["loss"]) == list(range(STEPS))
    assert "grad_norm_clipped" not in stored.scalars  # DDP's averaging is not clipping
    assert stored.snapshot_steps[:3] == [0, 3, 6]
