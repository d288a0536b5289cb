"""What a run sends besides its step messages: NaN/Inf flags, cadence notices and Status.

NaN and Inf are data, not failures: the first message that carries them for a layer or signal
gets one warning and one ``Event("nonfinite")``. Each Status also charges the sender thread's CPU
time since the last one to the overhead controller (it competes with training for the cores and
the GIL), so that ``Status.overhead`` is all the time capture cost the training process.
"""

from __future__ import annotations

import logging
import time

from sentrycam.capture.budget import Schedule, cadence_notices
from sentrycam.capture.console import announce
from sentrycam.capture.steps import nonfinite_counts, nonfinite_text
from sentrycam.capture.transport import Transport
from sentrycam.protocol.messages import Event, Message, Status

log = logging.getLogger("sentrycam.capture.run")


class Outbox:
    """Sends one run's messages through ``transport``."""

    def __init__(self, run_id: str, transport: Transport, schedule: Schedule) -> None:
        self.run_id, self.transport, self.schedule = run_id, transport, schedule
        self.flagged: set[str] = set()  # layers and signals flagged as non-finite
        self.noticed: set[str] = set()  # cadence notices sent
        self.sender_cpu = 0.0  # the sender thread's CPU seconds charged so far

    def send(self, message: Message) -> None:
        self.transport.send(message)

    def send_all(self, messages: list[Message]) -> None:
        """Send, and flag NaN/Inf once per layer or signal."""
        for message in messages:
            self.transport.send(message)
            for what, (step, count) in nonfinite_counts(message).items():
                if what not in self.flagged:
                    self._flag(what, step, count)

    def _flag(self, what: str, step: int, count: int) -> None:
        self.flagged.add(what)
        text = nonfinite_text(what, step)
        log.warning("sentrycam: %s", text)
        self.send(Event(run_id=self.run_id, step=step, wall_time=time.time(), event="nonfinite",
                        message=text, payload={"layer": what, "count": count}))

    def status(self, step: int, snapshots: bool, ending: bool = False,
               reduced: tuple[int, int] | None = None) -> None:
        """Cadence notices that say something new, then Status; ``snapshots``: the run takes
        them; ``reduced``: ``(samples, probe size)`` when snapshots cover part of the probe."""
        for key, event, text in cadence_notices(self.schedule, ending, reduced):
            if key not in self.noticed:
                self.noticed.add(key)
                announce(f"sentrycam: {text}")
                self.send(Event(run_id=self.run_id, step=step, wall_time=time.time(),
                                event=event, message=text))
        counters = self.transport.counters()
        controller = self.schedule.controller
        controller.spend(counters.sender_cpu_seconds - self.sender_cpu)
        self.sender_cpu = counters.sender_cpu_seconds
        every = self.schedule.interval("snapshot") if snapshots else 0
        self.send(Status(run_id=self.run_id, step=step, dropped=counters.dropped,
                         spooled=counters.spooled, overhead=controller.overhead,
                         snapshot_every=every, queue_depth=counters.queue_depth))
