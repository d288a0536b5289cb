"""The DuckDB store through a real file: messages in, the same data out."""

from __future__ import annotations

import math
import threading
import time

import duckdb
import numpy as np
import pytest

from sentrycam.backend.store import (MissingSnapshotError, RetentionSettings, Store,
                                     StoreReadOnlyError, UnknownRunError)
from sentrycam.backend.store import writer
from sentrycam.protocol.messages import (SPLIT_HELDOUT, SPLIT_TRAIN, Event, LayerStats, ProbeSet,
                                        RunEnd, RunStart, Scalars, Snapshot, Status)

RUN = "a" * 32
N_PROBE = 64


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "runs.duckdb") as opened:
        yield opened


def make_snapshot(rng, step, *, run_id=RUN, n=N_PROBE, dims=None, outputs=True, epoch=0):
    dims = dims or {"fc:input": 16, "features.3": 8}
    ids = np.arange(n, dtype=np.int64) * 3 + 7  # stable ids that are not row numbers
    feats = {layer: rng.standard_normal((n, d)).astype(np.float16) for layer, d in dims.items()}
    outs = {}
    if outputs:
        outs = {"pred": rng.integers(0, 10, n).astype(np.int64),
                "confidence": rng.random(n).astype(np.float32),
                "loss": rng.random(n).astype(np.float32),
                "entropy": rng.random(n).astype(np.float32),
                "margin": rng.random(n).astype(np.float32)}
    return Snapshot(run_id=run_id, step=step, epoch=epoch, sample_ids=ids, outputs=outs,
                    features=feats)


def test_every_message_kind_round_trips(store, rng):
    started = time.time() - 60
    probe_ids = np.arange(N_PROBE, dtype=np.int64) * 3 + 7
    labels = rng.integers(0, 10, N_PROBE).astype(np.int64)
    split = np.where(np.arange(N_PROBE) % 4 == 0, SPLIT_HELDOUT, SPLIT_TRAIN).astype(np.uint8)
    stats = rng.standard_normal((2, 3)).astype(np.float32)
    stats[1, 2] = np.nan
    snap = make_snapshot(rng, 10, epoch=1)
    batch = [
        (0, RunStart(RUN, "digits-cnn", started, {"lr": 0.1, "layers": ["fc:input"]})),
        (1, ProbeSet(RUN, probe_ids[::-1].copy(), labels[::-1].copy(), split[::-1].copy())),
        (2, Scalars(RUN, 0, 100.5, {"loss": 2.3, "lr": 0.1})),
        (3, Scalars(RUN, 1, 101.5, {"loss": float("nan"), "grad_norm": float("inf")})),
        (4, LayerStats(RUN, 1, ("conv1", "fc"), ("grad_norm", "dead_frac", "eff_rank"), stats)),
        (5, snap),
        (6, Event(RUN, 10, 102.0, "lr_change", "lr halved", {"old": 0.1, "new": 0.05})),
        (7, Status(RUN, 10, dropped=4, spooled=2, overhead=0.008, snapshot_every=50,
                   queue_depth=1)),
        (8, RunEnd(RUN, 12, "finished")),
    ]
    assert store.write(batch) == {RUN: 8}

    (summary,) = store.run_summaries()
    assert summary["name"] == "digits-cnn" and summary["status"] == "finished"
    assert summary["config"] == {"lr": 0.1, "layers": ["fc:input"]}
    assert summary["created_at"].startswith(
        time.strftime("%Y-%m-%dT%H:%M", time.gmtime(started)))
    assert summary["ended_at"] is not None
    assert summary["last_step"] == 12
    assert summary["n_scalar_rows"] == 4 + 2  # 4 values + the two Status scalars
    assert summary["n_snapshots"] == 1 and summary["n_probe"] == N_PROBE
    assert summary["layers"] == ["conv1", "fc", "fc:input", "features.3"]
    assert (summary["dropped"], summary["spooled"], summary["snapshot_every"]) == (4, 2, 50)
    assert summary["capture_overhead"] == pytest.approx(0.008)
    assert summary["n_events"] == 1 and summary["n_alerts"] == 0 and summary["n_embeddings"] == 0

    probe = store.probe(RUN)
    np.testing.assert_array_equal(probe["sample_id"], probe_ids)
    np.testing.assert_array_equal(probe["label"], labels)
    np.testing.assert_array_equal(probe["split"], split)

    scalars = store.scalars(RUN, names=["loss", "grad_norm"])
    assert scalars["step"] == [0, 1, 1] and scalars["name"] == ["loss", "grad_norm", "loss"]
    assert scalars["value"][0] == 2.3 and math.isinf(scalars["value"][1])
    assert math.isnan(scalars["value"][2]) and scalars["wall_time"] == [100.5, 101.5, 101.5]
    assert store.scalar_names(RUN) == ["grad_norm", "loss", "lr", "sentrycam/dropped",
                                       "sentrycam/overhead"]
    health = store.scalars(RUN, names=["sentrycam/dropped", "sentrycam/overhead"])
    assert health["step"] == [10, 10] and health["value"] == [4.0, pytest.approx(0.008)]

    layer_stats = store.layer_stats(RUN)
    assert layer_stats["layer"] == ["conv1"] * 3 + ["fc"] * 3
    assert layer_stats["stat"] == ["dead_frac", "eff_rank", "grad_norm"] * 2
    by_key = dict(zip(zip(layer_stats["layer"], layer_stats["stat"]), layer_stats["value"]))
    assert by_key[("conv1", "grad_norm")] == pytest.approx(float(stats[0, 0]))
    assert math.isnan(by_key[("fc", "eff_rank")])

    assert store.snapshot_index(RUN) == [
        {"step": 10, "epoch": 1, "layer": "fc:input", "n": N_PROBE, "dim": 16, "nonfinite": 0,
         "has_features": True},
        {"step": 10, "epoch": 1, "layer": "features.3", "n": N_PROBE, "dim": 8, "nonfinite": 0,
         "has_features": True}]
    for layer, feats in snap.features.items():
        ids, stored = store.features(RUN, 10, layer)
        assert stored.dtype == np.float16 and stored.shape == feats.shape
        np.testing.assert_array_equal(ids, snap.sample_ids)
        np.testing.assert_array_equal(stored, feats)

    preds = store.predictions(RUN, 10)
    np.testing.assert_array_equal(preds["sample_id"], snap.sample_ids)
    for name, values in snap.outputs.items():
        assert preds[name].dtype == values.dtype
        np.testing.assert_array_equal(preds[name], values)

    (event,) = store.events(RUN)
    assert event == {"step": 10, "wall_time": 102.0, "event": "lr_change",
                     "message": "lr halved", "payload": {"old": 0.1, "new": 0.05}}


