"""The command line's run names (``--run``: id, unique id prefix or name), its ``inspect``
layers, ``--version`` and ``--help`` (issue 16, point 5)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import sentrycam
from sentrycam.backend.cli import main
from sentrycam.backend.store import Store
from sentrycam.backend.testing import serve_in_thread
from sentrycam.protocol.messages import LayerStats, RunStart

ALPHA = "aaaa1111" + "0" * 24
ALPHA_TWIN = "aaaa2222" + "0" * 24
BETA = "bbbb3333" + "0" * 24
CAPTURED = {"layers": [{"name": "fc:input"}, {"name": "features.3"}]}
SUBCOMMANDS = ("serve", "demo", "inspect", "alerts", "export", "compact", "sync", "stop")


@pytest.fixture
def db(tmp_path):
    """Three runs: ``alpha`` (ALPHA), ``twin`` (ALPHA_TWIN, same 4-character prefix) and a
    second run named ``twin`` (BETA); ALPHA has stats of two captured and one telemetry layer."""
    path = tmp_path / "runs.duckdb"
    with Store(path) as store:
        store.write([(1, RunStart(run_id=ALPHA, name="alpha", started_at=1.0, config=CAPTURED)),
                     (2, LayerStats(run_id=ALPHA, step=0, layers=["fc", "fc:input",
                                                                  "features.3"],
                                    stats=["grad_norm"], values=np.ones((3, 1), np.float32)))])
        store.write([(1, RunStart(run_id=ALPHA_TWIN, name="twin", started_at=2.0))])
        store.write([(1, RunStart(run_id=BETA, name="twin", started_at=3.0))])
    return path


def _inspect(capsys, *args: str) -> tuple[int, list | str]:
    code = main(["inspect", *args, "--json"])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else err)


@pytest.mark.parametrize("given", [ALPHA, "aaaa1", "alpha"])
def test_a_run_is_found_by_id_unique_prefix_or_name(db, capsys, given):
    code, runs = _inspect(capsys, "--db", str(db), "--run", given)
    assert code == 0 and [run["run_id"] for run in runs] == [ALPHA]


def test_an_ambiguous_prefix_or_name_lists_the_candidates(db, capsys):
    code, err = _inspect(capsys, "--db", str(db), "--run", "aaaa")
    assert code == 2
    assert "'aaaa' matches 2 runs: aaaa22220000 (twin" in err and "aaaa11110000 (alpha" in err
    code, err = _inspect(capsys, "--db", str(db), "--run", "twin")
    assert code == 2 and "'twin' matches 2 runs" in err and "bbbb33330000 (twin" in err
    code, err = _inspect(capsys, "--db", str(db), "--run", "zzz")
    assert code == 2 and "no run matches 'zzz'" in err and "aaaa11110000 (alpha" in err


def test_alerts_and_export_take_the_same_names(db, tmp_path, capsys):
    assert main(["alerts", "--db", str(db), "--run", "alpha", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["alerts", "--db", str(db), "--run", "aaaa"]) == 2
    assert "matches 2 runs" in capsys.readouterr().err
    assert main(["export", "--db", str(db), "--run", "bbbb", "--out", str(tmp_path / "x")]) == 0
    assert any((tmp_path / "x").glob("*.parquet"))


def test_inspect_separates_captured_from_telemetry_layers(db, capsys):
    code, runs = _inspect(capsys, "--db", str(db), "--run", "alpha")
    assert code == 0 and "layers" not in runs[0]
    assert runs[0]["captured_layers"] == ["fc:input", "features.3"]
    assert runs[0]["telemetry_layers"] == ["fc"]
    assert main(["inspect", "--db", str(db), "--run", "alpha"]) == 0
    table = capsys.readouterr().out
    assert "captured layers (maps, activation statistics): fc:input, features.3" in table
    assert "telemetry-only layers (parameter norms, updates): fc" in table


def test_a_server_resolves_names_the_same_way(db, make_settings, capsys):
    with serve_in_thread(make_settings(db_path=db)) as server:
        code, runs = _inspect(capsys, "--url", server.url, "--run", "aaaa1")
        assert code == 0 and runs[0]["run_id"] == ALPHA
        assert runs[0]["telemetry_layers"] == ["fc"]
        code, err = _inspect(capsys, "--url", server.url, "--run", "twin")
        assert code == 2 and "'twin' matches 2 runs" in err
        assert main(["alerts", "--url", server.url, "--run", "bbbb", "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == []


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"sentrycam {sentrycam.__version__}"


@pytest.mark.parametrize("command", [None, *SUBCOMMANDS])
def test_help_is_plain_text(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"] if command else ["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: sentrycam")
    for markup in ("``", "`", ":class:", ":func:", ":mod:", ".. "):
        assert markup not in text, f"{markup!r} in the help of {command or 'sentrycam'}"
    if command:
        assert len(text.split("\n\n")[1].strip()) > 10, "each command says what it does"
