"""Fixtures of the backend tests. ``store`` comes from the root conftest; ``make_settings``,
``server`` and ``ingest`` from :mod:`tests.live_server`; the server helper itself is
:mod:`sentrycam.backend.testing`."""

from __future__ import annotations

import pytest

from sentrycam.backend.testing import isolate_environment


@pytest.fixture(autouse=True)
def _no_sentrycam_environment(monkeypatch):
    isolate_environment(monkeypatch)
