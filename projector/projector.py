"""The projector estimator: one 2D map per snapshot of a layer, stable over time.

    p = Projector(seed=0)
    for features, ids, labels in snapshots:      # float [N, D], int [N], optional [N]
        coords = p.update(features, ids, labels)  # float32 [N, 2], rows in input order
    p.transform(other_features)                    # float32 [M, 2] at the latest snapshot
    p.inverse(coords)                              # float32 [M, D] through the decoder
    state = p.state_dict(); Projector.from_state_dict(state)

Each update: density-guided sample -> spatial kNN graph (warm-started from the last one) +
temporal edges to the same ids in earlier snapshots -> a fixed budget of Adam steps on the
GN-BN autoencoder, warm-started from the previous snapshot's network -> coords of every point
-> a short low-rate polish of those coords on the same graph (restores the finest
neighbourhoods a smooth encoder blurs). ``transform`` gives the network's (unpolished) map.

A layer's first snapshot returns in seconds: its map is a fast initial layout (see
:mod:`~sentrycam.projector.initial`) while the network is fitted to it in the background;
:meth:`Projector.wait_for_fit` gives the fitted map, which replaces it as the one later
snapshots link to. numba code is cached on disk across processes
(:mod:`~sentrycam.projector.jit_cache`).
"""

from __future__ import annotations

import dataclasses
import io
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from sentrycam.projector import fuzzy, initial, jit_cache, polish, sampling
from sentrycam.projector.background import BackgroundTask
from sentrycam.projector.graph import (DEFAULT_K, EXACT_MAX, SpatialGraph, build_spatial_graph,
                                       compile_nn_descent, uses_exact)
from sentrycam.projector.network import DEFAULT_HIDDEN, GNBNAutoencoder
from sentrycam.projector.temporal import (DEFAULT_OFFSETS, PastSnapshot, TemporalEdges,
                                          keep_needed, linked_snapshots, temporal_edges)
from sentrycam.projector.training import EdgeSet, TrainConfig, train_snapshot
from sentrycam.projector.validation import check_snapshot

ENCODE_CHUNK = 16_384


@dataclass(frozen=True)
class ProjectorConfig:
    """Settings of a projector. ``first_steps``/``steps``: Adam steps of the first and of each
    later snapshot; ``time_limit_s`` / ``first_time_limit_s`` optionally cut a later / the first
    snapshot's training short (bounded latency on a busy machine; results then depend on its
    speed); ``max_fraction`` caps the sampled share of points; ``sample_above``:
    snapshots with fewer points are never thinned; ``polish_epochs`` /
    ``first_polish_epochs``: epochs of UMAP layout SGD at ``polish_learning_rate`` that
    sharpen the network's map of a later / the first snapshot (0 = show the network's map
    as is; see :mod:`~sentrycam.projector.polish`), scaled down in proportion above
    ``polish_points`` graph points so the polish takes a bounded time.
    ``initial_layout_epochs``: epochs of the first snapshot's fast initial layout (0: the first
    update fits the network before it returns, and its map is the network's);
    ``exact_knn_max``: samples up to this size get the exact kNN graph, larger ones NN-descent
    (see :mod:`~sentrycam.projector.graph`); ``disk_cache``: keep compiled numba code in
    the user's cache folder (see :mod:`~sentrycam.projector.jit_cache`)."""

    seed: int = 0
    k: int = DEFAULT_K
    min_dist: float = 0.1
    hidden: tuple[int, ...] = DEFAULT_HIDDEN
    first_steps: int = 600
    steps: int = 15
    time_limit_s: float | None = None
    first_time_limit_s: float | None = None
    max_fraction: float = 1.0
    sample_above: int = 20_000
    polish_epochs: int = 60
    first_polish_epochs: int = 200
    polish_learning_rate: float = 0.3
    polish_points: int = 3500
    temporal_offsets: tuple[int, ...] = DEFAULT_OFFSETS
    initial_layout_epochs: int = 200
    exact_knn_max: int = EXACT_MAX
    disk_cache: bool = True
    train: TrainConfig = field(default_factory=TrainConfig)


