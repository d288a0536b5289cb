"""Request parameters shared by the routes, each declared once with its bounds.

Every integer a route hands to the store becomes a DuckDB ``BIGINT``: its declaration bounds it
to int64, so a bigger number is refused with a 422 naming the bound (and the OpenAPI schema
shows it) instead of overflowing inside a query. A ``run_id`` follows the wire's rule.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import HTTPException, Path, Query

from sentrycam.backend.audit.alerts import SEVERITY_NAMES
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


def int64_list(text: str, name: str, most: int) -> list[int]:
    """The comma-separated integers of query parameter ``name`` (blank items skipped).

    Raises HTTPException 422 naming the problem: an item that is not an integer, one outside
    int64, or more than ``most`` items."""
    try:
        values = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise HTTPException(status_code=422, detail=f"{name} must be comma-separated integers, "
                            f"got {text[:80]!r}") from None
    outside = next((v for v in values if not INT64_MIN <= v <= INT64_MAX), None)
    if outside is not None:
        raise HTTPException(status_code=422, detail=f"{name} must fit int64 ({INT64_MIN} .. "
                            f"{INT64_MAX}), got {str(outside)[:40]}")
    if len(values) > most:
        raise HTTPException(status_code=422, detail=f"at most {most} {name} per request, got "
                            f"{len(values)}; split the request")
    return values
