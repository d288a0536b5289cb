"""WebSocketTransport's protocol logic against a small real websocket server defined here.

``AckingServer`` behaves like the sentrycam ingest endpoint as far as the transport can tell:
it commits a run's binary frames only in order (seq 0, 1, 2, ... per run), skips a seq <= the
last one committed (a duplicate), answers a frame out of order with an error naming the seq it
needs (``expected_seq``), and acks only what it committed, with the protocol's own replies
(``ack_reply``, ``error_reply`` of :mod:`sentrycam.protocol.wire`). Switches let it hold acks
back, lose acks and drop the connection, reject a frame, or demand a token. Tests against the
real server are in test_sender_real_server.py and tests/backend/test_sequence_integrity.py.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import serve

from sentrycam.protocol import wire
from sentrycam.capture.sequence import LOST_EVENT
from sentrycam.protocol.messages import Event, RunStart, Scalars, Snapshot
from sentrycam.protocol.wire import ack_reply, error_reply
from sentrycam.capture.sender import WebSocketTransport, ingest_url, replay_spool
from sentrycam.capture.spool import Spool
from sentrycam.capture.transport import Transport
from tests.server_process import free_port

RUN = "0123456789abcdef0123456789abcdef"


def _scalars(step: int, run_id: str = RUN) -> Scalars:
    return Scalars(run_id, step, 1000.0 + step, {"loss": 1.0 / (step + 1), "lr": 0.1})


def _wait_for(condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class AckingServer:
    """A websocket ingest stand-in on 127.0.0.1; see the module docstring."""

    def __init__(self, port: int, *, token: str | None = None, max_size: int | None = None) -> None:
        self.port = port
        self.token = token
        self.hold_acks = threading.Event()  # set: commit but do not acknowledge yet
        self.close_after: int | None = None  # close the connection after this many frames
        self.lose_acks_from: int | None = None  # and never ack from this many frames until then
        self.reject: set[int] = set()  # seqs whose frames are refused, unless a lost event
        self.silent_runs: set[str] = set()  # runs whose frames are committed but never acked
        self.last_committed: dict[str, int] = {}
        self.connections: list[list[int]] = []  # seqs received, per connection
        self.stored: list[tuple[int, bytes]] = []
        self._lock = threading.Lock()
        self._server = serve(self._handler, "127.0.0.1", port, max_size=max_size,
                             process_request=self._check_token)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stored_seqs(self, run_id: str | None = None) -> list[int]:
        """The seqs committed, in order (of one run, or of all)."""
        with self._lock:
            return [seq for seq, frame in self.stored
                    if run_id is None or wire.split_frame(frame)[0]["run_id"] == run_id]

    def received(self) -> int:
        with self._lock:
            return sum(len(c) for c in self.connections)

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(10)

    def _check_token(self, connection, request):
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            return connection.respond(401, "missing or wrong token\n")
        return None

    def _commit(self, frame: bytes) -> tuple[str, dict | None]:
        """Commit ``frame`` if it is its run's next; returns its run and the error owed, if any."""
        header, _ = wire.split_frame(frame)
        run_id, seq = header["run_id"], header["seq"]
        with self._lock:
            self.connections[-1].append(seq)
            last = self.last_committed.get(run_id, -1)
            if seq in self.reject and header["kind"] != str(Event.kind):
                return run_id, error_reply("rejected", seq=seq, run_id=run_id)
            if seq > last + 1:
                return run_id, error_reply("out of order", seq=seq, run_id=run_id,
                                           expected_seq=last + 1)
            if seq == last + 1:
                self.stored.append((seq, frame))
                self.last_committed[run_id] = seq
            return run_id, None

    def _losing_acks(self) -> bool:
        return (self.close_after is not None and self.lose_acks_from is not None
                and self.received() >= self.lose_acks_from)

    def _handler(self, ws) -> None:
        with self._lock:
            self.connections.append([])
        unacked = None
        try:
            while True:
                try:
                    frame = ws.recv(timeout=0.01)
                except TimeoutError:
                    frame = None
                if frame is not None:
                    run_id, error = self._commit(frame)
                    if error is not None:
                        ws.send(json.dumps(error))
                    elif not self._losing_acks():
                        unacked = unacked or {}
                        unacked[run_id] = self.last_committed[run_id]
                    if self.close_after is not None and self.received() >= self.close_after:
                        self.close_after = None
                        ws.socket.shutdown(socket.SHUT_RDWR)  # like a crash: no close handshake
                        return  # frames committed but unacked
                if unacked is not None and not self.hold_acks.is_set():
                    for run_id, seq in unacked.items():
                        if run_id not in self.silent_runs:
                            ws.send(json.dumps(ack_reply(run_id, seq)))
                    unacked = None
        except ConnectionClosed:
            return


