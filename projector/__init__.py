"""sentrycam.projector: live spatio-temporal 2D projection of snapshots (the SentryCam method).

Usable without the server: ``Projector(seed=0).update(features, ids, labels) -> [N, 2]``.
Quality metrics are in :mod:`sentrycam.projector.metrics`. ``warm_up()`` prepares a process
to project (numba code from the on-disk cache of :mod:`sentrycam.projector.jit_cache`).
"""

from sentrycam.projector.projector import Projector, ProjectorConfig
from sentrycam.projector.training import TrainConfig
from sentrycam.projector.warmup import warm_up

__all__ = ["Projector", "ProjectorConfig", "TrainConfig", "warm_up"]
