"""Large snapshots through a real server and the real client: sent in row chunks under the
frame limit, stored whole, and several at once held back by the in-flight bound, not lost."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from sentrycam.backend.testing import serve_in_thread
from sentrycam.capture.sender import WebSocketTransport
from sentrycam.protocol.messages import RunEnd, RunStart, Snapshot

RUN = "chunked0"


def _snapshot(run_id: str, step: int, n: int, dim: int, seed: int) -> Snapshot:
    rng = np.random.default_rng(seed)
    return Snapshot(run_id, step, 0, rng.permutation(n).astype(np.int64),
                    {"pred": rng.integers(0, 10, n), "loss": rng.random(n).astype(np.float32)},
                    {"fc:input": rng.standard_normal((n, dim)).astype(np.float16),
                     "head": rng.standard_normal((n, 8)).astype(np.float16)})


def _assert_reads_back(store, snapshot: Snapshot) -> None:
    order = np.argsort(snapshot.sample_ids)
    for layer, features in snapshot.features.items():
        ids, stored = store.features(snapshot.run_id, snapshot.step, layer)
        np.testing.assert_array_equal(ids, snapshot.sample_ids[order])
        np.testing.assert_array_equal(stored, features[order])
    predictions = store.predictions(snapshot.run_id, snapshot.step)
    for name, values in snapshot.outputs.items():
        np.testing.assert_array_equal(predictions[name], values[order])


def _stream(url: str, spool, snapshot: Snapshot) -> WebSocketTransport:
    transport = WebSocketTransport(url, snapshot.run_id, spool)
    assert transport.send(RunStart(snapshot.run_id, "large", 1.0))
    assert transport.send(snapshot)
    assert transport.send(RunEnd(snapshot.run_id, snapshot.step, "finished"))
    return transport


def test_a_snapshot_larger_than_the_frame_limit_is_stored_whole(make_settings, store, tmp_path):
    settings = make_settings()
    snapshot = _snapshot(RUN, 40, n=20_000, dim=512, seed=5)  # about 21 MB of arrays
    assert sum(a.nbytes for a in snapshot.features.values()) > settings.max_frame_bytes
    with serve_in_thread(settings, store) as server:
        transport = _stream(server.url, tmp_path / "spool", snapshot)
        try:
            assert transport.flush(120.0)
            counters = transport.counters()
        finally:
            transport.close()
        server.wait_written()
    assert counters.dropped == 0 and counters.errors == 0
    assert counters.acked >= 2 + 6  # RunStart, RunEnd and at least six chunks of 4 MiB
    index = store.snapshot_index(RUN)
    assert {(row["layer"], row["n"], row["dim"]) for row in index} == {
        ("fc:input", 20_000, 512), ("head", 20_000, 8)}
    _assert_reads_back(store, snapshot)


@pytest.mark.slow
def test_concurrent_large_snapshots_wait_for_the_writer_and_all_arrive(make_settings, store,
                                                                      tmp_path):
    # Room for about one chunk in flight: every connection but one waits its turn.
    settings = make_settings(ingest_max_bytes=4 * 1024 * 1024)
    snapshots = [_snapshot(f"busy{i}", 10, n=12_000, dim=384, seed=i) for i in range(3)]
    with serve_in_thread(settings, store) as server:
        transports = [_stream(server.url, tmp_path / f"spool{i}", s)
                      for i, s in enumerate(snapshots)]
        results: dict[int, bool] = {}
        flushes = [threading.Thread(target=lambda i=i, t=t: results.update({i: t.flush(180.0)}))
                   for i, t in enumerate(transports)]
        for thread in flushes:
            thread.start()
        for thread in flushes:
            thread.join()
        counters = [t.counters() for t in transports]
        for transport in transports:
            transport.close()
        server.wait_written()
        stats = server.app.state.writer.stats()
    assert results == {0: True, 1: True, 2: True}
    assert all(c.dropped == 0 and c.errors == 0 and c.spooled == 0 for c in counters)
    assert stats["bytes_full"] > 0 and stats["in_flight_bytes"] == 0  # it held back, then drained
    for snapshot in snapshots:
        _assert_reads_back(store, snapshot)
        assert store.run_summaries(snapshot.run_id)[0]["status"] == "finished"
