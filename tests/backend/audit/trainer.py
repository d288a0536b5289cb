"""A small seeded training run streamed to a real server, for the engine's tests."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from sentrycam import capture


def tabular(seed: int = 0, n: int = 600) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=n, n_features=12, n_informative=8, n_classes=4,
                               n_clusters_per_class=1, class_sep=1.5, random_state=seed)
    x = (x - x.mean(0)) / x.std(0)
    return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64))


def train_streamed(url: str, *, steps: int = 200, spike_at: int | None = None,
                   labels: bool = True, log_val: bool = False, seed: int = 0,
                   on_step=None, overhead_budget: float | None = None,
                   **attach_kwargs) -> str:
    """Train an MLP with capture attached (url=...); the learning rate jumps 30x at
    ``spike_at``. ``on_step(step, run, optimizer)`` runs after each step; the loop ends early
    when ``run.stop_requested``. ``overhead_budget`` None: a fixed schedule (every step a full
    one); a budget leaves quiet steps, whose scalars travel in series. Returns the run_id."""
    x, y = tabular(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                              nn.Linear(32, 4))
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    probe = (x[:200], y[:200] if labels else None)
    run = capture.attach(model, probe=probe, url=url, every=20, overhead_budget=overhead_budget,
                         criterion=criterion, optimizer=optimizer, probe_size=200, seed=seed,
                         **attach_kwargs)
    generator = torch.Generator().manual_seed(seed)
    try:
        for step in range(steps):
            if step == spike_at:
                optimizer.param_groups[0]["lr"] *= 30
            idx = torch.randint(0, len(y), (32,), generator=generator)
            optimizer.zero_grad()
            criterion(model(x[idx]), y[idx]).backward()
            optimizer.step()
            if log_val and (step + 1) % 20 == 0:
                with torch.no_grad():
                    run.log(val_loss=float(criterion(model(x[400:]), y[400:])))
            if on_step is not None:
                on_step(step, run, optimizer)
            if run.stop_requested:
                break
    finally:
        run.detach()
    return run.run_id


def settle(server) -> None:
    """Wait until the server stored what came and its audit engine audited it."""
    for _ in range(3):
        server.wait_written(30)
        assert server.app.state.audit.wait_idle(60)
