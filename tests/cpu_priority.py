"""What the kernel says about a process's threads: nice value and scheduling class (Linux); and
a machine made busy on purpose."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

#: Linux's scheduling class numbers (``/proc/<pid>/stat`` field 41).
SCHED_OTHER, SCHED_IDLE = 0, 5


def thread_priorities(pid: int) -> dict[int, tuple[int, int]]:
    """{thread id: (nice, scheduling class)} of every thread of ``pid``, read from
    ``/proc/<pid>/task/<tid>/stat`` (fields 19 and 41; the name in parentheses may hold
    spaces, so fields are counted after its closing parenthesis)."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue  # the thread ended meanwhile
        found[int(task.name)] = (int(fields[19 - 3]), int(fields[41 - 3]))
    return found


def children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid``."""
    kids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[4 - 3]) == pid:
            kids.append(int(entry.name))
    return kids


@contextlib.contextmanager
def busy_cores() -> Iterator[list[subprocess.Popen]]:
    """One CPU-bound process per usable core (a Python busy loop at normal priority), as
    training that fills every core; all of them killed when the block exits."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
             for _ in range(cores or 1)]
    try:
        yield loops
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()
