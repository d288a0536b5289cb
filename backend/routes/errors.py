"""The error answers of the HTTP routes, declared once, so the OpenAPI document shows what the
server really sends.

Every refusal but a 422 is a :class:`Problem` (``{"detail": "what went wrong"}``): the routes'
own 404s, the app's unknown-run handler, and the guards in front of every route
(:mod:`sentrycam.backend.origin`: 421, 403; :mod:`sentrycam.backend.auth`: 401, 403). A 422
is FastAPI's validation error (``{"detail": [{"loc", "msg", "type", ...}]}``), also for the
values a route checks itself (:func:`validation_error`).

A route declares the refusals of its own with ``responses=problems(404, ...)``; those of the
guards apply to every route alike, so :func:`document_guards` adds them to each operation of
the app's document, from the guards' own rules (a new route cannot forget them).
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Mapping

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel

from sentrycam.backend import auth, origin

#: What the OpenAPI document says each route refusal means.
REASONS = {
    404: "the run, alert, map or file named does not exist; detail says what is stored",
    503: "the store cannot be used right now (disk full, I/O error); retry later",
}
#: A Problem answer, whatever the route's own media type (the page's is HTML); the document's
#: components get the schema from :func:`document_guards`.
_PROBLEM_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


class Problem(BaseModel):
    """A refusal: what went wrong and, where it helps, what to do instead."""

    detail: str


def problem(status: int, reason: str | None = None) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` entry of a route that may answer ``status`` with a Problem, for
    ``reason`` (default: the status' entry in :data:`REASONS`)."""
    return {status: {"description": reason or REASONS[status], "content": _PROBLEM_CONTENT}}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route that may answer each of ``statuses`` with a Problem."""
    return {status: answer for status in statuses for answer in problem(status).values()}


def validation_error(location: tuple[str, ...], message: str, value: Any) -> RequestValidationError:
    """A 422 in the shape of FastAPI's own (what the schema's HTTPValidationError declares):
    ``value`` at ``location`` (e.g. ("query", "sample_ids")) is refused for ``message``."""
    return RequestValidationError([{"type": "value_error", "loc": location, "msg": message,
                                    "input": value}])


def guard_refusals(method: str, path: str, *, token: bool, read_token: bool,
                   open_paths: frozenset[str]) -> dict[int, str]:
    """What the guards may answer to ``method path`` instead of the route, with why: the
    Host/Origin guard always runs; the token guard where the server has a token."""
    refusals = dict(origin.refusals(method))
    if token and path not in open_paths:
        for status, reason in auth.refusals(method, read_token=read_token).items():
            refusals[status] = f"{refusals[status]}; or {reason}" if status in refusals else reason
    return refusals


def document_guards(app: FastAPI, refusals: Callable[[str, str], Mapping[int, str]]) -> None:
    """Make ``app``'s OpenAPI document list, for each operation, the Problem answers
    ``refusals(method, path)`` names (:func:`guard_refusals` with the app's settings), and
    hold the Problem schema the routes' declarations refer to."""
    build, decorated = app.openapi, []

    def openapi() -> dict[str, Any]:
        document = build()
        if not any(document is done for done in decorated):  # built anew: routes changed
            _add_refusals(document, refusals)
            decorated[:] = [document]
        return document

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented extension point


def _add_refusals(document: dict[str, Any],
                  refusals: Callable[[str, str], Mapping[int, str]]) -> None:
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            answers = operation.setdefault("responses", {})
            for status, reason in refusals(method.upper(), path).items():
                declared = answers.setdefault(str(status), {"description": reason})
                if declared["description"] != reason and reason not in declared["description"]:
                    declared["description"] += f"; or {reason}"
                declared.setdefault("content", copy.deepcopy(_PROBLEM_CONTENT))
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("Problem", Problem.model_json_schema())
