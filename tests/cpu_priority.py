"""What the kernel says about a process's threads: nice value and scheduling class (Linux)."""

from __future__ import annotations

from pathlib import Path

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
