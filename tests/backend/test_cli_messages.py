"""What the command line tells its user when something is wrong: the text on stderr and a
nonzero exit, never a traceback (issue 16, point 4)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from sentrycam.backend.cli import main
from sentrycam.backend.testing import serve_in_thread
from sentrycam.capture.sender import WebSocketTransport
from sentrycam.protocol.messages import RunStart
from tests.server_process import free_port

WRITE = "write-token-for-the-sync-test"


def test_serve_refuses_a_database_folder_that_does_not_exist(tmp_path, capsys):
    missing = tmp_path / "no" / "such" / "dir"
    assert main(["serve", "--db", str(missing / "x.duckdb")]) == 2
    err = capsys.readouterr().err
    assert f"the folder {missing} does not exist" in err and "--create-dirs" in err
    assert not (tmp_path / "no").exists()
    (tmp_path / "file").write_text("not a folder")
    assert main(["serve", "--db", str(tmp_path / "file" / "x.duckdb")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_serve_creates_the_folder_when_asked(tmp_path, caplog):
    db = tmp_path / "new" / "x.duckdb"
    caplog.set_level("INFO", logger="sentrycam.cli")
    assert main(["serve", "--db", str(db), "--create-dirs", "--port", "0",
                 "--idle-timeout", "0.5"]) == 0
    assert db.exists()
    assert "this server stops itself after 0.5 idle seconds" in caplog.text


def test_stop_on_a_path_without_database_exits_nonzero(tmp_path, capsys):
    assert main(["stop", "--db", str(tmp_path / "typo.duckdb")]) == 2
    assert f"no database file at {tmp_path / 'typo.duckdb'}" in capsys.readouterr().err
    (tmp_path / "idle.duckdb").write_bytes(b"")
    assert main(["stop", "--db", str(tmp_path / "idle.duckdb")]) == 0
    assert "nothing to stop" in capsys.readouterr().out


_PARENT = textwrap.dedent("""
    import sys, time
    from sentrycam.capture import launcher
    from sentrycam.protocol.server_info import read_info_file
    launcher.ensure_local_server(sys.argv[1])
    print(read_info_file(sys.argv[1])["pid"], flush=True)
    time.sleep(300)  # never reaps its child: a stopped server stays its zombie
""")


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0]
    except OSError:
        return "gone"


@pytest.mark.slow
def test_stop_does_not_wait_for_a_server_that_exited_as_a_zombie(tmp_path):
    db = tmp_path / "runs.duckdb"
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, str(db)], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    try:
        server_pid = int(parent.stdout.readline())
        stopped = subprocess.run([sys.executable, "-m", "sentrycam", "stop", "--db", str(db)],
                                 capture_output=True, text=True, timeout=120)
        assert stopped.returncode == 0, stopped.stderr
        assert f"server stopped ({db})" in stopped.stdout
        assert "killing" not in stopped.stderr and "did not stop" not in stopped.stderr
        assert _state(server_pid) == "Z", "the scenario: the exited server awaits its parent"
        again = subprocess.run([sys.executable, "-m", "sentrycam", "stop", "--db", str(db)],
                               capture_output=True, text=True, timeout=120)
        assert again.returncode == 0 and "nothing to stop" in again.stdout
    finally:
        parent.kill()
        parent.wait(30)


@pytest.mark.slow
def test_stop_ends_a_waiting_demo_at_once(tmp_path):
    db = tmp_path / "demo.duckdb"
    demo = subprocess.Popen([sys.executable, "-m", "sentrycam", "demo", "--steps", "20",
                             "--db", str(db), "--no-browser"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        for line in demo.stdout:  # trains, then waits with the dashboard up
            if line.startswith("training done"):
                break
        stopped = subprocess.run([sys.executable, "-m", "sentrycam", "stop", "--db", str(db)],
                                 capture_output=True, text=True, timeout=120)
        assert stopped.returncode == 0 and "server stopped" in stopped.stdout, stopped.stderr
        assert "killing" not in stopped.stderr
        assert demo.wait(60) == 0
        assert demo.stdout.read().strip() == "the server stopped; the demo exits"
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(30)


def _spool_one_run(spool) -> str:
    """A run whose RunStart waits in ``spool`` (sent while nothing listened)."""
    run_id = uuid.uuid4().hex
    transport = WebSocketTransport(f"http://127.0.0.1:{free_port()}", run_id, spool,
                                   open_timeout=0.5)
    transport.send(RunStart(run_id=run_id, name="spooled", started_at=time.time()))
    transport.close(timeout=2.0)
    assert any((spool / run_id).glob("*.seg"))
    return run_id


def test_sync_names_a_missing_or_wrong_token_and_keeps_the_spool(make_settings, tmp_path,
                                                                  capsys):
    spool = tmp_path / "spool"
    run_id = _spool_one_run(spool)
    with serve_in_thread(make_settings(token=WRITE)) as server:
        assert main(["sync", "--spool", str(spool), "--url", server.url]) == 2
        err = capsys.readouterr().err
        assert "requires its write token and none was given" in err
        assert "SENTRYCAM_TOKEN" in err and "Traceback" not in err

        assert main(["sync", "--spool", str(spool), "--url", server.url,
                     "--token", "not-the-token"]) == 2
        err = capsys.readouterr().err
        assert "refused the token (401)" in err and "does not match" in err
        assert "not-the-token" not in err
        assert any((spool / run_id).glob("*.seg")), "nothing left the spool"

        assert main(["sync", "--spool", str(spool), "--url", server.url, "--token", WRITE]) == 0
        assert "1 spooled messages stored" in capsys.readouterr().out
        server.wait_written()
        assert server.store.run_summaries(run_id)[0]["name"] == "spooled"


def test_sync_to_nothing_listening_is_a_message_not_a_traceback(tmp_path, capsys):
    spool = tmp_path / "spool"
    _spool_one_run(spool)
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["sync", "--spool", str(spool), "--url", url]) == 2
    assert f"cannot reach a sentrycam server at {url}" in capsys.readouterr().err
    assert main(["sync", "--spool", str(spool), "--url", "localhost:8765"]) == 2
    assert "must look like http://host:port" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--steps", "--every"])
def test_demo_refuses_a_schedule_below_one_step(option, tmp_path, capsys):
    assert main(["demo", option, "0", "--db", str(tmp_path / "d.duckdb"), "--no-browser"]) == 2
    assert f"{option} must be at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "d.duckdb").exists()


def test_serve_takes_port_host_and_idle_timeout_from_the_environment_unless_flagged(
        tmp_path, monkeypatch):
    from sentrycam.backend.cli import _parser, serve_settings

    monkeypatch.setenv("SENTRYCAM_PORT", "9123")
    monkeypatch.setenv("SENTRYCAM_IDLE_TIMEOUT_S", "60")
    db = str(tmp_path / "x.duckdb")
    from_env = serve_settings(_parser().parse_args(["serve", "--db", db]))
    assert (from_env.host, from_env.port, from_env.idle_timeout_s) == ("127.0.0.1", 9123, 60.0)
    flagged = serve_settings(_parser().parse_args(["serve", "--db", db, "--port", "0",
                                                   "--idle-timeout", "0"]))
    assert (flagged.port, flagged.idle_timeout_s) == (0, 0.0)
