"""HTTP and websocket routes of the server, one module per concern.

Routes reach the server's parts through ``app.state`` (see :func:`sentrycam.backend.app.create_app`)
with the small accessors below, so no module holds global state.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from starlette.requests import HTTPConnection


def state_of(connection: HTTPConnection) -> Any:
    """The app's state for a request or websocket."""
    return connection.app.state


def json_safe(value: Any) -> Any:
    """Make store output JSON-encodable: numpy scalars and arrays become Python values, and
    NaN/Inf become the strings "NaN"/"Infinity"/"-Infinity" (what ``Number()`` in a browser and
    ``float()`` in Python both read back)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
