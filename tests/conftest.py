"""Suite-wide test settings."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _projector_off_unless_asked():
    """Servers started by tests (in-process or as child processes) run without the projector
    worker, whose numba warm-up costs ~25 s of CPU; projector tests switch it on explicitly."""
    previous = os.environ.get("SENTRYCAM_PROJECTOR")
    os.environ.setdefault("SENTRYCAM_PROJECTOR", "off")
    yield
    if previous is None:
        os.environ.pop("SENTRYCAM_PROJECTOR", None)
