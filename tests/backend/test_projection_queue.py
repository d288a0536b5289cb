"""The projector's queue: a layer's snapshots in step order, one at a time; runs take turns."""

from __future__ import annotations

import numpy as np

from sentrycam.backend.projection_queue import Job, JobQueue


def _job(run_id: str, layer: str, step: int, n: int = 4) -> Job:
    return Job(run_id, layer, step, np.arange(n, dtype=np.int64),
               np.zeros((n, 3), np.float16), float(step))


def _drain(queue: JobQueue, accepts=lambda key: True) -> list[tuple[str, str, int]]:
    """Take and finish every job one at a time, as a single worker does."""
    order = []
    while (job := queue.take(accepts)) is not None:
        order.append((job.run_id, job.layer, job.step))
        queue.done(job)
    return order


def test_a_run_with_a_long_backlog_of_big_snapshots_does_not_starve_the_others():
    queue = JobQueue(max_backlog=20)
    for step in range(0, 100, 10):  # a 20,000-point probe, queued first
        queue.put(_job("big", "fc", step, n=20_000))
    queue.put(_job("small1", "fc", 0))
    queue.put(_job("small2", "fc", 0))
    queue.put(_job("small1", "fc", 10))
    order = _drain(queue)
    assert order[:5] == [("big", "fc", 0), ("small1", "fc", 0), ("small2", "fc", 0),
                         ("big", "fc", 10), ("small1", "fc", 10)]
    assert [step for run, _, step in order if run == "big"] == list(range(0, 100, 10))
    assert queue.idle()


def test_a_layer_waits_for_its_previous_snapshot_while_other_layers_go():
    queue = JobQueue(max_backlog=5)
    for step in (0, 10):
        queue.put(_job("run", "conv", step))
        queue.put(_job("run", "fc", step))
    first = queue.take(lambda key: True)
    second = queue.take(lambda key: True)
    assert [(first.layer, first.step), (second.layer, second.step)] == [("conv", 0), ("fc", 0)]
    assert queue.take(lambda key: True) is None  # both layers have a step in flight
    queue.done(second)
    third = queue.take(lambda key: True)
    assert (third.layer, third.step) == ("fc", 10)


def test_a_worker_takes_only_the_layers_it_accepts():
    queue = JobQueue(max_backlog=5)
    queue.put(_job("a", "fc", 0))
    queue.put(_job("b", "fc", 0))
    assert _drain(queue, accepts=lambda key: key[0] == "b") == [("b", "fc", 0)]
    assert [job.run_id for job in queue.pending] == ["a"]


def test_beyond_the_backlog_the_oldest_waiting_snapshot_of_the_layer_is_skipped():
    queue = JobQueue(max_backlog=2)
    assert queue.put(_job("run", "fc", 0)) is None
    assert queue.put(_job("run", "fc", 10)) is None
    assert queue.put(_job("other", "fc", 0)) is None
    skipped = queue.put(_job("run", "fc", 20))
    assert skipped is not None and skipped.step == 0
    assert _drain(queue) == [("run", "fc", 10), ("other", "fc", 0), ("run", "fc", 20)]


def test_the_next_job_can_be_looked_at_without_taking_it():
    """A worker holding a job back for CPU looks at it first; taking it later changes nothing
    about the order."""
    queue = JobQueue(max_backlog=5)
    for run_id in ("a", "b"):
        queue.put(_job(run_id, "fc", 0))
    seen = queue.next_for(lambda key: True)
    assert queue.next_for(lambda key: True) is seen and len(queue.pending) == 2
    assert queue.take(lambda key: True) is seen and (seen.run_id, seen.step) == ("a", 0)
    assert queue.next_for(lambda key: key[0] == "a") is None  # "a"'s layer has nothing left
