"""Keeps the memory a watched process frees for its next step (glibc's malloc, Linux).

glibc's malloc adapts two thresholds while a program runs: a request above the *mmap
threshold* gets a mapping of its own, unmapped when freed, and free memory above the *trim
threshold* at the top of the heap goes back to the kernel. Each time either happens, the next
step's allocations touch fresh pages: page faults, zeroed memory, system time. Training alone
usually settles into thresholds that avoid this; capture's own allocations (its small buffers
between training's large ones) keep the heap's top moving, and glibc then gives back and takes
again hundreds of pages per step. Measured on the demo CNN (one torch thread, the server on the
other core, 1,536-step rounds): about 1,000 page faults per training step watched against a
handful plain, and watched rounds at 1.57x plain; with both thresholds fixed at the ceilings
glibc's own adaptation would reach (32 MiB and 64 MiB on 64-bit), 1.11x, the agent's own figure
unchanged (see docs/benchmarks.md, "Capture overhead").

:func:`keep_freed_memory` fixes them so, once per process, at ``attach``: the process keeps up
to 64 MiB of freed memory at its heap's top for reuse, and requests up to 32 MiB come from the
heap. It changes no result of the training (only where its memory comes from) and stays for the
life of the process (glibc cannot read the thresholds back to restore them). The user's own
choice wins: nothing is changed when any ``MALLOC_*`` tuning variable is set, or when
``SENTRYCAM_KEEP_FREED_MEMORY=0``. Elsewhere (not Linux, or not glibc) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

#: glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: the highest mmap threshold its adaptation sets.
MMAP_THRESHOLD_BYTES = 32 * 2**20
#: glibc sets the trim threshold to twice the mmap threshold whenever it adapts the latter.
TRIM_THRESHOLD_BYTES = 2 * MMAP_THRESHOLD_BYTES
#: mallopt parameter numbers (glibc's malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Environment variables by which a user tunes glibc's malloc: any of them set, we stay out.
USER_TUNING = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
               "MALLOC_MMAP_MAX_", "GLIBC_TUNABLES")
OPT_OUT = "SENTRYCAM_KEEP_FREED_MEMORY"


def keep_freed_memory(environ: dict[str, str] | None = None) -> str:
    """Fix glibc's thresholds as the module docstring says; returns what was done, for the run's
    config: ``"kept"``, or why not (``"user tuning"``, ``"opted out"``, ``"not glibc"``)."""
    environ = os.environ if environ is None else environ
    if environ.get(OPT_OUT, "").strip().lower() in ("0", "false", "no", "off"):
        return "opted out"
    if any(name in environ for name in USER_TUNING):
        return "user tuning"
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return "not glibc"
    if not (mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
            and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)):
        log.info("glibc refused the malloc thresholds; capture may cost more page faults")
        return "refused"
    return "kept"


def _glibc_mallopt():
    """glibc's ``mallopt(int, int) -> int``, or None where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # only glibc has it (musl has mallopt but ignores it)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt
