"""The container copies every package the project installs (the image is built only in a
separate step, so a folder missing from the Dockerfile would show only there)."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_dockerfile_copies_every_top_level_package_folder():
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"]
    folders = {name.split(".")[1] for name in packages if name.count(".") >= 1}
    copied = set(re.findall(r"^COPY (\w+)/ \1/$", (ROOT / "Dockerfile").read_text(), re.M))
    assert folders - copied == set(), "the Dockerfile does not COPY these package folders"
