"""What to do when a test's outside prerequisite (Chromium, hadolint, buildah, root) is missing:
skip on a developer machine, FAIL when the ``CI`` environment variable is set, so that CI can
never pass such a test by skipping it."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def missing(reason: str, ci_must: str) -> NoReturn:
    """Skip with ``reason``; under CI fail with ``reason`` and what CI must do (``ci_must``)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must {ci_must}")
    pytest.skip(reason)
