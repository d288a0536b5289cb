"""What the trainer tells its user directly: the few lines that matter even when the training
script configured no logging (a plain script or a notebook shows no INFO log)."""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("sentrycam.capture")


def announce(text: str) -> None:
    """Through logging when the application configured the ``sentrycam`` logger (or a parent),
    else once on stderr."""
    if logging.getLogger("sentrycam").hasHandlers():
        log.info(text)
    else:
        sys.stderr.write(text + "\n")
