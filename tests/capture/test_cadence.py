"""The minimum cadence at attach's defaults: a short run on a small model still gets maps and
telemetry. A 300-step MLP and a 300-step small CNN stream to a real server (in this process,
real websocket, real DuckDB store); what the store holds is counted."""

from __future__ import annotations

import pytest

from sentrycam import capture
from sentrycam.protocol.signals import ACTIVATION_STATS, GRAD_NORM

pytestmark = pytest.mark.slow  # 600 training steps with capture, a server in a thread
STEPS = 300


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_a_short_run_at_the_defaults_gets_maps_and_telemetry(kind, server, store, make_model,
                                                            data, train):
    model = make_model(kind)
    x, y = data(kind, n=512)
    run = capture.attach(model, probe=(x, y), url=server.url, run_name=f"cadence-{kind}")
    train(model, x, y, STEPS)
    run.detach()
    assert run.counters().dropped == 0

    snapshots = sorted({row["step"] for row in store.snapshot_index(run.run_id)})
    assert len(snapshots) >= 6, snapshots
    assert snapshots[:2] == [0, 50]  # the first at attach, the second at the default every
    telemetry = set(store.scalars(run.run_id, names=[GRAD_NORM.name])["step"])
    assert len(telemetry) >= STEPS // 2
    stats = store.layer_stats(run.run_id)
    activations = {step for step, stat in zip(stats["step"], stats["stat"])
                   if stat == ACTIVATION_STATS[0]}
    assert len(activations) >= 10, sorted(activations)
    summary = store.run_summaries(run.run_id)[0]
    assert summary["last_step"] == STEPS - 1
    # the Status the server keeps says how far apart snapshots were at the end (a multiple of
    # every, at most a quarter of the run: the floor) and what capture cost
    assert summary["snapshot_every"] % 50 == 0 and summary["snapshot_every"] <= STEPS // 4 + 50
    assert summary["capture_overhead"] > 0


def test_without_the_minimum_cadence_the_budget_alone_spaces_capture(server, store, make_model,
                                                                     data, train):
    # the same short CNN run with minimum_cadence=False: the 1% budget pays for far less than
    # the floor gives, and the run ends with less spent than with the floor
    model = make_model("cnn")
    x, y = data("cnn", n=512)
    run = capture.attach(model, probe=(x, y), url=server.url, run_name="budget-alone",
                         minimum_cadence=False)
    train(model, x, y, STEPS)
    run.detach()
    assert run.counters().dropped == 0
    snapshots = sorted({row["step"] for row in store.snapshot_index(run.run_id)})
    telemetry = set(store.scalars(run.run_id, names=[GRAD_NORM.name])["step"])
    assert snapshots[:1] == [0] and len(snapshots) < 6, snapshots
    assert len(telemetry) < STEPS // 4
    assert store.run_summaries(run.run_id)[0]["capture_overhead"] > 0


def test_minimum_cadence_must_be_a_bool(make_model, data):
    model = make_model("mlp")
    with pytest.raises(ValueError, match="minimum_cadence must be True or False"):
        capture.attach(model, probe=data("mlp", n=64), minimum_cadence="no")
