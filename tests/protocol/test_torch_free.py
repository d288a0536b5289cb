"""Reading a file needs no torch: the protocol package and the ``inspect``, ``alerts`` and
``sync`` commands load no torch module (each runs in a fresh interpreter, so nothing imported
here counts)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import time

import pytest

import sentrycam.protocol
from sentrycam.backend.store import Store
from sentrycam.protocol.messages import RunStart, Scalars

NO_TORCH = ("assert not [m for m in sys.modules if m == 'torch' or m.startswith('torch.')], "
            "sorted(m for m in sys.modules if m.split('.')[0] == 'torch')[:5]")
PROTOCOL_MODULES = sorted(f"sentrycam.protocol.{m.name}"
                          for m in pkgutil.iter_modules(sentrycam.protocol.__path__))


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)


def test_every_protocol_module_imports_without_torch():
    assert {"sentrycam.protocol.messages", "sentrycam.protocol.wire",
            "sentrycam.protocol.validation"} <= set(PROTOCOL_MODULES)
    result = _run(f"import sys; import {', '.join(PROTOCOL_MODULES)}; {NO_TORCH}")
    assert result.returncode == 0, result.stderr


@pytest.fixture
def db_with_one_run(tmp_path):
    path = tmp_path / "runs.duckdb"
    with Store(path) as store:
        store.write([(0, RunStart("cli0run", "cli-check", 1.0)),
                     (1, Scalars("cli0run", 0, 2.0, {"loss": 0.5}))])
    return path


@pytest.mark.parametrize("command", ["inspect", "alerts", "sync"])
def test_reading_a_database_from_the_command_line_loads_no_torch(command, db_with_one_run,
                                                                 record_property):
    where = (["--spool", str(db_with_one_run.parent), "--url", "http://127.0.0.1:9"]
             if command == "sync" else ["--db", str(db_with_one_run)])
    code = ("import sys\nfrom sentrycam.backend.cli import main\n"
            f"status = main({[command, *where]!r})\n"
            f"assert status == 0, status\n{NO_TORCH}")
    started = time.perf_counter()
    result = _run(code)
    record_property(f"{command}_wall_s", round(time.perf_counter() - started, 3))
    assert result.returncode == 0, result.stderr
    expected = {"inspect": "cli-check", "alerts": "no alerts",
                "sync": "0 spooled messages"}[command]  # the folder holds no spooled run
    assert expected in result.stdout
