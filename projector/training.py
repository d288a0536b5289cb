"""Fitting the GN-BN autoencoder to one snapshot's spatio-temporal graph.

Every optimizer step draws a batch of spatial edges by membership weight and a batch of
temporal edges, encodes the distinct points they touch together with the earlier feature
vectors of the temporal edges in ONE forward pass (so BatchNorm sees new and old points
mixed), and takes an Adam step on UMAP cross-entropy (negatives drawn among the encoded
points), reconstruction and the temporal terms. Everything is tensor indexing: no data loader.
The budget is a number of steps, optionally cut short by a time limit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from sentrycam.projector import losses
from sentrycam.projector.network import GNBNAutoencoder


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one snapshot (see :class:`~sentrycam.projector.Projector`)."""

    edge_batch: int = 1024
    temporal_batch: int = 256
    negatives: int = 5
    reconstruction_batch: int = 256
    reconstruction_weight: float = 0.1
    temporal_weight: float = 0.3
    hinge_weight: float = 1.0
    learning_rate: float = 2e-3


@dataclass
class EdgeSet:
    """Graph of one snapshot on ``device``. Spatial: ``heads``/``tails`` int64 [E] rows of the
    snapshot, ``weights`` float32 [E]. Temporal (may be empty): ``current`` int64 [T] rows of the
    snapshot, ``earlier`` float32 [T, D] scaled earlier features, ``anchors`` float32 [T, 2]
    where they were drawn, ``margins`` float32 [T], ``weights_t`` float32 [T]."""

    heads: torch.Tensor
    tails: torch.Tensor
    weights: torch.Tensor
    current: torch.Tensor
    earlier: torch.Tensor
    anchors: torch.Tensor
    margins: torch.Tensor
    weights_t: torch.Tensor


def train_snapshot(network: GNBNAutoencoder, optimizer: torch.optim.Optimizer,
                   features: torch.Tensor, edges: EdgeSet, steps: int, config: TrainConfig,
                   curve: tuple[float, float], generator: torch.Generator,
                   time_limit_s: float | None = None) -> dict[str, float]:
    """Run up to ``steps`` Adam steps on scaled ``features`` float32 [N, D]; returns the last
    loss terms and the number of steps taken."""
    network.train()
    started = time.perf_counter()
    terms: dict[str, torch.Tensor] = {}
    taken = 0
    for taken in range(1, steps + 1):
        loss, terms = _step_loss(network, features, edges, config, curve, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if time_limit_s is not None and time.perf_counter() - started > time_limit_s:
            break
    network.eval()
    return {**{name: float(value) for name, value in terms.items()}, "steps": float(taken)}


def _sample(count: int, size: int, generator: torch.Generator, device: torch.device
            ) -> torch.Tensor:
    return torch.randint(0, count, (size,), generator=generator, device=device)


def _step_loss(network: GNBNAutoencoder, features: torch.Tensor, edges: EdgeSet,
               config: TrainConfig, curve: tuple[float, float],
               generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    device = features.device
    batch = torch.multinomial(edges.weights, config.edge_batch, replacement=True,
                              generator=generator)
    heads, tails = edges.heads[batch], edges.tails[batch]
    n_temporal = len(edges.current)
    temporal = (_sample(n_temporal, min(config.temporal_batch, n_temporal), generator, device)
                if n_temporal else torch.empty(0, dtype=torch.long, device=device))
    rows, inverse = torch.unique(torch.cat([heads, tails, edges.current[temporal]]),
                                 return_inverse=True)
    batch_in = torch.cat([features[rows], edges.earlier[temporal]])
    coords = network.encode(batch_in)
    encoded = coords[:len(rows)]
    n_edges = len(heads)
    head_xy, tail_xy = encoded[inverse[:n_edges]], encoded[inverse[n_edges:2 * n_edges]]
    negatives = encoded[_sample(len(rows), n_edges * config.negatives, generator, device)]
    a, b = curve
    umap_loss = losses.umap_cross_entropy(head_xy, tail_xy,
                                          negatives.view(n_edges, config.negatives, 2), a, b)
    recon_rows = _sample(len(rows), min(config.reconstruction_batch, len(rows)), generator,
                         device)
    recon_loss = losses.reconstruction(network.decode(encoded[recon_rows]),
                                       features[rows[recon_rows]])
    loss = umap_loss + config.reconstruction_weight * recon_loss
    terms = {"umap": umap_loss.detach(), "reconstruction": recon_loss.detach()}
    if n_temporal:
        t_ce, hinge = losses.temporal_terms(
            encoded[inverse[2 * n_edges:]], coords[len(rows):], edges.anchors[temporal],
            edges.margins[temporal], edges.weights_t[temporal], a, b)
        loss = loss + config.temporal_weight * t_ce + config.hinge_weight * hinge
        terms.update(temporal=t_ce.detach(), hinge=hinge.detach())
    return loss, terms
