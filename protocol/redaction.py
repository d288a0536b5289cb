"""Tokens never reach a log line: records that carry one are rewritten before any handler.

A token travels as ``Authorization: Bearer <token>`` or as a ``?token=<token>`` query
parameter, and both end up in log records: uvicorn logs each websocket handshake's URL
(``"WebSocket /ws/runs/r1?token=..." [accepted]``) on ``uvicorn.error`` and, with access
logging on, each request's URL on ``uvicorn.access``; the ``websockets`` library logs every
handshake header at DEBUG level, on the server (through uvicorn's logger) and in each client
(the trainer's sender, the dashboard's push subscription). :class:`RedactSecrets` on those
loggers replaces the token by :data:`REDACTED`.
"""

from __future__ import annotations

import logging
import re

REDACTED = "[redacted]"

_SECRET = re.compile(r"(?i)(\btoken=|\bbearer\s+)[^&\s\"'#]+")


def redact(text: str) -> str:
    """``text`` with the value of every ``token=`` parameter and bearer credential replaced."""
    return _SECRET.sub(lambda match: match.group(1) + REDACTED, text)


class RedactSecrets(logging.Filter):
    """Rewrites a record whose message holds a token (see :func:`redact`); keeps every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed record: its handler reports it
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def redacting_logger(name: str) -> logging.Logger:
    """The logger ``name`` with :class:`RedactSecrets` on it (added once, however often asked).

    A filter on a logger, not on a handler: whoever configures the handlers (uvicorn's
    ``log_config``, an application, pytest) only ever receives redacted records. It applies to
    records logged on that very logger, so give it to the library that logs (``websockets``'
    ``connect(logger=...)``) or name the library's own logger."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, RedactSecrets) for f in logger.filters):
        logger.addFilter(RedactSecrets())
    return logger
