"""The real server fixture ``live`` for the training-setup tests: the framework tests' own."""

from tests.capture.integrations.conftest import live  # noqa: F401  (the fixture, re-exported)
