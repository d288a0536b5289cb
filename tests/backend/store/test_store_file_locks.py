"""Opening the DuckDB store file: a closed store says so, a file another process holds gives an
error naming the file and what to do (a real second process holds it)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sentrycam.backend.store import Store, StoreClosedError, StoreLockedError
from sentrycam.protocol.messages import Scalars

RUN = "a" * 32


def test_a_closed_store_says_so(tmp_path):
    store = Store(tmp_path / "runs.duckdb")
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreClosedError, match="closed"):
        store.run_summaries()
    with pytest.raises(StoreClosedError, match="closed"):
        store.write([(0, Scalars(RUN, 0, 1.0, {"x": 1.0}))])


_HOLD_FILE = """
import sys
from sentrycam.backend.store import Store
store = Store(sys.argv[1])
print("ready", flush=True)
sys.stdin.read()
store.close()
"""


def test_a_file_held_by_another_process_gives_a_clear_error(tmp_path):
    path = tmp_path / "held.duckdb"
    with subprocess.Popen([sys.executable, "-c", _HOLD_FILE, str(path)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as holder:
        try:
            assert holder.stdout.readline().strip() == "ready"
            for read_only in (False, True):
                with pytest.raises(StoreLockedError) as info:
                    Store(path, read_only=read_only)
                message = str(info.value)
                assert str(path) in message
                assert "sentrycam server probably holds it" in message and "--url" in message
        finally:
            holder.stdin.close()  # the holder reads stdin to its end, then closes the store
            holder.wait(timeout=60)
    assert holder.returncode == 0
    with Store(path, read_only=True) as store:  # free again once the holder has gone
        assert store.run_summaries() == []
