"""What a web page can make a browser do to a server: Host and Origin checks on every route,
and a dashboard that calls the server's own address, never the host a request named. Against
a real in-process server over real HTTP and websockets."""

from __future__ import annotations

import logging
import socket
import threading
import time

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from sentrycam.backend.settings import ServerSettings
from sentrycam.backend.testing import serve_in_thread
from sentrycam.protocol import wire
from sentrycam.protocol.messages import RunStart
from tests.live_server import RUN, start_run

EVIL_HOST = "rebind.attacker.example"
EVIL_ORIGIN = "http://attacker.example"
TOKEN = "w-s3cret-token"
WEBSOCKETS = ("/ws/ingest", f"/ws/runs/{RUN}", "/ws")


#: The logger of the tests' own websocket clients (it logs the URLs they open).
CLIENT_LOG = logging.getLogger("tests.client")


def handshake(port: int, path: str, *, host: str | None = None, origin: str | None = None,
              headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """Open a websocket to ``path`` on 127.0.0.1:``port`` sending ``Host: host`` (default: the
    server's own) and ``Origin: origin``; (101, b"") when accepted, else (status, body)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    uri = f"ws://{host or f'127.0.0.1:{port}'}{path}"
    try:
        with connect(uri, sock=sock, origin=origin, additional_headers=headers or {},
                     open_timeout=10, logger=CLIENT_LOG):
            return 101, b""
    except InvalidStatus as refused:
        return refused.response.status_code, refused.response.body or b""


def test_a_request_naming_a_foreign_host_is_refused_on_every_route(server, ingest):
    start_run(ingest, steps=1)
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for path in ("/api/runs", f"/api/runs/{RUN}/scalars", "/", "/health", "/openapi.json"):
            refused = http.get(path, headers={"Host": f"{EVIL_HOST}:{server.port}"})
            assert refused.status_code == 421, path
            assert "--allowed-host" in refused.json()["detail"]
        for name in ("localhost", "127.0.0.1", "[::1]"):  # the loopback names are served
            runs = http.get("/api/runs", headers={"Host": f"{name}:{server.port}"})
            assert [r["run_id"] for r in runs.json()] == [RUN], name
    for path in WEBSOCKETS:
        status, body = handshake(server.port, path, host=f"{EVIL_HOST}:{server.port}")
        assert status == 421 and b"does not answer to the host name" in body, path


def test_a_foreign_page_may_not_open_websockets_or_change_state(server, ingest):
    start_run(ingest, steps=1)
    alert_id = server.store.upsert_alert(RUN, {"step": 0, "detector": "dead_units",
                                               "severity": 1, "message": "units stopped"})
    for origin in (EVIL_ORIGIN, "null", f"http://127.0.0.1:{server.port + 1}",
                   f"https://127.0.0.1:{server.port}"):
        for path in WEBSOCKETS:
            status, body = handshake(server.port, path, origin=origin)
            assert status == 403 and b"may not open a websocket" in body, (origin, path)
    with httpx.Client(base_url=server.url, timeout=10) as http:
        refused = http.post(f"/api/alerts/{alert_id}/acknowledge",
                            headers={"Origin": EVIL_ORIGIN})
        assert refused.status_code == 403 and "--allowed-origin" in refused.json()["detail"]
        assert http.get(f"/api/runs/{RUN}/alerts").json()[0]["acknowledged"] is False
        own = http.post(f"/api/alerts/{alert_id}/acknowledge",
                        headers={"Origin": f"http://localhost:{server.port}"})
        assert own.status_code == 200
        assert http.get(f"/api/runs/{RUN}/alerts").json()[0]["acknowledged"] is True


def test_the_servers_own_pages_and_clients_without_an_origin_pass(server):
    origins = (None, f"http://127.0.0.1:{server.port}", f"http://localhost:{server.port}")
    for number, origin in enumerate(origins):
        frame = wire.encode(RunStart(f"own-origin-{number}", "a page of the server", 1.0), 0, 1.0)
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        with connect(f"ws://127.0.0.1:{server.port}/ws/ingest", sock=sock, origin=origin) as ws:
            ws.send(frame)
            assert '"type": "ack"' in ws.recv(timeout=10)
        assert handshake(server.port, f"/ws/runs/{RUN}", origin=origin)[0] == 101


def test_allowed_hosts_and_origins_admit_a_reverse_proxy(make_settings, store):
    settings = make_settings(allowed_hosts=["team.example.com"],
                             allowed_origins=["https://team.example.com"])
    with serve_in_thread(settings, store) as running:
        with httpx.Client(base_url=running.url, timeout=10) as http:
            assert http.get("/api/runs", headers={"Host": "team.example.com"}).status_code == 200
            assert http.get("/api/runs", headers={"Host": EVIL_HOST}).status_code == 421
        proxied = handshake(running.port, f"/ws/runs/{RUN}", host="team.example.com",
                            origin="https://team.example.com")
        assert proxied[0] == 101
        assert handshake(running.port, f"/ws/runs/{RUN}", host="team.example.com",
                         origin="http://team.example.com")[0] == 403  # not the allowed scheme


def test_served_host_names_come_from_the_bind_address_and_the_allowed_list(tmp_path,
                                                                           monkeypatch):
    db = tmp_path / "x.duckdb"
    assert ServerSettings(db_path=db).served_hosts == {"127.0.0.1", "localhost", "::1"}
    wildcard = ServerSettings(db_path=db, host="0.0.0.0", token="t")
    assert "0.0.0.0" not in wildcard.served_hosts  # a wildcard bind names no host
    assert "10.1.2.3" in ServerSettings(db_path=db, host="10.1.2.3", token="t").served_hosts
    monkeypatch.setenv("SENTRYCAM_ALLOWED_HOSTS", "Team.Example.com, [fd00::5]")
    monkeypatch.setenv("SENTRYCAM_ALLOWED_ORIGINS", "https://team.example.com")
    from_env = ServerSettings(db_path=db)
    assert {"team.example.com", "fd00::5"} <= from_env.served_hosts
    assert from_env.extra_origins == {("https", "team.example.com", 443)}
    for bad in ({"allowed_hosts": ["https://team.example.com"]},
                {"allowed_origins": ["team.example.com"]},
                {"allowed_origins": ["https://team.example.com/path"]}):
        with pytest.raises(ValueError, match="allowed"):
            ServerSettings(db_path=db, **bad)


class Listener:
    """A TCP listener on a free loopback port that records every connection made to it."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1.0)
                try:
                    self.received.append(conn.recv(4096))
                except OSError:
                    self.received.append(b"")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.mark.parametrize("token", [None, TOKEN])
def test_the_dashboard_calls_its_own_server_whatever_host_the_page_request_named(
        make_settings, store, monkeypatch, token):
    """A page load with ``Host: 127.0.0.1:<another port>`` (an allowed name) makes the
    session read the run list from this server; nothing reaches the other port."""
    listener = Listener()
    with serve_in_thread(make_settings(token=token), store) as running:
        listed = threading.Event()
        real = running.store.run_summaries
        monkeypatch.setattr(running.store, "run_summaries",
                            lambda *a, **k: (listed.set(), real(*a, **k))[1])
        query = {"token": token} if token else {}
        page = httpx.get(f"{running.url}/", params=query, timeout=30,
                         headers={"Host": f"127.0.0.1:{listener.port}"})
        assert page.status_code == 200 and "<title>sentrycam</title>" in page.text
        assert listed.wait(20), "the dashboard session never asked this server for its runs"
        time.sleep(0.5)  # a call to the other port would have been made with the first one
    listener.close()
    assert listener.received == []
