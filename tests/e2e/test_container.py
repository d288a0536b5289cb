"""The team deployment, built and run: the Dockerfile's image serves a run streamed from this
machine, and its data volume keeps the run across a restart of the container.

There is no Docker daemon here: ``scripts/container.sh`` builds the image with buildah (chroot
isolation, vfs storage) on a Debian base it makes once with debootstrap, and each container runs
the image's own command with ``buildah run``, which shares the host's network. That needs root
and buildah/debootstrap (``make container-tools``): without them the test skips on a developer
machine and FAILS when ``CI`` is set, so CI cannot pass it by skipping. The time of each stage
(base image, build, start) is logged.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from sentrycam import capture
from tests.prerequisites import missing
from tests.server_process import free_port, healthy

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
BUILDAH = ("buildah", "--storage-driver", "vfs")
#: A tag of its own, removed after the test: every vfs image holds a full copy of its layers.
IMAGE = "localhost/sentrycam:container-test"
#: On a fresh machine: debootstrap up to ~5 min, the build ~2-4 min, the rest ~1 min.
BUILD_TIMEOUT_S = 720.0
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 60.0
WRITE_TOKEN = "container-test-write-token"
READ_TOKEN = "container-test-read-token"
STEPS = 40
EVERY = 10

pytestmark = [pytest.mark.slow, pytest.mark.container,
              pytest.mark.timeout(BUILD_TIMEOUT_S + 180)]


def _missing_prerequisite() -> str | None:
    if os.geteuid() != 0:
        return "the container test runs as root (buildah's chroot isolation)"
    missing = [tool for tool in ("buildah", "debootstrap") if shutil.which(tool) is None]
    return f"{' and '.join(missing)} missing (make container-tools)" if missing else None


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    """The image built from the repository's Dockerfile by scripts/container.sh."""
    reason = _missing_prerequisite()
    if reason is not None:
        missing(reason, "build and run the container")
    started = time.monotonic()
    built = subprocess.run([str(ROOT / "scripts" / "container.sh")], capture_output=True,
                           text=True, timeout=BUILD_TIMEOUT_S,
                           env={**os.environ, "SENTRYCAM_IMAGE": IMAGE})
    for line in built.stderr.splitlines():
        if line.startswith("container.sh:"):
            log.info("%s", line)  # the script's stages and their times
    assert built.returncode == 0, f"the image build failed:\n{built.stderr[-4000:]}"
    assert built.stdout.strip() == IMAGE
    log.info("base image and build: %.0f s", time.monotonic() - started)
    try:
        yield IMAGE
    finally:
        subprocess.run([*BUILDAH, "rmi", IMAGE], capture_output=True, timeout=120)


def _image_config(image: str) -> dict:
    """The image's Docker config (Cmd, User, Healthcheck, Volumes...)."""
    inspected = subprocess.run([*BUILDAH, "inspect", "--type", "image", image],
                               capture_output=True, text=True, check=True, timeout=60)
    return json.loads(inspected.stdout)["Docker"]["config"]


@dataclass
class Container:
    """A ``buildah run`` of the image's command on a loopback port, with ``data`` as /data;
    everything it prints goes to ``log_path``."""

    image: str
    data: Path
    log_path: Path
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    mounts: dict[Path, str] = field(default_factory=dict)
    container_id: str | None = None
    process: subprocess.Popen | None = None
    server_pid: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def create(self) -> "Container":
        started = time.monotonic()
        self.container_id = subprocess.run(
            [*BUILDAH, "from", "--quiet", self.image], capture_output=True, text=True,
            check=True, timeout=600).stdout.strip()
        # buildah run mounts an anonymous volume of its own on each of the image's VOLUMEs,
        # over a --volume bind to the same path (buildah 1.28): drop the image's /data volume
        # from this container so that the bind is what the server sees.
        subprocess.run([*BUILDAH, "config", "--volume", "/data-", self.container_id],
                       check=True, timeout=60)
        log.info("container created from the image in %.0f s", time.monotonic() - started)
        return self

    def run_command(self, command: list[str], env: dict[str, str] | None = None) -> list[str]:
        """``buildah run`` of ``command`` in this container, with its volumes and environment
        (``env`` instead of the container's own when given)."""
        assert self.container_id is not None, "create() the container first"
        volumes = [f"{self.data}:/data", *(f"{host}:{inside}:ro"
                                           for host, inside in self.mounts.items())]
        options = [arg for volume in volumes for arg in ("--volume", volume)]
        options += [arg for name, value in (self.env if env is None else env).items()
                    for arg in ("--env", f"{name}={value}")]
        return [*BUILDAH, "run", "--isolation", "chroot", *options, self.container_id, "--",
                *command]

    def start(self) -> "Container":
        """Run the image's own command (binding 0.0.0.0 on port 8765), kept on loopback and
        moved to a free port: ``buildah run`` shares the host's network."""
        command = [*_image_config(self.image)["Cmd"], "--host", "127.0.0.1",
                   "--port", str(self.port)]
        started = time.monotonic()
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(self.run_command(command), stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = started + START_TIMEOUT_S
        while not healthy(self.url):
            assert self.process.poll() is None, f"the server exited:\n{self.log_tail()}"
            assert time.monotonic() < deadline, f"no /health in time:\n{self.log_tail()}"
            time.sleep(0.5)
        log.info("server in the container healthy after %.0f s", time.monotonic() - started)
        self.server_pid = httpx.get(f"{self.url}/health", timeout=10).json()["pid"]
        return self

    def stop(self) -> None:
        """SIGTERM to the server, as ``docker stop`` sends it (buildah, signalled itself, kills
        its child at once); SIGKILL to the whole group if it hangs. With chroot isolation the
        server is a process of this machine: its /health names its pid."""
        if self.process is None or self.process.poll() is not None:
            return
        if self.server_pid is not None and self._is_our_server(self.server_pid):
            os.kill(self.server_pid, signal.SIGTERM)
        else:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT_S)

    def _is_our_server(self, pid: int) -> bool:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return b"serve" in argv and str(self.port).encode() in argv

    def remove(self) -> None:
        self.stop()
        if self.container_id is not None:
            subprocess.run([*BUILDAH, "rm", self.container_id], capture_output=True, timeout=120)

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _stream_a_run(trainer, url: str) -> str:
    """Train the seeded digits MLP for STEPS steps with capture streaming to ``url``."""
    run = capture.attach(trainer.model, probe=(trainer.data.x_train, trainer.data.y_train),
                         criterion=trainer.criterion, optimizer=trainer.optimizer, url=url,
                         token=WRITE_TOKEN, every=EVERY, overhead_budget=None)
    trainer.train(STEPS)
    run.detach()
    assert run.counters().acked > 0 and run.counters().spooled == 0
    return run.run_id


