"""The layering rules of the code base, checked on the real import graph."""

import subprocess
import sys

FORBIDDEN_IN_CAPTURE = ("fastapi", "starlette", "uvicorn", "panel", "bokeh", "duckdb", "umap",
                        "pyarrow", "sentrycam.backend.store", "sentrycam.projector")


def _modules_loaded_by(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return set(out.stdout.split())


def test_capture_does_not_import_the_web_stack_duckdb_or_the_projector():
    loaded = _modules_loaded_by("from sentrycam import capture; "
                                "from sentrycam.capture import attach, sender, launcher, demo")
    offenders = sorted(name for name in loaded
                       if any(name == f or name.startswith(f + ".") for f in FORBIDDEN_IN_CAPTURE))
    assert offenders == []


def test_demo_command_module_stays_on_the_capture_side():
    loaded = _modules_loaded_by("import sentrycam.backend.cli, sentrycam.backend.cli_demo")
    assert not {"fastapi", "duckdb", "panel", "uvicorn"} & loaded
