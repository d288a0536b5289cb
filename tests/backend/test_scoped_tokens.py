"""Scoped tokens (write: trainers and admins; read: viewers) and token hygiene: tokens from the
environment or files, never in a log line, a page or a URL the server builds; spool and info
files readable by their owner only. Against a real in-process server."""

from __future__ import annotations

import logging
import re
import stat
import time
import urllib.error
import urllib.request

import httpx
import pytest
from websockets.sync.client import connect

from sentrycam.backend import cli
from sentrycam.backend.server import write_info_file
from sentrycam.backend.settings import ServerSettings
from sentrycam.backend.testing import serve_in_thread
from sentrycam.capture.spool import Spool
from sentrycam.frontend.client import ApiClient
from sentrycam.protocol import wire
from sentrycam.protocol.messages import RunStart
from tests.backend.test_trust_boundary import CLIENT_LOG, handshake
from tests.live_server import RUN, Ingest, start_run

WRITE = "w-s3cret-write-token"
READ = "r-s3cret-read-token"


@pytest.fixture
def scoped(make_settings, store):
    """A server with both tokens, holding a run with one alert."""
    with serve_in_thread(make_settings(token=WRITE, read_token=READ), store) as running:
        ingest = Ingest(running, token=WRITE)
        start_run(ingest, steps=2)
        ingest.close()
        yield running


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_read_token_reads_and_the_write_token_does_everything(scoped):
    alert_id = scoped.store.upsert_alert(RUN, {"step": 1, "detector": "dead_units",
                                               "severity": 1, "message": "units stopped"})
    acknowledge = f"/api/alerts/{alert_id}/acknowledge"
    with httpx.Client(base_url=scoped.url, timeout=30) as http:
        for token in (READ, WRITE):
            assert [r["run_id"] for r in http.get("/api/runs", headers=_bearer(token)).json()
                    ] == [RUN]
            assert "<title>sentrycam</title>" in http.get("/", params={"token": token}).text
            assert handshake(scoped.port, f"/ws/runs/{RUN}", headers=_bearer(token))[0] == 101
        refused = http.post(acknowledge, headers=_bearer(READ))
        assert refused.status_code == 403 and "write token" in refused.json()["detail"]
        assert http.get(f"/api/runs/{RUN}/alerts", headers=_bearer(READ)).json()[0][
            "acknowledged"] is False
        assert http.post(acknowledge, headers=_bearer(WRITE)).status_code == 200
        assert http.get("/api/runs", headers=_bearer("guess")).status_code == 401
    status, body = handshake(scoped.port, "/ws/ingest", headers=_bearer(READ))
    assert status == 403 and b"write token" in body
    with connect(scoped.ws_url, additional_headers=_bearer(WRITE)) as ws:
        ws.send(wire.encode(RunStart("second", "written", 1.0), 0, 1.0))
        assert '"type": "ack"' in ws.recv(timeout=10)


def test_tokens_come_from_the_environment_or_token_files(tmp_path, monkeypatch):
    db = tmp_path / "x.duckdb"
    (tmp_path / "write").write_text(f"{WRITE}\nanything after the first line\n")
    (tmp_path / "read").write_text(f"  {READ}  \n")
    from_files = ServerSettings(db_path=db, token_file=tmp_path / "write",
                                read_token_file=tmp_path / "read")
    assert (from_files.token, from_files.read_token) == (WRITE, READ)
    monkeypatch.setenv("SENTRYCAM_TOKEN", WRITE)
    monkeypatch.setenv("SENTRYCAM_READ_TOKEN", READ)
    from_env = ServerSettings(db_path=db)
    assert (from_env.token, from_env.read_token) == (WRITE, READ)
    assert WRITE not in repr(from_env) and READ not in repr(from_env)
    with pytest.raises(ValueError, match="not both"):
        ServerSettings(db_path=db, token_file=tmp_path / "write")
    monkeypatch.delenv("SENTRYCAM_TOKEN")
    with pytest.raises(ValueError, match="needs a write token"):
        ServerSettings(db_path=db)
    with pytest.raises(ValueError, match="must differ"):
        ServerSettings(db_path=db, token=READ)
    monkeypatch.delenv("SENTRYCAM_READ_TOKEN")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        ServerSettings(db_path=db, token_file=tmp_path / "empty")
    with pytest.raises(ValueError, match="cannot read"):
        ServerSettings(db_path=db, token_file=tmp_path / "missing")


