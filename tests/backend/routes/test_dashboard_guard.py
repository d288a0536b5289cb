"""The dashboard's Panel/Bokeh routes against a real server: ``/components/...`` imports
nothing a request names, and the page's Bokeh websocket refuses a bad session with a 4xx."""

from __future__ import annotations

import logging
import re
import sys

import httpx
import pytest
from bokeh.util.token import generate_jwt_token, generate_session_id
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect

from sentrycam.backend.routes.dashboard_guard import (MAX_LOADING_SESSIONS, POLICY_VIOLATION,
                                                      readable_cookies, token_problem)

PROBE_MODULE = "sentrycam_import_probe"


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


@pytest.fixture
def probe_module(tmp_path, monkeypatch):
    """A module on sys.path that leaves a marker file when it is imported; its name."""
    marker = tmp_path / "imported"
    (tmp_path / f"{PROBE_MODULE}.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('imported')\n"
        "class Widget:\n    __css__ = ['probe.css']\n")
    (tmp_path / "probe.css").write_text("body {}")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield marker
    sys.modules.pop(PROBE_MODULE, None)


def _server_errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_module_path_is_a_404_and_the_module_is_never_imported(http, probe_module, caplog):
    answer = http.get(f"/components/{PROBE_MODULE}/Widget/__css__/probe.css")
    assert answer.status_code == 404 and PROBE_MODULE in answer.json()["detail"]
    assert not probe_module.exists() and PROBE_MODULE not in sys.modules
    assert _server_errors(caplog) == []


@pytest.mark.parametrize("path", [
    "x", "panel", "panel/Nope", "panel/Nope/__css__/a.css", "panel.io.server/HTTPError/x/y",
    "panel.template.vanilla/VanillaTemplate/__file__/x", "panel/../../etc/passwd/a/b",
    "bokeh.nonexistent/A/__css__/a.css", "%00/a/b/c", "panel.template.vanilla/%F0%9F%92%A5/_css/x",
    # attributes that exist but are no list of files
    "bokeh/models/css/x", "bokeh.models.css/InlineStyleSheet/css/x",
    "bokeh.models.tools/WheelPanTool/modifiers/x", "panel.reactive/ReactiveCustomBase/__css__/x",
])
def test_malformed_component_paths_are_4xx(http, path, caplog):
    answer = http.get(f"/components/{path}")
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:200])
    assert "Traceback" not in answer.text and _server_errors(caplog) == []


def test_a_listed_resource_of_an_imported_panel_component_is_served(http):
    answer = http.get("/components/panel.template.vanilla/VanillaTemplate/_css/vanilla.css")
    assert answer.status_code == 200 and "{" in answer.text


# ---- the page's Bokeh websocket -----------------------------------------------------------------

def _ws_url(server) -> str:
    return f"ws://127.0.0.1:{server.port}/ws"


def _page_session_token(http: httpx.Client) -> str:
    """The Bokeh session token of a freshly served dashboard page."""
    return re.search(r'"token":\s*"([^"]+)"', http.get("/").text).group(1)


def _forged_token(secret_key: bytes, expiration: int = 300) -> str:
    session_id = generate_session_id(secret_key=secret_key, signed=True)
    return generate_jwt_token(session_id, secret_key=secret_key, signed=True,
                              expiration=expiration)


@pytest.mark.parametrize("subprotocols, says", [
    (None, "needs the subprotocols"),
    (["chat"], "needs the subprotocols"),
    (["bokeh", "garbage"], "not issued by this server"),
    (["bokeh", "e30.e30"], "malformed"),
    (["bokeh", _forged_token(b"k" * 32)], "not issued by this server"),
])
def test_a_bad_bokeh_session_is_closed_with_the_reason(server, subprotocols, says, caplog):
    with connect(_ws_url(server), subprotocols=subprotocols, open_timeout=10) as socket:
        with pytest.raises(ConnectionClosedError) as closed:
            socket.recv(timeout=10)
    assert closed.value.rcvd.code == POLICY_VIOLATION and says in closed.value.rcvd.reason
    assert _server_errors(caplog) == []


def test_the_page_session_token_opens_the_bokeh_websocket(server, http):
    token = _page_session_token(http)
    with connect(_ws_url(server), subprotocols=["bokeh", token], open_timeout=20) as socket:
        header = socket.recv(timeout=20)
    assert '"msgtype":"ACK"' in header.replace(" ", "")


def test_token_problem_refuses_expired_and_accepts_fresh_tokens():
    secret = b"s" * 32
    assert token_problem(["bokeh", _forged_token(secret)], secret) is None
    expired = _forged_token(secret, expiration=-10)
    assert token_problem(["bokeh", expired], secret) == (
        403, "the session token has expired; reload the page")


@pytest.mark.parametrize("session_id", ["garbage", "a.b", "\U0001f4a5.x", ""])
def test_a_page_request_naming_a_foreign_session_is_a_403(http, session_id, caplog):
    answer = http.get("/", params={"bokeh_session_id": session_id})
    assert answer.status_code == 403 and "bokeh_session_id" in answer.json()["detail"]
    assert _server_errors(caplog) == []


def test_a_garbage_message_in_a_bokeh_session_closes_it_with_a_reason(server, http, caplog):
    token = _page_session_token(http)
    with connect(_ws_url(server), subprotocols=["bokeh", token], open_timeout=20) as socket:
        socket.recv(timeout=20)  # ACK
        socket.send(b"\x00\xff not a bokeh message")
        with pytest.raises(ConnectionClosedError) as closed:
            while True:
                socket.recv(timeout=20)
    assert closed.value.rcvd.code == 1002 and "binary fragment" in closed.value.rcvd.reason
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []


@pytest.mark.parametrize("cookie", ['a="\\\\; b=\x7f; c', "=x", "path=/; ok=1", "a=b=c; ;;"])
def test_the_page_is_served_whatever_cookies_the_browser_carries(http, cookie, caplog):
    answer = http.get("/", headers={"cookie": cookie})
    assert answer.status_code == 200 and "<title>sentrycam</title>" in answer.text
    assert _server_errors(caplog) == []


def test_readable_cookies_keeps_the_cookies_python_can_hold():
    assert readable_cookies('ok=1; =x; path=/; bad key=2; q="a b"') == "ok=1; q=a b"


def test_page_loads_whose_browser_never_connects_are_bounded(http):
    """Each page load makes a session that reads the API and subscribes at once; loads that
    never connect (scripts, scanners) stop at MAX_LOADING_SESSIONS with a 429 saying why,
    and the server keeps answering."""
    answers = [http.get("/").status_code for _ in range(MAX_LOADING_SESSIONS + 2)]
    assert answers == [200] * MAX_LOADING_SESSIONS + [429, 429]
    refused = http.get("/")
    assert refused.status_code == 429 and "still loading" in refused.json()["detail"]
    assert http.get("/api/runs").status_code == 200
