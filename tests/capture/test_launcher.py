"""The embedded-server launcher against the real ``python -m sentrycam serve``."""

from __future__ import annotations

import json
import os
import threading
import urllib.request
from pathlib import Path

import pytest

from sentrycam.capture.launcher import (default_db_path, ensure_local_server, running_server_url,
                                        stop_local_server)
from sentrycam.protocol.server_info import info_file_path, read_info_file


def _health(url: str) -> dict:
    with urllib.request.urlopen(url + "/health", timeout=5) as response:
        return json.loads(response.read())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z")


@pytest.fixture
def db_path(tmp_path):
    """A database path whose server, if any test left one, is stopped at the end."""
    path = tmp_path / "runs" / "sentrycam.duckdb"
    yield path
    stop_local_server(path, timeout=20)


def test_default_db_path_is_in_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert default_db_path() == tmp_path / "sentrycam-runs" / "sentrycam.duckdb"


@pytest.mark.slow  # starts a server process
def test_starts_a_server_then_reuses_it_and_stop_ends_it(db_path):
    assert running_server_url(db_path) is None
    url = ensure_local_server(db_path, timeout=60, idle_timeout_s=600)
    assert running_server_url(db_path) == url
    assert url.startswith("http://127.0.0.1:")
    health = _health(url)
    assert Path(health["db"]).resolve() == db_path.resolve()
    info = read_info_file(db_path)
    assert info["pid"] == health["pid"] and info["url"] == url
    assert (db_path.parent / "server.log").exists()
    # The embedded server yields the CPU to the trainer it watches.
    assert os.getpriority(os.PRIO_PROCESS, info["pid"]) > os.getpriority(os.PRIO_PROCESS, 0)

    assert ensure_local_server(db_path, timeout=60) == url
    assert _health(url)["pid"] == info["pid"]  # the same process, not a second one

    assert stop_local_server(db_path) is True
    assert not _alive(info["pid"])
    assert not info_file_path(db_path).exists()
    assert running_server_url(db_path) is None
    assert stop_local_server(db_path) is False


@pytest.mark.slow  # starts a server process
def test_two_trainers_racing_get_one_server(db_path):
    urls: list[str] = []
    errors: list[BaseException] = []

    def trainer() -> None:
        try:
            urls.append(ensure_local_server(db_path, timeout=60, idle_timeout_s=600))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=trainer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert len(urls) == 2 and urls[0] == urls[1]
    assert _health(urls[0])["pid"] == read_info_file(db_path)["pid"]


@pytest.mark.slow  # starts a server process
def test_a_directory_as_database_gives_a_runtime_error_with_the_server_log(tmp_path):
    bad = tmp_path / "not-a-file"
    bad.mkdir()
    with pytest.raises(RuntimeError) as caught:
        ensure_local_server(bad, timeout=60)
    message = str(caught.value)
    assert str(bad) in message and "server.log" in message
    log_text = (tmp_path / "server.log").read_text().strip()
    assert log_text and log_text.splitlines()[-1] in message  # the log's tail is in the error
    assert not info_file_path(bad).exists()


@pytest.mark.slow  # starts a server process
def test_a_stale_info_file_is_not_reused_and_stop_cleans_it(db_path):
    db_path.parent.mkdir(parents=True)
    stale = {"pid": 2**22 + 12345, "url": "http://127.0.0.1:9", "db": str(db_path)}
    info_file_path(db_path).write_text(json.dumps(stale))
    assert stop_local_server(db_path) is False
    assert not info_file_path(db_path).exists()
    info_file_path(db_path).write_text(json.dumps(stale))
    url = ensure_local_server(db_path, timeout=60, idle_timeout_s=600)
    assert url != stale["url"] and _health(url)["status"] == "ok"
