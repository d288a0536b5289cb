"""attach keeps the memory the process frees for reuse (glibc), unless the user chose otherwise.

Each case runs in a fresh interpreter (the thresholds are process-wide and cannot be read back):
it asks glibc's malloc for a 24 MiB block, then a 28 MiB one (freeing the first raised glibc's
adaptive threshold to 24 MiB), and tells whether each lies in the ``[heap]`` mapping of
/proc/self/maps (kept thresholds) or in a mapping of its own (glibc's defaults, where it is
unmapped when freed and faulted in again next time).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="glibc's malloc on Linux only")

PROBE = textwrap.dedent("""
    import ctypes, json, sys
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]

    def in_heap(mib):
        block = libc.malloc(mib * 2**20)
        try:
            for line in open("/proc/self/maps"):
                span, *rest = line.split()
                low, high = (int(x, 16) for x in span.split("-"))
                if low <= block < high:
                    return rest[-1] == "[heap]"
            return False
        finally:
            libc.free(block)

    before = in_heap(24)
    result = None
    if sys.argv[1] == "direct":
        from sentrycam.capture.allocator import keep_freed_memory
        result = keep_freed_memory()
    elif sys.argv[1] == "attach":
        import torch
        from sentrycam import capture
        from sentrycam.capture.transport import MemoryTransport
        transport = MemoryTransport()
        capture.attach(torch.nn.Linear(4, 2), transport=transport).detach()
        result = transport.of_kind("run_start")[0].config["freed_memory"]
    print(json.dumps({"before": before, "after": in_heap(28), "result": result}))
""")


def _probe(mode: str, **env: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    environ.pop("GLIBC_TUNABLES", None)
    environ.pop("SENTRYCAM_KEEP_FREED_MEMORY", None)
    environ.update(env)
    done = subprocess.run([sys.executable, "-c", PROBE, mode], env=environ, text=True,
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_freed_memory_stays_in_the_heap():
    seen = _probe("direct")
    assert seen["before"] is False  # glibc's default: a 24 MiB block gets its own mapping
    assert seen == {"before": False, "after": True, "result": "kept"}


def test_the_users_own_malloc_tuning_wins():
    seen = _probe("direct", MALLOC_TOP_PAD_="0")
    assert seen == {"before": False, "after": False, "result": "user tuning"}


def test_opting_out_leaves_glibc_as_it_is():
    seen = _probe("direct", SENTRYCAM_KEEP_FREED_MEMORY="0")
    assert seen == {"before": False, "after": False, "result": "opted out"}


def test_attach_keeps_freed_memory_and_says_so_in_the_run_config():
    seen = _probe("attach")
    assert seen["after"] is True and seen["result"] == "kept"
    assert _probe("attach", SENTRYCAM_KEEP_FREED_MEMORY="off")["result"] == "opted out"