@pytest.fixture
def server():
    started = []

    def start(port: int | None = None, **kw) -> AckingServer:
        srv = AckingServer(port or free_port(), **kw)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture
def transports():
    made = []

    def make(url: str, spool_dir, **kw) -> WebSocketTransport:
        transport = WebSocketTransport(url, RUN, spool_dir, **kw)
        made.append(transport)
        return transport

    yield make
    for transport in made:
        transport.close(timeout=5)


def test_ingest_url_from_base_urls_and_bad_urls_get_a_clear_error():
    assert ingest_url("http://127.0.0.1:8765") == "ws://127.0.0.1:8765/ws/ingest"
    assert ingest_url("https://host/sentrycam/") == "wss://host/sentrycam/ws/ingest"
    assert ingest_url("ws://h:1/ws/ingest") == "ws://h:1/ws/ingest"
    with pytest.raises(ValueError, match="http://host:port"):
        ingest_url("127.0.0.1:8765")


def test_bad_run_id_is_refused_at_construction(tmp_path):
    with pytest.raises(ValueError, match="run_id"):
        WebSocketTransport("http://127.0.0.1:1", "../escape", tmp_path)


def test_messages_arrive_once_in_order_and_the_spool_folder_is_cleaned_up(server, tmp_path):
    srv = server()
    transport = WebSocketTransport(srv.url, RUN, tmp_path / "spool")
    assert isinstance(transport, Transport)
    assert "sentrycam-sender" in [t.name for t in threading.enumerate()]
    rng = np.random.default_rng(0)
    features = rng.standard_normal((50, 16)).astype(np.float16)
    snap = Snapshot(RUN, 3, 0, np.arange(50, dtype=np.int64), {"pred": np.zeros(50, np.int64)},
                    {"fc:input": features})
    sent = [RunStart(RUN, "demo", 1.0)] + [_scalars(i) for i in range(200)] + [snap]
    assert all(transport.send(m) for m in sent)
    assert transport.flush(timeout=20)
    # encoding and sending 202 messages took the sender thread's CPU time, and it is counted
    cpu = transport.counters().sender_cpu_seconds
    assert 0 < cpu < 60
    transport.close()
    assert transport.counters().sender_cpu_seconds >= cpu  # its last reading outlives it
    assert srv.stored_seqs() == list(range(len(sent)))
    assert [wire.decode(frame)[1] for _, frame in srv.stored[:-1]] == sent[:-1]
    got_snap = wire.decode(srv.stored[-1][1])[1]
    assert np.array_equal(got_snap.features["fc:input"], features)
    counters = transport.counters()
    assert (counters.sent, counters.acked, counters.spooled, counters.dropped) == (202, 202, 0, 0)
    assert not (tmp_path / "spool" / RUN).exists()
    assert "sentrycam-sender" not in [t.name for t in threading.enumerate()]


def test_no_more_than_the_window_is_unacknowledged(server, transports, tmp_path):
    srv = server()
    srv.hold_acks.set()
    transport = transports(srv.url, tmp_path, window_frames=8)
    for i in range(40):
        transport.send(_scalars(i))
    assert _wait_for(lambda: srv.received() == 8)
    assert not transport.flush(timeout=0.3)  # nothing is acknowledged yet
    assert srv.received() == 8 and transport.counters().queue_depth == 32
    srv.hold_acks.clear()
    assert transport.flush(timeout=20)
    assert srv.stored_seqs() == list(range(40))
    assert transport.counters().acked == 40


def test_lost_acks_and_a_dropped_connection_store_everything_exactly_once(server, transports,
                                                                          tmp_path):
    srv = server()
    srv.lose_acks_from, srv.close_after = 20, 30  # frames 20..30 are committed but never acked
    transport = transports(srv.url, tmp_path)
    for i in range(100):
        transport.send(_scalars(i))
    assert transport.flush(timeout=30)
    assert _wait_for(lambda: transport.counters().acked == 100)
    assert srv.stored_seqs() == list(range(100))
    first, *later = srv.connections
    assert len(later) >= 1
    resent = [seq for conn in later for seq in conn if seq in first]
    assert resent and resent == sorted(resent)  # the unacked frames came again, in order
    assert transport.counters().spooled >= 11


def test_server_down_at_start_spools_then_replays_in_order_when_it_comes_up(server, transports,
                                                                          tmp_path):
    port = free_port()
    transport = transports(f"http://127.0.0.1:{port}", tmp_path)
    for i in range(50):
        assert transport.send(_scalars(i))
    assert transport.flush(timeout=20)  # spooled and fsync'd counts as flushed
    assert transport.counters().spooled == 50
    assert [seq for seq, _ in Spool(tmp_path / RUN).records()] == list(range(1, 51))
    srv = server(port)
    for i in range(50, 80):
        transport.send(_scalars(i))
    assert _wait_for(lambda: transport.counters().acked == 80)
    assert srv.stored_seqs() == list(range(80))
    received = [seq for conn in srv.connections for seq in conn]
    assert received == list(range(80))  # the backlog went first, nothing overtook it
    assert _wait_for(lambda: not Spool(tmp_path / RUN).segments())  # acked segments deleted


def test_flush_delivers_to_a_server_that_came_back_rather_than_settling_for_the_spool(
        server, transports, tmp_path):
    port = free_port()
    transport = transports(f"http://127.0.0.1:{port}", tmp_path)
    for i in range(30):
        transport.send(_scalars(i))
    assert transport.flush(timeout=20)  # nobody there: spooled
    assert transport.counters().spooled == 30 and transport.counters().acked == 0
    srv = server(port)
    assert transport.flush(timeout=20)  # the server is tried at once, not after the backoff
    assert srv.stored_seqs() == list(range(30))
    assert transport.counters().acked == 30


def test_close_with_the_server_unreachable_returns_and_leaves_everything_in_the_spool(transports,
                                                                                     tmp_path):
    transport = transports(f"http://127.0.0.1:{free_port()}", tmp_path)
    sent = [_scalars(i) for i in range(300)]
    for message in sent:
        transport.send(message)
    transport.close(timeout=5)
    assert "sentrycam-sender" not in [t.name for t in threading.enumerate()]
    records = list(Spool(tmp_path / RUN).records())
    assert [wire.decode(frame)[1] for _, frame in records] == sent
    assert transport.send(_scalars(999)) is False  # closed
    assert transport.counters().dropped == 1
    transport.close()  # idempotent


def test_a_rejected_frame_is_counted_and_does_not_hold_up_the_rest(server, transports, tmp_path):
    srv = server()
    srv.reject = {5}
    transport = transports(srv.url, tmp_path)
    for i in range(10):
        transport.send(_scalars(i))
    assert transport.flush(timeout=20)
    # The server needed seq 5 before it would store 6; a lost event took its place.
    assert srv.stored_seqs() == list(range(10))
    stored = [wire.decode(frame)[1] for _, frame in srv.stored]
    assert [m.step for m in stored if isinstance(m, Scalars)] == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    assert isinstance(stored[5], Event) and stored[5].event == LOST_EVENT
    counters = transport.counters()
    assert counters.errors == 1 and counters.acked == 9


def test_a_frame_over_the_servers_size_limit_is_dropped_instead_of_looping(server, transports,
                                                                          tmp_path):
    srv = server(max_size=64 * 1024)  # closes the connection with 1009 on a bigger frame
    transport = transports(srv.url, tmp_path)
    big = np.zeros((10, 8192), dtype=np.float16)  # 160 KiB
    transport.send(_scalars(0))
    assert transport.flush(timeout=20)
    transport.send(Snapshot(RUN, 1, 0, np.arange(10, dtype=np.int64), {}, {"fc": big}))
    for i in range(2, 6):
        transport.send(_scalars(i))
    assert _wait_for(lambda: transport.counters().acked == 5)
    assert _wait_for(lambda: srv.stored_seqs() == [0, 1, 2, 3, 4, 5])
    lost = wire.decode(srv.stored[1][1])[1]  # the snapshot's seq holds a lost event
    assert isinstance(lost, Event) and lost.event == LOST_EVENT and lost.step == 2
    counters = transport.counters()
    assert counters.dropped == 1 and counters.errors >= 1


