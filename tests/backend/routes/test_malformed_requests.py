"""Malformed requests against a real server holding a real run: every one is a 4xx.

The sweep reads the routes from the server's own ``/openapi.json``, so a route added later is
swept too: each parameter in turn gets each kind of junk, and every answer must be below 500.
"""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest

from sentrycam.protocol.fields import INT64_MAX
from tests.live_server import LAYER, RUN, project, snapshot, start_run

HUGE = "1" * 40

#: Junk for any parameter, by what it tries.
JUNK = {
    "huge-int": HUGE,
    "huge-negative": "-" + HUGE,
    "just-past-int64": str(INT64_MAX + 1),
    "float": "1.5",
    "nan": "NaN",
    "unicode": "\u202e\U0001f4a5\u0000\ufffd",
    "empty": "",
    "quote": "' OR 1=1 --",
    "long": "x" * 5000,
    "list": "1,,2,-3,99999999999999999999999",
}


@pytest.fixture
def filled(server, ingest):
    start_run(ingest, steps=3)
    snapshot(ingest, 2)
    project(server, 2)
    alert_id = server.store.upsert_alert(RUN, {"step": 2, "detector": "dead_units",
                                               "severity": 1, "message": "units stopped"})
    return server, alert_id


@pytest.fixture
def http(filled):
    server, _ = filled
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def _good_values(alert_id: int) -> dict[str, str]:
    """A valid value for each parameter name the routes use."""
    return {"run_id": RUN, "alert_id": str(alert_id), "layer": LAYER, "step": "2",
            "sample_ids": "1,2", "since_step": "0", "limit": "10", "names": "loss",
            "min_severity": "0", "format": "json"}


def _operations(http: httpx.Client) -> list[tuple[str, str, list[dict]]]:
    """(method, path template, parameters) of every operation the schema lists."""
    paths = http.get("/openapi.json").json()["paths"]
    return [(method.upper(), path, operation.get("parameters", []))
            for path, methods in paths.items() for method, operation in methods.items()]


def _request(http: httpx.Client, method: str, path: str, params: list[dict],
             values: dict[str, str]) -> httpx.Response:
    path_values = {p["name"]: values[p["name"]] for p in params if p["in"] == "path"}
    query = {p["name"]: values[p["name"]] for p in params
             if p["in"] == "query" and p["name"] in values}
    url = path.format(**{name: quote(value, safe="") for name, value in path_values.items()})
    return http.request(method, url, params=query)


@pytest.mark.parametrize("junk", JUNK.values(), ids=JUNK.keys())
def test_every_route_answers_junk_in_any_parameter_with_a_4xx(filled, http, junk):
    _, alert_id = filled
    good = _good_values(alert_id)
    failures = []
    for method, path, params in _operations(http):
        assert all(p["name"] in good or not p.get("required") for p in params), \
            f"add {path}'s parameters to the sweep"
        for param in params:
            answer = _request(http, method, path, params, {**good, param["name"]: junk})
            if answer.status_code >= 500:
                failures.append((method, path, param["name"], answer.status_code))
    assert failures == []


def test_every_route_answers_missing_parameters_with_a_4xx(filled, http):
    _, alert_id = filled
    good = _good_values(alert_id)
    for method, path, params in _operations(http):
        path_only = {p["name"]: good[p["name"]] for p in params if p["in"] == "path"}
        answer = _request(http, method, path, params, path_only)
        assert answer.status_code < 500, (method, path, answer.status_code)


def test_a_sample_id_beyond_int64_is_a_422_naming_the_bound(http):
    answer = http.get(f"/api/runs/{RUN}/trails", params={"layer": LAYER, "sample_ids": HUGE})
    assert answer.status_code == 422
    [problem] = answer.json()["detail"]  # FastAPI's shape, as the schema declares
    assert problem["loc"] == ["query", "sample_ids"]
    assert "sample_ids must fit int64" in problem["msg"] and HUGE in problem["msg"]


@pytest.mark.parametrize("route, params", [
    (f"/api/runs/{RUN}/embedding", {"layer": LAYER, "step": HUGE}),
    (f"/api/runs/{RUN}/scalars", {"since_step": HUGE}),
    (f"/api/runs/{RUN}/layer-stats", {"since_step": HUGE}),
])
def test_a_step_beyond_int64_is_a_422_naming_the_parameter(http, route, params):
    answer = http.get(route, params=params)
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"][-1] in params


@pytest.mark.parametrize("run_id", ["\U0001f4a5", "a" * 65, "a b", "run;drop"])
def test_a_malformed_run_id_is_a_422_saying_what_one_may_be(http, run_id):
    answer = http.get(f"/api/runs/{quote(run_id, safe='')}/scalars")
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["path", "run_id"]
    assert "A-Za-z0-9_-" in answer.text


def test_a_huge_alert_id_is_a_422(http):
    answer = http.post(f"/api/alerts/{HUGE}/acknowledge")
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"][-1] == "alert_id"


def test_the_schema_shows_the_int64_bounds(http):
    paths = http.get("/openapi.json").json()["paths"]
    step = next(p for p in paths["/api/runs/{run_id}/embedding"]["get"]["parameters"]
                if p["name"] == "step")
    assert step["schema"]["minimum"] == 0 and step["schema"]["maximum"] == INT64_MAX
    alert = paths["/api/alerts/{alert_id}/acknowledge"]["post"]["parameters"][0]
    assert alert["schema"]["maximum"] == INT64_MAX