def _read_run(url: str, run_id: str) -> tuple[dict, dict]:
    """The run's summary and its loss curve, read with the read token."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {READ_TOKEN}"},
                      timeout=30) as client:
        runs = client.get("/api/runs")
        assert runs.status_code == 200, runs.text
        summary = next(run for run in runs.json() if run["run_id"] == run_id)
        scalars = client.get(f"/api/runs/{run_id}/scalars", params={"names": "loss"})
        assert scalars.status_code == 200, scalars.text
    return summary, scalars.json()


def _assert_tokens_scoped(url: str) -> None:
    """Without a token nothing but /health answers; the read token reads but cannot write."""
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200
    assert httpx.get(f"{url}/api/runs", timeout=10).status_code == 401
    refused = httpx.post(f"{url}/api/alerts/1/acknowledge", timeout=10,
                         headers={"Authorization": f"Bearer {READ_TOKEN}"})
    assert refused.status_code == 403, refused.text
    ingest = httpx.get(f"{url}/ws/ingest", timeout=10, headers={
        "Authorization": f"Bearer {READ_TOKEN}", "Connection": "Upgrade",
        "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert ingest.status_code == 403, ingest.text


def test_the_image_serves_a_streamed_run_and_keeps_it_across_a_restart(
        image, trainer, in_tmp_cwd):
    config = _image_config(image)
    assert config["User"] not in ("", "0", "root"), "the server must not run as root"
    assert "/health" in " ".join(config["Healthcheck"]["Test"])
    assert "/data" in config["Volumes"]

    data = in_tmp_cwd / "data"
    data.mkdir()
    os.chown(data, 1000, 1000)  # the image's user, as a Docker named volume would be
    read_token_file = in_tmp_cwd / "read-token"
    read_token_file.write_text(READ_TOKEN + "\n")
    read_token_file.chmod(0o644)
    # The write token by environment, the read token by file (as a Docker secret would be).
    env = {"SENTRYCAM_TOKEN": WRITE_TOKEN, "SENTRYCAM_PROJECTOR": "off",
           "SENTRYCAM_READ_TOKEN_FILE": "/run/secrets/sentrycam-read-token"}
    mounts = {read_token_file: "/run/secrets/sentrycam-read-token"}
    first = Container(image, data, in_tmp_cwd / "first.log", env=env, mounts=mounts)
    second = Container(image, data, in_tmp_cwd / "second.log", env=env, mounts=mounts)
    try:
        first.create()
        unprotected = subprocess.run(first.run_command(config["Cmd"], env={}),
                                     capture_output=True, text=True, timeout=300)
        assert unprotected.returncode != 0
        assert "refusing to bind '0.0.0.0' without a token" in unprotected.stderr
        first.start()
        _assert_tokens_scoped(first.url)
        run_id = _stream_a_run(trainer, first.url)
        summary, loss = _read_run(first.url, run_id)
        assert summary["status"] == "finished" and summary["last_step"] == STEPS - 1
        assert summary["n_snapshots"] == STEPS // EVERY
        assert loss["step"] == list(range(STEPS))

        first.stop()
        assert not Path(f"/proc/{first.server_pid}").exists(), "the server outlived buildah"
        assert not _listening(first.port)
        assert (data / "sentrycam.duckdb").stat().st_uid == 1000

        second.create().start()
        assert _read_run(second.url, run_id) == (summary, loss)
        server_log = first.log_tail() + second.log_tail()
        assert WRITE_TOKEN not in server_log and READ_TOKEN not in server_log
    finally:
        first.remove()
        second.remove()