def test_features_come_back_in_sample_id_order_and_missing_outputs_read_as_unknown(store, rng):
    snap = make_snapshot(rng, 3, outputs=False)
    order = rng.permutation(N_PROBE)
    shuffled = Snapshot(RUN, 3, 0, snap.sample_ids[order], {"pred": np.arange(N_PROBE)[order]},
                        {k: v[order] for k, v in snap.features.items()})
    store.write([(0, shuffled)])
    ids, feats = store.features(RUN, 3, "fc:input")
    np.testing.assert_array_equal(ids, snap.sample_ids)
    np.testing.assert_array_equal(feats, snap.features["fc:input"])
    preds = store.predictions(RUN, 3)
    np.testing.assert_array_equal(preds["pred"], np.arange(N_PROBE))
    assert np.isnan(preds["loss"]).all() and np.isnan(preds["margin"]).all()


def test_a_second_snapshot_at_one_step_replaces_the_first(store, rng):
    store.write([(0, make_snapshot(rng, 5))])
    again = make_snapshot(rng, 5, dims={"fc:input": 16})
    store.write([(1, again)])
    assert [s["layer"] for s in store.snapshot_index(RUN)] == ["fc:input"]
    np.testing.assert_array_equal(store.features(RUN, 5, "fc:input")[1],
                                  again.features["fc:input"])
    assert len(store.predictions(RUN, 5)["sample_id"]) == N_PROBE


