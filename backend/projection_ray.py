"""The projector on a Ray cluster: one actor per (run, layer) holding the layer's warm state.

``RAY_ADDRESS`` names the cluster (its nodes need sentrycam installed); without it a local Ray
starts on demand, small: ``slots`` CPUs and no dashboard. Where the cluster has GPUs, each
actor asks for a share of one and projects on CUDA. The server still alone writes the store:
actors receive features and return coordinates, checkpoint and quality. Needs the optional
extra ``sentrycam[ray]``; importing sentrycam never imports ray.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import numpy as np

from sentrycam.backend.projection_work import (LayerKey, LayerWork, Projected, ProjectRequest,
                                               Resume, WorkerLost, limit_threads,
                                               warm_up_projector)

log = logging.getLogger(__name__)

#: The share of a GPU each layer's actor asks for: many small projectors fit on one card.
GPU_SHARE = 0.125
#: The object store of a Ray started here: snapshots pass through it one job at a time.
LOCAL_OBJECT_STORE_BYTES = 256 * 1024 * 1024


def import_ray() -> Any:
    """The ``ray`` module, or an ImportError that names the extra to install."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError("the Ray projector needs Ray: pip install 'sentrycam[ray]'") from exc
    return ray


class LayerActor:
    """A layer's :class:`LayerWork` in a Ray worker process (one torch thread: the actor's
    process shares its node with others)."""

    def __init__(self, settings: dict[str, Any], device: str, resume: Resume | None) -> None:
        limit_threads(1)
        warm_up_projector()
        self.work = LayerWork(settings, device, resume)

    def project(self, ids: np.ndarray, features: np.ndarray,
                labels: np.ndarray | None) -> Projected:
        return self.work.project(ids, features, labels)

    def quality(self) -> dict[str, float]:
        return self.work.quality()


class RayEngine:
    """Jobs dispatched to per-layer actors from ``slots`` threads (see module doc)."""

    kind = "ray"

    def __init__(self, slots: int) -> None:
        self.ray = import_ray()
        self.slots = slots
        self.restarts = 0
        self.started_s: float | None = None
        self._lock = threading.Lock()
        self._started_ray = False
        self._actors: dict[LayerKey, Any] = {}
        self._actor_class: Any = None
        self._gpus = 0.0

    def start_slot(self, slot: int) -> None:
        with self._lock:
            if self._actor_class is None:
                self._connect()

    def _connect(self) -> None:
        ray = self.ray
        started = time.perf_counter()
        if not ray.is_initialized():
            if os.environ.get("RAY_ADDRESS"):
                ray.init(log_to_driver=False)
            else:  # a local Ray for this server only, as small as will do
                ray.init(num_cpus=self.slots, include_dashboard=False, log_to_driver=False,
                         object_store_memory=LOCAL_OBJECT_STORE_BYTES)
            self._started_ray = True
        self._gpus = float(ray.cluster_resources().get("GPU", 0.0))
        self._actor_class = ray.remote(LayerActor)
        self.started_s = time.perf_counter() - started
        log.info("Ray ready in %.1f s (%s GPUs)", self.started_s, self._gpus)

    def accepts(self, slot: int, key: LayerKey) -> bool:
        return True

    def _actor(self, request: ProjectRequest) -> Any:
        with self._lock:
            actor = self._actors.get(request.key)
            if actor is None:
                options = {"num_gpus": GPU_SHARE} if self._gpus > 0 else {}
                device = "cuda" if self._gpus > 0 and request.device in ("auto", "cuda") \
                    else request.device
                actor = self._actor_class.options(**options).remote(
                    request.settings, device, request.resume)
                self._actors[request.key] = actor
            return actor

    def project(self, slot: int, request: ProjectRequest) -> Projected:
        actor = self._actor(request)
        return self._get(request.key, actor.project.remote(request.ids, request.features,
                                                           request.labels))

    def quality(self, slot: int, key: LayerKey) -> dict[str, float]:
        return self._get(key, self._actors[key].quality.remote())

    def _get(self, key: LayerKey, reference: Any) -> Any:
        ray = self.ray
        try:
            return ray.get(reference)
        except ray.exceptions.RayActorError as exc:
            with self._lock:
                self._actors.pop(key, None)
                self.restarts += 1
            raise WorkerLost(f"the Ray actor of {key[0]}/{key[1]} died: {exc}") from exc
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, ValueError):
                raise ValueError(str(cause)) from None
            raise

    def stop(self) -> None:
        with self._lock:
            actors = list(self._actors.values())
            self._actors.clear()
        for actor in actors:
            self.ray.kill(actor)
        if self._started_ray:
            self.ray.shutdown()
