"""The frameworks are optional: ``sentrycam.capture`` never imports them, and a callback whose
framework is missing says which extra to install (each check in a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys

import pytest

FRAMEWORKS = ("lightning", "pytorch_lightning", "transformers", "accelerate")


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)


def test_capture_and_attach_import_no_framework():
    code = ("import sys, torch\nfrom sentrycam import capture\n"
            "from sentrycam.capture import attach, Run\n"
            "import sentrycam.capture.callbacks, sentrycam.capture.batches\n"
            f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {FRAMEWORKS!r})\n"
            "assert not loaded, loaded")
    result = _python(code)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("module, hidden, extra", [
    ("lightning", ("lightning", "pytorch_lightning"), "lightning"),
    ("huggingface", ("transformers",), "huggingface")])
def test_a_missing_framework_names_the_extra_to_install(module, hidden, extra):
    # A None entry in sys.modules makes its import fail as if the package were not installed.
    code = (f"import sys\nfor name in {hidden!r}:\n    sys.modules[name] = None\n"
            f"import sentrycam.capture.{module}")
    result = _python(code)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError") and f"pip install 'sentrycam[{extra}]'" in last, last


@pytest.mark.parametrize("module", ["lightning", "huggingface"])
def test_the_trainer_parts_cannot_be_passed_twice(module):
    callbacks = pytest.importorskip(f"sentrycam.capture.{module}")
    with pytest.raises(ValueError, match="optimizer= is taken from the trainer"):
        callbacks.SentryCamCallback(optimizer=object())


def test_the_lightning_callback_works_with_only_pytorch_lightning_installed():
    pytest.importorskip("pytorch_lightning")
    code = ("import sys\nsys.modules['lightning'] = None\n"
            "import pytorch_lightning\nfrom sentrycam.capture.lightning import SentryCamCallback\n"
            "assert issubclass(SentryCamCallback, pytorch_lightning.Callback)")
    result = _python(code)
    assert result.returncode == 0, result.stderr
