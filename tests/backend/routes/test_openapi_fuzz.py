"""schemathesis, with all its checks, against a live server's own ``/openapi.json``.

The server is real (uvicorn on loopback, Host/Origin checks and both token scopes on) over a
real DuckDB file holding a real run, streamed through its ingest websocket: scalars (one of
them NaN, one infinite), layer statistics, a snapshot, its 2D map and quality, an event and
an alert. schemathesis generates valid and invalid requests for every operation the schema
lists, the state-changing acknowledge included (it sends the write token), and checks each
answer against the schema: status codes, content types, headers, bodies, no 5xx, invalid
data refused, valid data accepted. Any finding fails the test with schemathesis' report.

The websocket routes (``/ws/ingest``, ``/ws/runs/{run_id}``) are not in an OpenAPI document
(it describes HTTP operations only); their malformed input is tested where they live.
"""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
import time

import pytest

from sentrycam.backend.testing import serve_in_thread
from sentrycam.protocol.messages import Event, Scalars
from tests.live_server import RUN, Ingest, project, snapshot, start_run

pytestmark = pytest.mark.slow

WRITE_TOKEN = "fuzz-write-token"
READ_TOKEN = "fuzz-read-token"
#: Test cases per operation and phase (about 800 requests in all, ~1 min on two busy cores);
#: deterministic generation makes a finding reproduce.
MAX_EXAMPLES = 25
FUZZ_TIMEOUT_S = 540


@pytest.fixture
def live(make_settings):
    """A token-guarded server whose store holds one run with every kind of stored data."""
    settings = make_settings(token=WRITE_TOKEN, read_token=READ_TOKEN)
    with serve_in_thread(settings) as server:
        ingest = Ingest(server, token=WRITE_TOKEN)
        start_run(ingest, steps=3)
        snapshot(ingest, 2)
        ingest.send(Scalars(RUN, 3, time.time(), {"loss": math.nan, "grad_norm": math.inf}),
                    Event(RUN, 3, time.time(), "note", "spike", {"ratio": math.nan}))
        ingest.close()
        project(server, 2)
        server.store.upsert_alert(RUN, {"step": 2, "detector": "dead_units", "severity": 1,
                                        "message": "units stopped"})
        yield server


def test_schemathesis_finds_nothing(live, tmp_path):
    if importlib.util.find_spec("schemathesis") is None:
        message = "schemathesis is not installed (it comes with the test extra)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run the API fuzz test")
        pytest.skip(message)
    command = [sys.executable, "-c", "from schemathesis.cli import schemathesis; schemathesis()",
               "run", f"{live.url}/openapi.json", "--checks", "all",
               "--header", f"Authorization: Bearer {WRITE_TOKEN}",
               "--generation-deterministic", "--max-examples", str(MAX_EXAMPLES),
               "--workers", "1", "--no-color"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=FUZZ_TIMEOUT_S,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-12000:] + done.stderr[-4000:]