def test_serve_takes_token_files_and_warns_about_a_token_on_the_command_line(
        tmp_path, monkeypatch, caplog):
    served = []
    monkeypatch.setattr("sentrycam.backend.server.run_server", served.append)
    (tmp_path / "write").write_text(WRITE)
    (tmp_path / "read").write_text(READ)
    db = str(tmp_path / "x.duckdb")
    assert cli.main(["serve", "--db", db, "--token-file", str(tmp_path / "write"),
                     "--read-token-file", str(tmp_path / "read"), "--allowed-host", "a.example",
                     "--allowed-host", "b.example",
                     "--allowed-origin", "https://a.example"]) == 0
    assert (served[0].token, served[0].read_token) == (WRITE, READ)
    assert served[0].allowed_hosts == ("a.example", "b.example")
    assert served[0].allowed_origins == ("https://a.example",)
    assert not [r for r in caplog.records if "`ps`" in r.getMessage()]
    assert cli.main(["serve", "--db", db, "--token", WRITE]) == 0
    assert served[1].token == WRITE
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("`ps`" in w and "--token-file" in w for w in warnings)
    assert all(WRITE not in r.getMessage() for r in caplog.records)


def _session_tokens(page: str) -> list[dict]:
    """The payloads of the Bokeh session tokens (base64 JSON, signed) embedded in a page."""
    from bokeh.util.token import get_token_payload

    return [get_token_payload(token) for token in set(re.findall(r"eyJ[\w\-.]+", page))]


def _fetch(url: str, method: str = "GET") -> tuple[int, str]:
    """(status, body) of a request made with urllib, which logs nothing (httpx logs each URL
    it requests: the test's own ?token= would show among the server's lines)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method),
                                    timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()


def test_no_token_in_any_log_line_page_or_url_of_a_session(scoped, caplog):
    caplog.set_level(logging.DEBUG)
    status, page = _fetch(f"{scoped.url}/?token={WRITE}&run={RUN}")
    assert status == 200
    read_page = _fetch(f"{scoped.url}/?token={READ}")[1]
    assert _fetch(f"{scoped.url}/api/runs?token={READ}")[0] == 200
    assert _fetch(f"{scoped.url}/api/alerts/1/acknowledge?token={READ}", "POST")[0] == 403
    assert _fetch(f"{scoped.url}/api/runs?token={WRITE}x")[0] == 401
    assert handshake(scoped.port, f"/ws/runs/{RUN}?token={READ}")[0] == 101
    assert handshake(scoped.port, f"/ws/ingest?token={READ}")[0] == 403
    assert handshake(scoped.port, f"/ws/ingest?token={WRITE}")[0] == 101
    time.sleep(1.0)  # the two dashboard sessions list runs and subscribe meanwhile
    payloads = _session_tokens(page) + _session_tokens(read_page)
    assert payloads, "the page embeds no Bokeh session token: the check below saw nothing"
    for text in (page, read_page, repr(payloads)):
        assert WRITE not in text and READ not in text
    client = ApiClient(scoped.url, token=READ)
    assert READ not in client.push_url(RUN)
    client.close()
    # uvicorn's access log (off by default) writes each request's URL on this logger:
    logging.getLogger("uvicorn.access").info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET",
                                             f"/api/runs?token={READ}&x=1", "1.1", 200)
    lines = [record.getMessage() for record in caplog.records if record.name != CLIENT_LOG.name]
    assert any("WebSocket /ws/runs" in line for line in lines), "uvicorn logged no handshake"
    assert any("/api/runs?token=[redacted]&x=1" in line for line in lines)
    leaked = [line for line in lines if WRITE in line or READ in line]
    assert leaked == []


def test_spool_and_info_files_are_readable_by_their_owner_only(tmp_path):
    spool = Spool(tmp_path / "runs" / "spool" / RUN)
    spool.open()
    spool.append(1, b"frame")
    spool.sync()
    for path in (tmp_path / "runs" / "spool", spool.directory):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    for path in spool.directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    spool.close()
    info = tmp_path / "db.server.json"
    write_info_file(info, {"pid": 1, "url": "http://127.0.0.1:1"})
    assert stat.S_IMODE(info.stat().st_mode) == 0o600
