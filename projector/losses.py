"""Losses of the projection network: UMAP cross-entropy, reconstruction, temporal terms.

The 2D similarity of two points at distance d is q(d) = 1 / (1 + a d^(2b)), with ``a``, ``b``
fitted to ``min_dist`` the way UMAP does (:func:`sentrycam.projector.fuzzy.curve_params`).
"""

from __future__ import annotations

import torch

EPS = 1e-4


def similarity_log(sq_dist: torch.Tensor, a: float, b: float) -> tuple[torch.Tensor, torch.Tensor]:
    """log q and log (1 - q) of squared 2D distances [M] (numerically safe)."""
    # q = 1 / (1 + a d^2b): log q = -log1p(a d^2b); log(1-q) = log(a d^2b) - log1p(a d^2b)
    scaled = a * torch.pow(sq_dist.clamp_min(EPS * EPS), b)
    log1p = torch.log1p(scaled)
    return -log1p, torch.log(scaled) - log1p


def umap_cross_entropy(head: torch.Tensor, tail: torch.Tensor, negatives: torch.Tensor,
                       a: float, b: float, repulsion: float = 1.0) -> torch.Tensor:
    """Cross-entropy of sampled edges: heads [B, 2] attract tails [B, 2]; each head repels its
    negatives [B, K, 2]. Edges are sampled by membership weight, so every edge counts once."""
    attract_log, _ = similarity_log(((head - tail) ** 2).sum(-1), a, b)
    _, repel_log = similarity_log(((head[:, None, :] - negatives) ** 2).sum(-1), a, b)
    return -(attract_log.mean() + repulsion * repel_log.sum(-1).mean())


def reconstruction(decoded: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error of decoded [B, D] against scaled features [B, D]."""
    return torch.mean((decoded - target) ** 2)


def temporal_terms(current: torch.Tensor, earlier_now: torch.Tensor, anchors: torch.Tensor,
                   margins: torch.Tensor, weights: torch.Tensor,
                   a: float, b: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Temporal cross-entropy and anchored hinge of temporal edges, each [T].

    ``current`` [T, 2]: the network's coords of a sample now; ``anchors`` [T, 2]: where the same
    sample was drawn at an earlier snapshot; ``earlier_now`` [T, 2]: the network's coords of that
    earlier feature vector today. The cross-entropy pulls the sample towards its anchor (weighted
    by how little its features drifted); the hinge lets the earlier point move at most ``margins``
    [T] from its anchor, so old maps stay readable while the new one is learned.
    """
    attract_log, _ = similarity_log(((current - anchors) ** 2).sum(-1), a, b)
    cross_entropy = -(weights * attract_log).sum() / weights.sum().clamp_min(EPS)
    moved = torch.sqrt(((earlier_now - anchors) ** 2).sum(-1) + EPS * EPS)
    hinge = torch.relu(moved - margins).pow(2).mean()
    return cross_entropy, hinge
