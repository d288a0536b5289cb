"""The local projector yields to training that fills every core.

Linux's idle class does not protect training that keeps every core busy: torch's OpenMP threads
spin-wait for one another, so a projector thread that takes a core for a moment (on cycles that
looked idle) delays a whole step, and every second of CPU the projector takes costs the trainer
more than a second of wall time. So the server that ``attach`` starts does not *start* a
projector job while a run is training (it sent something within :data:`TRAINING_QUIET_S`) and
the machine has less than about one core free (:class:`CpuGate`): the job waits, and runs once
training stops, ends or leaves a core free, or, at the latest, :data:`DEFAULT_MAX_WAIT_S` after
it was queued or after the previous job, so that maps keep coming at a slow steady cadence
while training saturates the machine. A job already running is not interrupted. With no run
training there is nothing to yield to: a machine busy with other work does not hold maps back.

Free CPU is measured from Linux's ``/proc/stat`` (idle and iowait time of all cores over the
last :data:`WINDOW_S`) plus the CPU time the projector itself used meanwhile (its own work is
not training's: ``/proc/<pid>/stat`` of the pool's workers, ``/proc/self/task/<tid>/stat`` of
the thread engine's threads). On other systems (no ``/proc/stat``) there is no measure and the
gate is off: jobs start as soon as they are queued, as they always did.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

log = logging.getLogger(__name__)

#: Free cores a job needs to start: the local projector works on one compute thread, and
#: three quarters of a core allows for the server's own ingest and the measure's noise.
MIN_FREE_CORES = 0.75
#: The span free CPU is measured over: long enough to average over a training step or two,
#: short enough that a job starts within about a second of training stopping.
WINDOW_S = 1.0
#: How often the meter samples and a held job looks again.
POLL_S = 0.5
#: The longest a job waits (since it was queued or since the previous job, whichever is later)
#: before it runs anyway: during saturated training a map every half minute or so, at a cost of
#: one job's CPU per that period.
DEFAULT_MAX_WAIT_S = 25.0
#: A run counts as training while it sent anything this recently: a training run sends a status
#: at least every 2 s (capture's ``STATUS_EVERY_S``), its scalars and statistics in between.
TRAINING_QUIET_S = 6.0

PROC_STAT = Path("/proc/stat")


def cpu_measure_available() -> bool:
    """Whether this system tells the machine's idle time (Linux's ``/proc/stat``)."""
    return PROC_STAT.is_file()


@dataclass(frozen=True)
class Sample:
    """The machine's idle seconds (all cores, idle + iowait) and each projector task's CPU
    seconds ({stat path: seconds}) at monotonic time ``at``."""

    at: float
    idle_s: float
    own_s: dict[str, float]


def _ticks_per_second() -> float:
    return float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0


def _task_cpu_s(path: str, tick: float) -> float | None:
    """utime + stime of the task whose stat file is ``path`` (fields 14 and 15, counted after
    the name's closing parenthesis: a name may hold spaces); None once it is gone."""
    try:
        fields = Path(path).read_text().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[14 - 3]) + int(fields[15 - 3])) / tick


class CpuMeter:
    """Samples free CPU every :data:`POLL_S` on a thread of its own (``start``/``stop``).
    ``own_tasks`` returns the stat paths of the projector's processes or threads, whose CPU
    time counts as free."""

    def __init__(self, own_tasks: Callable[[], Iterable[str]]) -> None:
        self._own_tasks = own_tasks
        self._tick = _ticks_per_second()
        self._samples: deque[Sample] = deque(maxlen=int(2 * WINDOW_S / POLL_S) + 2)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name="sentrycam-projector-cpu-meter")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * POLL_S)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception:  # never let the meter take the server down: the gate opens
                log.exception("measuring free CPU failed")
                return
            self._stop.wait(POLL_S)

    def sample(self) -> Sample:
        """Read the counters now and keep them."""
        fields = PROC_STAT.read_text().split("\n", 1)[0].split()  # "cpu user nice system idle
        idle_s = (int(fields[4]) + int(fields[5])) / self._tick  # iowait ...", in ticks
        own = {path: cpu for path in self._own_tasks()
               if (cpu := _task_cpu_s(path, self._tick)) is not None}
        sample = Sample(time.monotonic(), idle_s, own)
        with self._lock:
            self._samples.append(sample)
        return sample

    def free_cores(self) -> float | None:
        """Cores free over about the last :data:`WINDOW_S` (the projector's own use counted
        free); None until the meter has samples that far apart, or once it stopped sampling."""
        with self._lock:
            samples = list(self._samples)
        if not samples or time.monotonic() - samples[-1].at > 2 * WINDOW_S:
            return None  # not sampling (stopped, or failed): no measure holds nothing back
        newest = samples[-1]
        older = [s for s in samples if newest.at - s.at >= WINDOW_S]
        if not older:
            return None
        oldest = older[-1]
        own = sum(max(0.0, cpu - oldest.own_s[path]) for path, cpu in newest.own_s.items()
                  if path in oldest.own_s)  # a replaced worker's time is not comparable
        return (newest.idle_s - oldest.idle_s + own) / (newest.at - oldest.at)


class CpuGate:
    """Whether a projector job may start now (see module doc). ``max_wait_s``: the longest a
    job is held, counted from when it was queued or the previous job started or ended,
    whichever is latest. Not thread-safe: its owner serialises calls (the meter is)."""

    def __init__(self, meter: CpuMeter, max_wait_s: float = DEFAULT_MAX_WAIT_S,
                 min_free_cores: float = MIN_FREE_CORES) -> None:
        self.meter, self.max_wait_s, self.min_free_cores = meter, max_wait_s, min_free_cores
        self._last_activity = float("-inf")
        self._runs: dict[str, float] = {}  # run id -> when it last sent something

    def start(self) -> None:
        self.meter.start()

    def stop(self) -> None:
        self.meter.stop()

    def saw_training(self, run_id: str) -> None:
        """``run_id`` sent something (a step's scalars, a status, a snapshot ...)."""
        self._runs[run_id] = time.monotonic()

    def run_ended(self, run_id: str) -> None:
        self._runs.pop(run_id, None)

    def training(self) -> bool:
        """Whether a run is training now (sent something within :data:`TRAINING_QUIET_S`)."""
        now = time.monotonic()
        self._runs = {run: at for run, at in self._runs.items() if now - at < TRAINING_QUIET_S}
        return bool(self._runs)

    def note_activity(self) -> None:
        """A job started or ended: the next one's wait counts from now."""
        self._last_activity = time.monotonic()

    def held_for(self, queued_at: float) -> float:
        """Seconds a job queued at ``queued_at`` (monotonic) has been held so far."""
        return max(0.0, time.monotonic() - max(queued_at, self._last_activity))

    def holds(self, queued_at: float) -> bool:
        """True while the job queued at ``queued_at`` should wait: a run is training, too
        little CPU is free and the job has not waited ``max_wait_s`` yet. No measure (yet)
        holds nothing."""
        if not self.training() or self.held_for(queued_at) >= self.max_wait_s:
            return False
        free = self.meter.free_cores()
        return free is not None and free < self.min_free_cores
