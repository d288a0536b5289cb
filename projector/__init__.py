"""sentrycam.projector: live spatio-temporal 2D projection of snapshots (the SentryCam method).

Usable without the server: ``Projector(seed=0).update(features, ids, labels) -> [N, 2]``.
Quality metrics are in :mod:`sentrycam.projector.metrics`.
"""

from sentrycam.projector.projector import Projector, ProjectorConfig
from sentrycam.projector.training import TrainConfig

__all__ = ["Projector", "ProjectorConfig", "TrainConfig"]