def test_a_second_snapshot_at_one_step_in_the_same_batch_replaces_the_first(store, rng):
    first, again = make_snapshot(rng, 5), make_snapshot(rng, 5, dims={"fc:input": 16})
    store.write([(0, first), (1, make_snapshot(rng, 6)), (2, again)])
    assert sorted((s["step"], s["layer"]) for s in store.snapshot_index(RUN)) == [
        (5, "fc:input"), (6, "fc:input"), (6, "features.3")]
    np.testing.assert_array_equal(store.features(RUN, 5, "fc:input")[1],
                                  again.features["fc:input"])
    np.testing.assert_array_equal(store.predictions(RUN, 5)["pred"], again.outputs["pred"])


def test_one_batch_of_many_runs_stores_each_runs_progress_and_status(store, rng):
    runs = [c * 32 for c in "bcd"]
    batch = [(seq, message) for run_id in runs for seq, message in enumerate([
        RunStart(run_id, f"name-{run_id[0]}", 1.0), make_snapshot(rng, 2, run_id=run_id),
        Scalars(run_id, 3, 1.0, {"loss": 0.5}),
        Status(run_id, 3, dropped=2, spooled=1, overhead=0.01, snapshot_every=2,
               queue_depth=0)])]
    batch.insert(4, (4, RunEnd(runs[0], 3, "finished")))
    assert store.write(batch) == {runs[0]: 4, runs[1]: 3, runs[2]: 3}
    summaries = {s["run_id"]: s for s in store.run_summaries()}
    assert [summaries[r]["status"] for r in runs] == ["finished", "running", "running"]
    for run_id in runs:
        assert (summaries[run_id]["last_step"], summaries[run_id]["dropped"],
                summaries[run_id]["spooled"]) == (3, 2, 1)
        assert len(store.features(run_id, 2, "fc:input")[0]) == N_PROBE


