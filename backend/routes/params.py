"""Request parameters shared by the routes, each declared once with its bounds.

Every integer a route hands to the store becomes a DuckDB ``BIGINT``: its declaration bounds it
to int64, so a bigger number is refused with a 422 naming the bound (and the OpenAPI schema
shows it) instead of overflowing inside a query. A ``run_id`` follows the wire's rule.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query, Request

from sentrycam.backend.audit.alerts import SEVERITY_NAMES
from sentrycam.backend.routes.errors import validation_error
from sentrycam.protocol.fields import INT64_MAX
from sentrycam.protocol.messages import RUN_ID_RULE

INT64_MIN = -INT64_MAX - 1

#: A run's id, as the wire messages declare it (so a malformed one is a 422 saying what it may be).
RunId = Annotated[str, Path(pattern=f"^(?:{RUN_ID_RULE.pattern})$",
                            description=f"a run's id: {RUN_ID_RULE.explain}")]
#: A training step (``step`` of the wire messages): 0 .. 2**63-1.
Step = Annotated[int, Query(ge=0, le=INT64_MAX, description="a training step")]
SinceStep = Annotated[int | None, Query(ge=0, le=INT64_MAX,
                                        description="only rows with step >= this")]
#: The most rows one request may ask for.
MAX_ROWS = 10_000_000
Limit = Annotated[int | None, Query(ge=1, le=MAX_ROWS, description="at most this many rows")]
#: An alert's id as the store numbers them (1, 2, ...).
AlertId = Annotated[int, Path(ge=1, le=INT64_MAX,
                              description="an alert's id, as GET /api/alerts lists them")]
MinSeverity = Annotated[int, Query(ge=0, le=len(SEVERITY_NAMES) - 1,
                                   description="only alerts of at least this severity")]
#: A captured layer's name.
Layer = Annotated[str, Query(min_length=1, description="a captured layer, e.g. 'fc:input'")]


class Int64ListQuery:
    """A required query parameter of comma-separated integers, as a dependency that parses it
    and refuses (422, FastAPI's shape) an item that is not an integer, one outside int64, or
    more than ``most`` items. Blank items are skipped. :attr:`openapi` declares it (an array of
    int64 sent as ``style: form, explode: false``), for the route's ``openapi_extra``."""

    def __init__(self, name: str, most: int, description: str) -> None:
        self.name, self.most = name, most
        items = {"type": "integer", "format": "int64", "minimum": INT64_MIN, "maximum": INT64_MAX}
        self.openapi = {"parameters": [{
            "name": name, "in": "query", "required": True, "style": "form", "explode": False,
            "description": f"{description}, comma-separated (at most {most})",
            "schema": {"type": "array", "items": items, "maxItems": most}}]}

    def __call__(self, request: Request) -> list[int]:
        location = ("query", self.name)
        texts = request.query_params.getlist(self.name)
        if not texts:
            raise validation_error(location, "Field required", None)
        text = ",".join(texts)
        try:
            values = [int(item) for item in text.split(",") if item.strip()]
        except ValueError:
            raise validation_error(location, f"{self.name} must be comma-separated integers",
                                   text[:80]) from None
        outside = next((v for v in values if not INT64_MIN <= v <= INT64_MAX), None)
        if outside is not None:
            raise validation_error(location, f"{self.name} must fit int64 ({INT64_MIN} .. "
                                   f"{INT64_MAX}), got {str(outside)[:40]}", text[:80])
        if len(values) > self.most:
            raise validation_error(location, f"at most {self.most} {self.name} per request, "
                                   f"got {len(values)}; split the request", text[:80])
        return values