class Projector:
    """Live spatio-temporal parametric projection of successive snapshots (see module doc).

    ``device``: "cpu" (default), "cuda", or "auto" (CUDA when available). ``last_info`` holds
    what the latest update did (sampled fraction, edges, steps, seconds per phase);
    ``history`` one such dict per update.
    """

    def __init__(self, seed: int = 0, device: str | None = "cpu", **settings: Any) -> None:
        train = settings.pop("train", None)
        train = TrainConfig(**train) if isinstance(train, dict) else (train or TrainConfig())
        self.config = ProjectorConfig(seed=seed, train=train, **settings)
        self.device = _resolve_device(device)
        self.curve = fuzzy.curve_params(self.config.min_dist)
        self.network: GNBNAutoencoder | None = None
        self.optimizer: torch.optim.Adam | None = None
        self.n_updates = 0
        self.center: np.ndarray | None = None
        self.scale = 1.0
        self.past: list[PastSnapshot] = []
        self.previous_graph: tuple[np.ndarray, np.ndarray] | None = None
        self.history: list[dict[str, Any]] = []
        self._initial_fit: BackgroundTask | None = None

    @property
    def input_dim(self) -> int | None:
        return None if self.network is None else self.network.input_dim

    @property
    def last_info(self) -> dict[str, Any] | None:
        return self.history[-1] if self.history else None

    def update(self, features: Any, ids: Any, labels: Any = None) -> np.ndarray:
        """Project one snapshot: features float [N, D], ids int [N] (unique, stable across
        snapshots), labels optional [N] (stratify the sample). Returns float32 [N, 2].

        A first snapshot (with ``initial_layout_epochs`` > 0) returns its fast initial layout;
        ``last_info["initial_layout"]`` is then True and :meth:`wait_for_fit` gives the fitted
        map. Every call waits for that fit first."""
        self._finish_fit()
        features, ids, labels = check_snapshot(features, ids, labels, self.config.k,
                                               self.input_dim)
        if self.config.disk_cache:
            jit_cache.enable()
        self._initial_fit = None
        timings: dict[str, float] = {}
        clock = time.perf_counter()
        index = self.n_updates
        seed = self.config.seed + 7919 * index
        rng = np.random.default_rng([self.config.seed, index])
        self.center = features.mean(axis=0)
        self.scale = float(np.sqrt(np.mean((features - self.center) ** 2))) or 1.0
        scaled = (features - self.center) / self.scale
        choice = self._sample(scaled, ids, labels, rng, seed)
        clock = _lap(timings, "sample", clock)
        graph = build_spatial_graph(scaled[choice.rows], ids[choice.rows], self.config.k, seed,
                                    self.previous_graph, self.config.exact_knn_max,
                                    self.config.disk_cache)
        past = linked_snapshots(self.past, index, self.config.temporal_offsets)
        temporal = temporal_edges(ids, scaled, past, graph.mean_distance)
        clock = _lap(timings, "graph", clock)
        first = self.network is None
        if first:
            self._build_network(features.shape[1])
        info = {"index": index, "n": len(ids), "fraction": choice.fraction,
                "density_curve": choice.curve, "n_sampled": len(choice.rows),
                "n_edges": len(graph.heads), "n_temporal": len(temporal.current),
                "linked": [snapshot.index for snapshot in past], "graph_reused": graph.reused,
                "initial_layout": first and self.config.initial_layout_epochs > 0,
                "seconds": timings}
        self.history.append(info)

        def fit(temporal: TemporalEdges) -> np.ndarray:
            return self._fit(scaled, choice.rows, graph, temporal, first, seed, info)

        if info["initial_layout"]:
            coords = initial.initial_layout(scaled, choice.rows, graph.heads, graph.tails,
                                            graph.weights, self.config.initial_layout_epochs,
                                            self.curve, seed)
            _lap(timings, "initial_layout", clock)
        else:
            coords = fit(temporal)
        self._remember(index, ids, scaled, coords, ids[choice.rows], graph.knn_ids)
        info["total_s"] = sum(timings.values())
        if info["initial_layout"]:  # after _remember: the fit replaces what it stored
            anchors = initial.anchor_edges(scaled, choice.rows, coords)
            self._initial_fit = BackgroundTask(lambda: self._refit_past(index, fit(anchors)),
                                               name="sentrycam-projector-fit")
        return coords

    def wait_for_fit(self, timeout: float | None = None) -> np.ndarray | None:
        """When the latest update returned a first snapshot's initial layout: wait (up to
        ``timeout`` s, else TimeoutError) for the network's fit to it and return the fitted
        map float32 [N, 2] (rows in that update's input order); otherwise None."""
        return None if self._initial_fit is None else self._initial_fit.result(timeout)

    def transform(self, features: Any) -> np.ndarray:
        """Coords float32 [M, 2] of other points at the latest snapshot (features [M, D])."""
        network = self._require_network()
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != network.input_dim:
            raise ValueError(f"transform needs features [M, {network.input_dim}], got "
                             f"{features.shape}")
        if not np.isfinite(features).all():
            raise ValueError("features contain NaN or Inf: they cannot be projected")
        scaled = (features - self.center) / self.scale
        return self._encode(torch.from_numpy(scaled).to(self.device))

    def inverse(self, coords: Any) -> np.ndarray:
        """Features float32 [M, D] decoded from 2D ``coords`` [M, 2] at the latest snapshot."""
        network = self._require_network()
        coords = np.asarray(coords, dtype=np.float32)
        if coords.ndim != 2 or coords.shape[1] != 2:
            raise ValueError(f"inverse needs coords [M, 2], got {coords.shape}")
        with torch.no_grad():
            decoded = network.decode(torch.from_numpy(coords).to(self.device)).cpu().numpy()
        return (decoded * self.scale + self.center).astype(np.float32)

    # -- persistence -------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to carry on updating: settings, network, optimizer, the earlier
        snapshots temporal edges link to (float16), the last graph, per-update history."""
        self._finish_fit()
        return {
            "config": asdict(self.config), "n_updates": self.n_updates,
            "input_dim": self.input_dim, "center": self.center, "scale": self.scale,
            "network": None if self.network is None else self.network.state_dict(),
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "past": [asdict(snapshot) for snapshot in self.past],
            "previous_graph": self.previous_graph, "history": self.history,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], device: str | None = "cpu") -> "Projector":
        """A projector that continues where the one that wrote ``state`` stopped."""
        config = dict(state["config"])
        config["hidden"] = tuple(config["hidden"])
        config["temporal_offsets"] = tuple(config["temporal_offsets"])
        projector = cls(device=device, **config)
        if state["input_dim"] is not None:
            projector._build_network(state["input_dim"])
            projector.network.load_state_dict(state["network"])
            projector._require_optimizer().load_state_dict(state["optimizer"])
            projector.network.eval()
        projector.n_updates = state["n_updates"]
        projector.center, projector.scale = state["center"], state["scale"]
        projector.past = [PastSnapshot(**snapshot) for snapshot in state["past"]]
        projector.previous_graph = state["previous_graph"]
        projector.history = list(state["history"])
        return projector

    def to_bytes(self) -> bytes:
        """:meth:`state_dict` serialised (for the store's checkpoint column)."""
        buffer = io.BytesIO()
        torch.save(self.state_dict(), buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, device: str | None = "cpu") -> "Projector":
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
        return cls.from_state_dict(state, device=device)

    # -- internals ---------------------------------------------------------------------------

    def _sample(self, scaled: np.ndarray, ids: np.ndarray, labels: np.ndarray | None,
                rng: np.random.Generator, seed: int) -> sampling.SamplingChoice:
        if len(ids) < self.config.sample_above:
            return sampling.SamplingChoice(1.0, {}, np.arange(len(ids)))
        return sampling.choose_sample(scaled, ids, labels, rng, seed,
                                      min_points=self.config.sample_above,
                                      max_fraction=self.config.max_fraction)

    def _fit(self, scaled: np.ndarray, rows: np.ndarray, graph: SpatialGraph,
             temporal: TemporalEdges, first: bool, seed: int, info: dict[str, Any]
             ) -> np.ndarray:
        """Train the network on the snapshot's graph, encode and polish: coords float32 [N, 2]
        of ``scaled`` [N, D]; the loss terms and phase times go into ``info``."""
        started = clock = time.perf_counter()
        timings = info["seconds"]
        edges = self._edge_set(rows[graph.heads], rows[graph.tails], graph.weights, temporal)
        features_t = torch.from_numpy(scaled).to(self.device)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        steps, limit = ((self.config.first_steps, self.config.first_time_limit_s) if first
                        else (self.config.steps, self.config.time_limit_s))
        terms = train_snapshot(self.network, self._require_optimizer(), features_t, edges, steps,
                               self.config.train, self.curve, generator, limit)
        clock = _lap(timings, "train", clock)
        coords = self._encode(features_t)
        clock = _lap(timings, "encode", clock)
        coords = polish.polish(coords, rows, graph.heads, graph.tails, graph.weights,
                               self._polish_epochs(first, len(rows)), self.curve, seed,
                               self.config.polish_learning_rate)
        _lap(timings, "polish", clock)
        info.update(terms, fit_s=time.perf_counter() - started)
        return coords

    def _refit_past(self, index: int, coords: np.ndarray) -> np.ndarray:
        """Background end of a first fit: later snapshots link to the fitted ``coords``
        [N, 2]; NN-descent gets compiled now if the layer's later samples will need it."""
        self.past = [dataclasses.replace(s, coords=coords) if s.index == index else s
                     for s in self.past]
        sampled = len(self.previous_graph[0])
        if not uses_exact(sampled, warm_start=True, exact_max=self.config.exact_knn_max):
            compile_nn_descent(self.config.k, self.config.disk_cache)
        return coords

    def _finish_fit(self) -> None:
        """Wait for a first snapshot's background fit (raising what it raised)."""
        if self._initial_fit is not None:
            self._initial_fit.result()

    def _polish_epochs(self, first: bool, n_graph_points: int) -> int:
        epochs = self.config.first_polish_epochs if first else self.config.polish_epochs
        share = min(1.0, self.config.polish_points / max(n_graph_points, 1))
        return int(round(epochs * share)) if epochs > 0 else 0

    def _build_network(self, input_dim: int) -> None:
        with torch.random.fork_rng(devices=[]):  # the caller's global RNG stays untouched
            torch.manual_seed(self.config.seed)
            self.network = GNBNAutoencoder(input_dim, self.config.hidden).to(self.device)
        self.optimizer = None

    def _require_optimizer(self) -> torch.optim.Adam:
        """The network's optimizer, made at its first use: torch's optimizers import
        torch._dynamo (seconds in a fresh process), which a first map's initial layout does
        not need, so the first fit (in the background) pays it."""
        if self.optimizer is None:
            self.optimizer = torch.optim.Adam(self.network.parameters(),
                                              lr=self.config.train.learning_rate)
        return self.optimizer

    def _edge_set(self, heads: np.ndarray, tails: np.ndarray, weights: np.ndarray,
                  temporal: Any) -> EdgeSet:
        def tensor(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(array)).to(self.device)
        return EdgeSet(tensor(heads), tensor(tails), tensor(weights), tensor(temporal.current),
                       tensor(temporal.earlier), tensor(temporal.anchors),
                       tensor(temporal.margins), tensor(temporal.weights))

    def _encode(self, features: torch.Tensor) -> np.ndarray:
        network = self.network  # not _require_network: the background fit encodes too
        network.eval()
        with torch.no_grad():
            parts = [network.encode(features[start:start + ENCODE_CHUNK])
                     for start in range(0, len(features), ENCODE_CHUNK)]
        return torch.cat(parts).cpu().numpy().astype(np.float32)

    def _remember(self, index: int, ids: np.ndarray, scaled: np.ndarray, coords: np.ndarray,
                  sampled_ids: np.ndarray, knn_ids: np.ndarray) -> None:
        self.past.append(PastSnapshot(index, ids, scaled.astype(np.float16), coords))
        self.past = keep_needed(self.past, index, self.config.temporal_offsets)
        self.previous_graph = (sampled_ids, knn_ids)
        self.n_updates = index + 1

    def _require_network(self) -> GNBNAutoencoder:
        self._finish_fit()
        if self.network is None:
            raise ValueError("the projector has seen no snapshot yet: call update() first")
        return self.network


def _resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if device == "auto" and torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _lap(timings: dict[str, float], name: str, started: float) -> float:
    now = time.perf_counter()
    timings[name] = now - started
    return now
