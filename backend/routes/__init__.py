"""HTTP and websocket routes of the server, one module per concern.

Routes reach the server's parts (store, writer, hub...) through the typed FastAPI dependencies
of :mod:`sentrycam.backend.routes.parts`, declare their answers with the models of their module
and the refusals of :mod:`sentrycam.backend.routes.errors`, and make what the store returns
JSON-encodable with :func:`json_safe`.
"""

from __future__ import annotations

from typing import Any

from sentrycam.protocol import container

#: Non-finite floats in a JSON answer: ``null`` (strict JSON has no NaN; the schemas of the
#: answers say which values may be null).
NONFINITE_AS_NULL = (None, None, None)


def json_safe(value: Any) -> Any:
    """Make store output JSON-encodable: numpy scalars and arrays become Python values, and
    NaN/Inf become ``None`` (JSON ``null``)."""
    return container.json_safe(value, NONFINITE_AS_NULL)


def stored_json_safe(value: Any) -> Any:
    """:func:`json_safe` for JSON the store kept as text (event payloads, alert evidence, run
    configs), where non-finite floats were spelled ``"nan"``/``"inf"``/``"-inf"``: those become
    ``None`` too."""
    return json_safe(container.from_json_safe(value))
