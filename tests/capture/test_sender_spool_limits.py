"""What the trainer's transport does when it cannot keep what it could not send: no usable spool
folder during an outage, and a disk that fills up while spooling (a real file-size limit in a
child process). Both drop and count, never block training or raise."""

from __future__ import annotations

import subprocess
import sys

from sentrycam.capture.sender import WebSocketTransport
from sentrycam.capture.spool import Spool
from sentrycam.protocol import wire
from sentrycam.protocol.messages import Scalars
from tests.server_process import free_port

RUN = "0123456789abcdef0123456789abcdef"


def _scalars(step: int) -> Scalars:
    return Scalars(RUN, step, 1000.0 + step, {"loss": 1.0 / (step + 1), "lr": 0.1})


def test_without_a_usable_spool_an_outage_drops_and_counts(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    transport = WebSocketTransport(f"http://127.0.0.1:{free_port()}", RUN, blocker)
    assert not transport.spool_available
    assert all(transport.send(_scalars(i)) for i in range(20))
    transport.close(timeout=5)
    counters = transport.counters()
    assert counters.dropped == 20 and counters.spooled == 0 and counters.queue_depth == 0


_SPOOL_FULL_SCRIPT = """
import resource, signal, socket, sys
from sentrycam.protocol.messages import Scalars
from sentrycam.capture.sender import WebSocketTransport
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (20000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
t = WebSocketTransport(f"http://127.0.0.1:{port}", "run", sys.argv[1], segment_bytes=10**9)
for i in range(200):
    t.send(Scalars("run", i, 0.0, {"loss": float(i), "pad": 0.0}))
t.close(timeout=10)
c = t.counters()
print(c.spooled, c.dropped, c.errors)
"""


def test_a_full_disk_drops_and_counts_what_cannot_be_spooled(tmp_path):
    out = subprocess.run([sys.executable, "-c", _SPOOL_FULL_SCRIPT, str(tmp_path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    spooled, dropped, _errors = map(int, out.stdout.split())
    assert spooled > 0 and dropped > 0 and spooled + dropped == 200
    records = list(Spool(tmp_path / "run").records())
    assert len(records) == spooled
    assert [wire.decode(frame)[1].step for _, frame in records] == sorted(
        wire.decode(frame)[1].step for _, frame in records)
