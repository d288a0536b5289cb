"""Where the server projects: `sentrycam serve --projector` and `--projector-workers`."""

from __future__ import annotations

import pytest

from sentrycam.backend.cli import _parser, serve_settings
from sentrycam.backend.cli_errors import CLIError
from sentrycam.backend.projection_engines import default_workers


def _settings(tmp_path, *flags: str):
    return serve_settings(_parser().parse_args(["serve", "--db", str(tmp_path / "x.duckdb"),
                                                *flags]))


def test_the_pool_is_the_default_sized_to_the_machine(tmp_path, monkeypatch):
    monkeypatch.delenv("SENTRYCAM_PROJECTOR", raising=False)
    settings = _settings(tmp_path)
    assert (settings.projector, settings.projector_engine) == (True, "pool")
    assert settings.projector_workers is None and 1 <= default_workers() <= 4


@pytest.mark.parametrize("flag, projector, engine", [
    ("thread", True, "thread"), ("ray", True, "ray"), ("pool", True, "pool"),
    ("off", False, "pool")])
def test_the_projector_flag_picks_the_engine_or_none(tmp_path, monkeypatch, flag, projector,
                                                     engine):
    monkeypatch.setenv("SENTRYCAM_PROJECTOR", "off")  # a flag given wins over the environment
    monkeypatch.delenv("SENTRYCAM_PROJECTOR_ENGINE", raising=False)
    settings = _settings(tmp_path, "--projector", flag, "--projector-workers", "3")
    assert (settings.projector, settings.projector_engine) == (projector, engine)
    assert settings.projector_workers == 3


def test_the_engine_and_pool_size_come_from_the_environment_unless_flagged(tmp_path,
                                                                           monkeypatch):
    monkeypatch.setenv("SENTRYCAM_PROJECTOR_ENGINE", "thread")
    monkeypatch.setenv("SENTRYCAM_PROJECTOR_WORKERS", "2")
    settings = _settings(tmp_path)
    assert (settings.projector_engine, settings.projector_workers) == ("thread", 2)
    assert _settings(tmp_path, "--projector", "pool").projector_engine == "pool"


def test_a_pool_of_no_workers_is_refused_with_the_reason(tmp_path):
    with pytest.raises(CLIError, match="greater than or equal to 1"):
        _settings(tmp_path, "--projector-workers", "0")


def test_an_unknown_engine_is_refused_by_the_parser(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _settings(tmp_path, "--projector", "gpu")
    assert "invalid choice: 'gpu'" in capsys.readouterr().err
