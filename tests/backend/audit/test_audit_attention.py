"""The attention-collapse detector on constructed per-head statistics (one LayerStats per
snapshot, every 25 steps, two heads): a head that collapses onto one key, heads that converge
to one pattern, and a healthy run whose heads sharpen slowly while it learns."""

from __future__ import annotations

import math

import numpy as np

from sentrycam.backend.audit.detectors.attention import AttentionCollapse
from sentrycam.protocol.messages import LayerStats
from sentrycam.protocol.signals import ATTENTION_STATS
from tests.backend.audit.streams import RUN, first_confirmed, levels, max_level

AT, EVERY, STEPS = 200, 25, 400
HEADS = ("encoder.self_attn:head0", "encoder.self_attn:head1")
KEYS = 12  # the uniform entropy is log(KEYS)


def attention_stream(seed: int = 0, collapse: str | None = None,
                     heads: tuple[str, ...] = HEADS) -> list[LayerStats]:
    """Entropy 2.3 -> 1.6 nats over the run (the heads sharpen as the model learns), agreement
    0.7 -> 0.45 (they specialise), 3% noise; from AT on ``collapse`` ("sharpening": head 0's
    entropy falls to 0.15; "uniformity": both heads uniform and alike)."""
    rng = np.random.default_rng(seed)
    stream = []
    for step in range(0, STEPS, EVERY):
        t = step / STEPS
        rows = []
        for h in range(len(heads)):
            noise = np.exp(rng.normal(0, 0.03, size=3))
            entropy, top, agreement = (2.3 - 0.7 * t + 0.1 * h, 0.2 + 0.1 * t, 0.7 - 0.25 * t)
            if step >= AT and collapse == "sharpening" and h == 0:
                entropy, top = 0.15, 0.95
            if step >= AT and collapse == "uniformity":
                entropy, top, agreement = math.log(KEYS) * 0.99, 1.2 / KEYS, 0.995
            rows.append(np.array([entropy, top, agreement]) * noise)
        values = np.array(rows)
        values[:, 2] = np.minimum(values[:, 2], 0.999)  # an agreement stays below 1
        stream.append(LayerStats(run_id=RUN, step=step, layers=heads, stats=ATTENTION_STATS,
                                 values=values.astype(np.float32)))
    return stream


def test_a_head_that_collapses_onto_one_key_is_confirmed_at_once_and_alone():
    stream = attention_stream(collapse="sharpening")
    assert first_confirmed(levels(AttentionCollapse(), "layer_stats", stream, HEADS[0])) == AT
    assert max_level(levels(AttentionCollapse(), "layer_stats", stream, HEADS[1])) == 0
    detector = AttentionCollapse()
    found = [f for item in stream for f in detector.observe("layer_stats", item)
             if f.level >= 2]
    assert "single key" in found[0].message and found[0].evidence["value"] < 0.2


def test_heads_that_converge_to_one_uniform_pattern_are_confirmed():
    stream = attention_stream(collapse="uniformity")
    for head in HEADS:
        assert first_confirmed(levels(AttentionCollapse(), "layer_stats", stream, head)) == AT


def test_heads_that_sharpen_and_specialise_while_learning_raise_nothing():
    for seed in range(5):
        assert max_level(levels(AttentionCollapse(), "layer_stats",
                                attention_stream(seed=seed))) == 0, seed


def test_other_layers_and_single_heads_are_not_judged():
    """A replayed step merges every LayerStats of the step: rows of other layers hold NaN
    attention statistics; a one-head module has no agreement."""
    merged = []
    for item in attention_stream(collapse="sharpening", heads=("attn:head0",)):
        values = np.vstack([item.values, np.full((1, 3), np.nan, np.float32)])
        values[0, 2] = np.nan  # one head: nothing to agree with
        merged.append(LayerStats(run_id=RUN, step=item.step, layers=("attn:head0", "fc"),
                                 stats=ATTENTION_STATS, values=values))
    found = levels(AttentionCollapse(), "layer_stats", merged)
    assert first_confirmed(found) == AT
    assert max_level(levels(AttentionCollapse(), "layer_stats", merged, "fc")) == 0
    detector = AttentionCollapse()
    assert detector.status()["active"] is False
    detector.observe("layer_stats", merged[0])
    assert detector.status()["active"] is True