def test_the_token_is_sent_and_a_wrong_one_is_an_error_with_data_kept(server, transports,
                                                                      tmp_path):
    srv = server(token="s3cret")
    good = transports(srv.url, tmp_path / "good", token="s3cret")
    good.send(_scalars(0))
    assert good.flush(timeout=20) and srv.stored_seqs() == [0]
    bad = WebSocketTransport(srv.url, "otherrun", tmp_path / "bad", token="wrong")
    bad.send(Scalars("otherrun", 0, 0.0, {"loss": 1.0}))
    assert _wait_for(lambda: bad.counters().errors >= 1)
    bad.close(timeout=5)
    assert len(list(Spool(tmp_path / "bad" / "otherrun").records())) == 1


def test_send_refuses_what_is_not_a_message_without_raising(transports, tmp_path):
    transport = transports(f"http://127.0.0.1:{free_port()}", tmp_path)
    assert transport.send("not a message") is False  # type: ignore[arg-type]
    assert transport.send(None) is False  # type: ignore[arg-type]
    assert transport.send(_scalars(0, run_id="")) is False
    assert transport.counters().dropped == 3


def test_acks_are_per_run_when_one_transport_carries_two_runs(server, transports, tmp_path):
    srv = server()
    srv.silent_runs = {"runb"}
    transport = transports(srv.url, tmp_path)
    for i in range(10):
        transport.send(_scalars(i, run_id=RUN if i % 2 == 0 else "runb"))
    assert _wait_for(lambda: transport.counters().acked == 5)
    assert not transport.flush(timeout=0.3)  # run b's frames are not acknowledged yet
    assert transport.counters().acked == 5
    srv.silent_runs = set()
    transport.send(_scalars(10, run_id="runb"))  # the next ack of run b covers the rest
    assert transport.flush(timeout=20)
    # Each run's seqs count from 0 on their own, so the server takes both in order.
    assert transport.counters().acked == 11
    assert srv.stored_seqs(RUN) == list(range(5)) and srv.stored_seqs("runb") == list(range(6))


def test_a_full_queue_drops_and_counts_without_using_up_seq_numbers(server, transports, tmp_path):
    srv = server()
    srv.hold_acks.set()  # with a window of one frame, the sender stops taking from the queue
    transport = transports(srv.url, tmp_path, window_frames=1, max_queue=4)
    assert transport.send(_scalars(0))
    assert _wait_for(lambda: srv.received() == 1)
    results = [transport.send(_scalars(i)) for i in range(1, 100)]
    assert results == [True] * 4 + [False] * 95
    assert transport.counters().dropped == 95 and transport.counters().queue_depth == 4
    srv.hold_acks.clear()
    assert transport.flush(timeout=20)
    assert srv.stored_seqs() == [0, 1, 2, 3, 4]  # no gaps: dropped messages took no seq
    assert [wire.decode(f)[1].step for _, f in srv.stored] == [0, 1, 2, 3, 4]


def test_replay_spool_pushes_a_dead_trainers_spool_exactly_once(server, tmp_path):
    port = free_port()
    offline = WebSocketTransport(f"http://127.0.0.1:{port}", RUN, tmp_path)
    for i in range(60):
        offline.send(_scalars(i))
    offline.close(timeout=5)
    with pytest.raises(ConnectionError, match="cannot reach"):
        replay_spool(tmp_path, f"http://127.0.0.1:{port}", timeout=20)
    srv = server(port)
    assert replay_spool(tmp_path, srv.url, timeout=30) == 60
    assert srv.stored_seqs() == list(range(60))
    assert not (tmp_path / RUN).exists()
    assert replay_spool(tmp_path, srv.url, timeout=30) == 0


def test_replay_skips_a_spool_that_a_live_transport_holds(server, transports, tmp_path):
    live = transports(f"http://127.0.0.1:{free_port()}", tmp_path)
    live.send(_scalars(0))
    assert live.flush(timeout=20)
    srv = server()
    assert replay_spool(tmp_path, srv.url, timeout=10) == 0
    assert srv.stored_seqs() == []
