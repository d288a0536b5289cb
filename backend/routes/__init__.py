"""HTTP and websocket routes of the server, one module per concern.

Routes reach the server's parts through ``app.state`` (see :func:`sentrycam.backend.app.create_app`)
with the small accessors below, so no module holds global state.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import HTTPConnection

from sentrycam.protocol import container


def state_of(connection: HTTPConnection) -> Any:
    """The app's state for a request or websocket."""
    return connection.app.state


def json_safe(value: Any) -> Any:
    """Make store output JSON-encodable: numpy scalars and arrays become Python values, and
    NaN/Inf become the strings "NaN"/"Infinity"/"-Infinity" (what ``Number()`` in a browser and
    ``float()`` in Python both read back)."""
    return container.json_safe(value, container.JS_NONFINITE)
