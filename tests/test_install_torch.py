"""`make setup`'s torch step (scripts/install-torch.sh) on a machine without this one's local
wheel folder: pip's configuration is hidden (no find-links, no global constraint), the machine's
package index stands in for PyPI (it has torch's dependencies but no torch), and a folder index
stands in for PyPI's CPU wheel index. pip resolves with --dry-run: nothing is installed."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "install-torch.sh"
VERSION = next(line.split("==")[1] for line in (ROOT / "constraints.txt").read_text().split("\n")
               if line.startswith("torch=="))

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")]


def _local_cpu_wheel() -> Path | None:
    """This machine's CPU torch wheel for this Python, in pip's find-links folder."""
    folder = os.environ.get("PIP_FIND_LINKS", "/opt/wheels")
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    found = sorted(Path(folder).glob(f"torch-{VERSION}+cpu-{tag}-*.whl"))
    return found[-1] if found else None


def _pypi_stand_in() -> str | None:
    """A file:// package index configured on this machine (PyPI itself where there is none)."""
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], text=True,
                            capture_output=True).stdout
    for line in listed.splitlines():
        if "index-url" in line:
            for url in line.split("=", 1)[1].strip("'").split():
                if url.startswith("file://"):
                    return url
    return None


def _install(tmp_path: Path, cpu_index: str) -> tuple[subprocess.CompletedProcess, Path]:
    report = tmp_path / "report.json"
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("PIP_") or key == "PIP_CERT"}
    env.update(PIP_CONFIG_FILE=os.devnull, TORCH_INDEX=cpu_index, PIP_RETRIES="0")
    index = _pypi_stand_in()
    if index is not None:
        env["PIP_INDEX_URL"] = index
    done = subprocess.run([str(SCRIPT), sys.executable, "--dry-run", "--ignore-installed",
                           "--report", str(report)], env=env, text=True, capture_output=True,
                          timeout=600)
    return done, report


def test_the_cpu_build_comes_from_the_cpu_index_named_in_constraints(tmp_path):
    wheel = _local_cpu_wheel()
    if wheel is None:
        pytest.skip(f"no local torch {VERSION}+cpu wheel to serve as the CPU index")
    page = tmp_path / "cpu" / "torch" / "index.html"
    page.parent.mkdir(parents=True)
    page.write_text(f'<html><body><a href="{wheel.as_uri()}">{wheel.name}</a></body></html>')
    done, report = _install(tmp_path, (tmp_path / "cpu").as_uri())
    assert done.returncode == 0, done.stderr
    assert f"torch=={VERSION}+cpu from {(tmp_path / 'cpu').as_uri()}" in done.stdout
    chosen = {item["metadata"]["name"]: item["metadata"]["version"]
              for item in json.loads(report.read_text())["install"]}
    assert chosen["torch"] == f"{VERSION}+cpu"
    assert not [name for name in chosen if name.startswith("nvidia")]


def test_without_the_cpu_build_it_stops_and_names_the_choices(tmp_path):
    done, report = _install(tmp_path, (tmp_path / "no-such-index").as_uri())
    assert done.returncode == 1
    assert f"torch {VERSION}'s CPU build ({VERSION}+cpu) was not found" in done.stderr
    assert "TORCH=pypi make setup" in done.stderr and "CUDA build" in done.stderr
    assert "TORCH_INDEX=URL make setup" in done.stderr
    assert not report.exists()  # nothing resolved, nothing would be installed
