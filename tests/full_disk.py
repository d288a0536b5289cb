"""A real full file system for the storage-failure tests.

As root, :class:`SmallDisk` mounts a tmpfs of a few MiB on a folder of the test; ``fill()``
writes a filler file until the kernel answers ENOSPC (optionally leaving some room), ``free()``
deletes it, and the folder is unmounted at the end. Where mounting is not allowed,
:func:`file_size_limit` is the fallback: under RLIMIT_FSIZE no file may grow past a size,
so DuckDB's writes fail with EFBIG ("File too large") as they would on a full disk.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import resource
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

FILLER = "filler.bin"
CHUNK = 64 * 1024


class SmallDisk:
    """A tmpfs of ``size_mib`` MiB mounted on ``path`` (created) for a ``with`` block."""

    def __init__(self, path: Path, size_mib: int) -> None:
        self.path, self.size_mib = Path(path), size_mib
        self.filler = self.path / FILLER

    @staticmethod
    @functools.lru_cache(maxsize=1)
    def why_not() -> str | None:
        """Why no tmpfs can be mounted here (None: it can; tried once per test process)."""
        if os.geteuid() != 0:
            return "mounting a tmpfs needs root"
        with tempfile.TemporaryDirectory() as folder:
            try:
                mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs",
                                          folder], capture_output=True, text=True)
            except OSError as exc:
                return f"cannot run mount ({exc})"
            if mounted.returncode != 0:
                return f"mount refused a tmpfs ({mounted.stderr.strip()})"
            subprocess.run(["umount", folder], check=False, capture_output=True)
        return None

    def __enter__(self) -> SmallDisk:
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size_mib}m", "tmpfs",
                        str(self.path)], check=True, capture_output=True)
        return self

    def __exit__(self, *exc_info: object) -> None:
        # Lazy: a server process killed a moment ago may still hold files open.
        subprocess.run(["umount", "-l", str(self.path)], check=False, capture_output=True)

    def fill(self, leave_bytes: int = 0) -> int:
        """Write the filler until the disk is full, then give back ``leave_bytes``; returns
        the filler's size."""
        with open(self.filler, "ab") as out:
            try:
                while True:
                    out.write(b"\0" * CHUNK)
                    out.flush()
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
        size = self.filler.stat().st_size
        os.truncate(self.filler, max(0, size - leave_bytes))
        return self.filler.stat().st_size

    def free(self) -> None:
        """Delete the filler: the disk has room again."""
        self.filler.unlink(missing_ok=True)


def limit_file_size(limit: int) -> None:
    """In this process: no file may grow past ``limit`` bytes, and growing one fails with
    EFBIG instead of killing the process with SIGXFSZ. For ``preexec_fn`` too."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """:func:`limit_file_size` in this process for a ``with`` block, then lifted again."""
    before = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.getsignal(signal.SIGXFSZ)
    limit_file_size(limit)
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, before)
        signal.signal(signal.SIGXFSZ, handler)
