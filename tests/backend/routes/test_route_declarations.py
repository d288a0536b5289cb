"""Every HTTP route declares what it answers, so the OpenAPI document matches the server.

The walk covers every route of the app (a route added later is checked too): a response model
or class, and in the document every refusal the route can meet: the guards' (421 always, 403
for a browser page of a foreign origin on a state-changing request, 401 where a token is set,
403 for the read token on a write), 422 where it takes parameters, 404 where it names a stored
thing. A NaN stored value comes back as JSON null, as the schema says it may.
"""

from __future__ import annotations

import math
from typing import Iterator

import httpx
import numpy as np
import pytest
from fastapi.routing import APIRoute
from fastapi.responses import JSONResponse
from starlette.routing import BaseRoute

from sentrycam.backend.app import create_app
from sentrycam.backend.auth import OPEN_PATHS, Access, required_access
from sentrycam.backend.origin import checks_origin
from sentrycam.protocol.messages import LayerStats, RunStart, Scalars

RUN = "nan-run"
WRITE, READ = "write-token", "read-token"


def http_routes(routes: list[BaseRoute]) -> Iterator[APIRoute]:
    """Every HTTP route, also those of included routers (FastAPI keeps an included router
    whole, as its ``original_router``)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from http_routes(inner.routes)
        elif isinstance(route, APIRoute):
            yield route


@pytest.fixture
def app(make_settings):
    return create_app(make_settings(token=WRITE, read_token=READ))


def test_every_http_route_declares_its_answer(app):
    routes = list(http_routes(app.routes))
    assert {"/health", "/api/runs", "/api/alerts/{alert_id}/acknowledge", "/"} <= {
        route.path for route in routes}
    undeclared = [route.path for route in routes
                  if route.response_model is None and _default_class(route)]
    assert undeclared == []


def _default_class(route: APIRoute) -> bool:
    declared = getattr(route.response_class, "value", route.response_class)  # unwrap Default
    return declared is JSONResponse


def test_every_operation_declares_the_refusals_it_can_meet(app):
    document = app.openapi()
    missing = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            scope = {"type": "http", "method": method.upper(), "path": path}
            expected = {421}
            if checks_origin(scope):
                expected.add(403)
            if path not in OPEN_PATHS:
                expected.add(401)
                if required_access(scope) == Access.WRITE:
                    expected.add(403)
            if operation.get("parameters"):
                expected.add(422)
            if any(p["in"] == "path" for p in operation.get("parameters", [])):
                expected.add(404)
            declared = {int(status) for status in operation["responses"]}
            missing += [(method, path, status) for status in sorted(expected - declared)]
            for status, answer in operation["responses"].items():
                if status.startswith("4"):
                    assert answer["content"]["application/json"]["schema"], (path, status)
    assert missing == []
    assert document["components"]["schemas"]["Problem"]["required"] == ["detail"]


def test_refusals_follow_the_server_settings(make_settings):
    """Without a token no 401 is declared: the document says what this server sends."""
    document = create_app(make_settings()).openapi()
    runs = document["paths"]["/api/runs"]["get"]["responses"]
    assert "401" not in runs and "421" in runs


def test_a_nan_stored_value_comes_back_as_json_null(server):
    server.store.write(list(enumerate([
        RunStart(RUN, "nan", 1700000000.0, {"lr": math.inf}),
        Scalars(RUN, 0, 1700000000.0, {"loss": math.nan, "acc": 0.5}),
        LayerStats(RUN, 0, ("fc",), ("act_std",), np.array([[np.nan]], np.float32))])))
    with httpx.Client(base_url=server.url, timeout=10) as http:
        scalars = http.get(f"/api/runs/{RUN}/scalars")
        stats = http.get(f"/api/runs/{RUN}/layer-stats").json()
        run = http.get(f"/api/runs/{RUN}").json()
    assert "NaN" not in scalars.text and "Infinity" not in scalars.text
    assert dict(zip(scalars.json()["name"], scalars.json()["value"])) == {"acc": 0.5,
                                                                          "loss": None}
    assert stats["value"] == [None]
    assert run["config"] == {"lr": None}