def test_replayed_messages_are_stored_once(store, rng):
    batch = [(seq, Scalars(RUN, seq, 1.0, {"loss": float(seq)})) for seq in range(5)]
    assert store.write(batch) == {RUN: 4}
    # A reconnecting agent replays its spool (seq 0-4), then sends new ones.
    replay = batch + [(5, Scalars(RUN, 5, 1.0, {"loss": 5.0})), (6, make_snapshot(rng, 6))]
    assert store.write(replay) == {RUN: 6}
    assert store.write(batch) == {RUN: 6}  # nothing new: the answer is still the stored seq
    assert store.scalars(RUN)["value"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert [s["step"] for s in store.snapshot_index(RUN)] == [6, 6]
    assert store.run_summaries(RUN)[0]["last_step"] == 6


def test_runs_in_one_batch_are_deduplicated_separately(store):
    other = "b" * 32
    store.write([(3, Scalars(RUN, 0, 1.0, {"loss": 1.0}))])
    result = store.write([(3, Scalars(RUN, 0, 1.0, {"loss": 9.0})),
                          (0, Scalars(other, 0, 1.0, {"loss": 2.0}))])
    assert result == {RUN: 3, other: 0}
    assert store.scalars(RUN)["value"] == [1.0] and store.scalars(other)["value"] == [2.0]


def test_a_message_before_its_run_start_creates_a_placeholder_run(store):
    store.write([(4, Scalars(RUN, 2, 1.0, {"loss": 0.5}))])
    (summary,) = store.run_summaries()
    assert (summary["name"], summary["status"], summary["last_step"]) == (RUN, "running", 2)
    store.write([(5, RunStart(RUN, "late start", time.time(), {"probe": 64}))])
    (summary,) = store.run_summaries(RUN)
    assert summary["name"] == "late start" and summary["config"] == {"probe": 64}
    assert summary["n_scalar_rows"] == 1 and summary["last_step"] == 2


def test_nonfinite_features_are_stored_as_they_are_and_flagged(store, rng):
    snap = make_snapshot(rng, 1, dims={"fc:input": 16})
    feats = snap.features["fc:input"].copy()
    feats[0, 0], feats[3, 5], feats[7, 1] = np.nan, np.inf, -np.inf
    finite = np.zeros((N_PROBE, 2), np.float16)
    bad = Snapshot(RUN, 1, 0, snap.sample_ids, {}, {"fc:input": feats, "ok": finite},
                   nonfinite={"ok": 12})  # the agent saw 12 before its float16 cast
    store.write([(0, bad)])
    index = {s["layer"]: s["nonfinite"] for s in store.snapshot_index(RUN)}
    assert index == {"fc:input": 3, "ok": 12}
    _, stored = store.features(RUN, 1, "fc:input")
    np.testing.assert_array_equal(stored, feats)  # NaN == NaN position-wise here
    assert np.isnan(stored[0, 0]) and stored[3, 5] == np.inf and stored[7, 1] == -np.inf


def test_a_malformed_batch_is_refused_whole_with_a_clear_error(store, rng):
    good = Scalars(RUN, 0, 1.0, {"loss": 1.0})
    bad = LayerStats(RUN, 0, ("a", "b"), ("g",), np.zeros((3, 1), np.float32))
    with pytest.raises(ValueError, match=r"batch item 1 \(layer_stats .*values has shape"):
        store.write([(0, good), (1, bad)])
    ragged = Snapshot(RUN, 0, 0, np.arange(4), {}, {"fc": np.zeros((5, 2), np.float16)})
    with pytest.raises(ValueError, match=r"features\['fc'\] must be a float array of shape \[4"):
        store.write([(2, ragged)])
    with pytest.raises(ValueError, match="status 'crashed'"):
        store.write([(3, RunEnd(RUN, 0, "crashed"))])
    assert store.run_summaries() == []


def test_a_batch_that_fails_while_writing_leaves_nothing_behind(store, rng, monkeypatch):
    # The last insert of a batch fails (the disk filled, say) after the run row and the
    # snapshot of the same batch went in: they must be rolled back.
    batch = [(0, RunStart(RUN, "r", time.time())), (1, make_snapshot(rng, 0)),
             (2, Scalars(RUN, 0, 1.0, {"loss": 1.0}))]

    real_insert = writer.insert_arrow

    def insert_until_scalars(cur, table, rows, *args, **kwargs):
        if table == "scalars":
            raise OSError("No space left on device")
        return real_insert(cur, table, rows, *args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(writer, "insert_arrow", insert_until_scalars)
        with pytest.raises(OSError, match="No space left"):
            store.write(batch)
    assert store.run_summaries() == []
    # The store carries on, and the same seqs are not taken as already stored.
    assert store.write(batch[:2]) == {RUN: 1}
    assert store.run_summaries(RUN)[0]["n_snapshots"] == 1


def test_a_failed_batch_of_a_run_written_before_is_stored_when_sent_again(store, monkeypatch):
    # The store remembers each run's last seq between batches: a batch that fails after it
    # advanced the run in memory must leave the remembered seq where the commit left it.
    store.write([(0, RunStart(RUN, "r", time.time())), (1, Scalars(RUN, 0, 1.0, {"loss": 1.0}))],
                refused=[])
    later = [(2, Scalars(RUN, 1, 2.0, {"loss": 0.5})), (3, Scalars(RUN, 2, 3.0, {"loss": 0.25}))]

    def full_disk(cur, table, rows, *args, **kwargs):
        raise OSError("No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(writer, "insert_arrow", full_disk)
        with pytest.raises(OSError, match="No space left"):
            store.write(later, refused=[])
    refused = []
    assert store.write(later, refused=refused) == {RUN: 3}
    assert refused == []
    assert store.scalars(RUN)["value"] == [1.0, 0.5, 0.25]


def test_unknown_runs_and_missing_snapshots_raise_key_errors_that_say_what_to_do(store, rng):
    with pytest.raises(UnknownRunError, match="unknown run_id 'nope'; list runs with"):
        store.scalars("nope")
    for call in (store.run_summaries, store.probe, store.events, store.snapshot_index):
        with pytest.raises(KeyError):
            call("nope")
    store.write([(0, make_snapshot(rng, 4))])
    with pytest.raises(MissingSnapshotError, match="no snapshot of it at that step"):
        store.features(RUN, 5, "fc:input")
    with pytest.raises(MissingSnapshotError, match="no snapshot for run"):
        store.predictions(RUN, 5)


def test_retention_drops_old_features_but_keeps_snapshot_rows_predictions_and_embeddings(
        tmp_path, rng):
    path = tmp_path / "runs.duckdb"
    with Store(path) as store:
        store.write([(step, make_snapshot(rng, step * 10)) for step in range(3)])
    # Embeddings come from the projector (a later part); put some in the file directly.
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO embeddings SELECT ?, s * 10, 'fc:input', i, 0.5, -0.5 "
                "FROM range(3) t(s), range(?) u(i)", [RUN, N_PROBE])
    con.close()

    with Store(path, retention=RetentionSettings(max_snapshots=2)) as store:
        last = make_snapshot(rng, 30)
        store.write([(3, last)])
        index = store.snapshot_index(RUN)
        kept = {(s["step"], s["layer"]) for s in index if s["has_features"]}
        assert kept == {(20, "fc:input"), (20, "features.3"), (30, "fc:input"), (30, "features.3")}
        assert len(index) == 8  # every snapshot row stays
        with pytest.raises(MissingSnapshotError, match="deleted by the retention setting"):
            store.features(RUN, 0, "fc:input")
        np.testing.assert_array_equal(store.features(RUN, 30, "features.3")[1],
                                      last.features["features.3"])
        for step in (0, 10, 20, 30):
            assert len(store.predictions(RUN, step)["sample_id"]) == N_PROBE
        summary = store.run_summaries(RUN)[0]
        assert summary["n_embeddings"] == 3 and summary["n_snapshots"] == 4


def test_bulk_insert_of_2000_by_512_float16_features(store, rng):
    n, d = 2000, 512
    feats = rng.standard_normal((n, d)).astype(np.float16)
    snap = Snapshot(RUN, 0, 0, np.arange(n, dtype=np.int64), {}, {"fc:input": feats})
    store.write([(0, snap)])
    ids, stored = store.features(RUN, 0, "fc:input")
    np.testing.assert_array_equal(ids, np.arange(n))
    np.testing.assert_array_equal(stored, feats)


def test_reads_from_other_threads_see_whole_batches_while_a_writer_writes(store, rng):
    n_batches, values_per_batch = 30, 3
    snapshots = [make_snapshot(rng, step, n=200) for step in range(n_batches)]
    errors: list[BaseException] = []
    writer_done = threading.Event()
    reads = [0, 0]

    def write_all() -> None:
        try:
            for step, snap in enumerate(snapshots):
                values = {f"v{i}": float(step) for i in range(values_per_batch)}
                store.write([(2 * step, Scalars(RUN, step, 1.0, values)), (2 * step + 1, snap)])
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            writer_done.set()

    def read_until_done(slot: int) -> None:
        try:
            while True:
                done = writer_done.is_set()  # read once more after the last write
                summaries = store.run_summaries()
                if summaries:
                    s = summaries[0]
                    # One batch = 3 scalar rows + 1 snapshot: never half of one.
                    assert s["n_scalar_rows"] == values_per_batch * s["n_snapshots"]
                    index = store.snapshot_index(RUN)
                    if index:
                        ids, feats = store.features(RUN, index[-1]["step"], "fc:input")
                        assert feats.shape == (200, 16) and len(ids) == 200
                reads[slot] += 1
                if done:
                    return
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=write_all)] + [
        threading.Thread(target=read_until_done, args=(slot,)) for slot in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread did not finish"
    assert errors == []
    assert min(reads) >= 1
    summary = store.run_summaries(RUN)[0]
    assert summary["n_snapshots"] == n_batches
    assert summary["n_scalar_rows"] == n_batches * values_per_batch


def test_a_closed_file_opens_read_only_for_reading_but_not_writing(tmp_path, rng):
    path = tmp_path / "runs.duckdb"
    snap = make_snapshot(rng, 0)
    with Store(path) as store:
        store.write([(0, RunStart(RUN, "r", time.time())), (1, snap)])
    with Store(path, read_only=True) as ro:
        assert ro.read_only and ro.schema_version >= 1
        assert ro.run_summaries()[0]["name"] == "r"
        np.testing.assert_array_equal(ro.features(RUN, 0, "fc:input")[1],
                                      snap.features["fc:input"])
        with pytest.raises(StoreReadOnlyError, match="read-only"):
            ro.write([(2, Scalars(RUN, 0, 1.0, {"x": 1.0}))])
        # Two read-only opens of one file can coexist.
        with Store(path, read_only=True) as second:
            assert len(second.run_summaries()) == 1
    with pytest.raises(FileNotFoundError, match="no sentrycam store at"):
        Store(tmp_path / "missing.duckdb", read_only=True)
