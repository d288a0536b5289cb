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


FORBIDDEN_IN_PROTOCOL = ("torch", "fastapi", "starlette", "uvicorn", "websockets", "panel",
                         "bokeh", "duckdb", "pyarrow", "umap", "sentrycam.capture",
                         "sentrycam.backend", "sentrycam.frontend", "sentrycam.projector")


def test_protocol_imports_neither_torch_nor_the_web_stack_nor_duckdb():
    loaded = _modules_loaded_by("import pkgutil, importlib, sentrycam.protocol as p; "
                                "[importlib.import_module(f'sentrycam.protocol.{m.name}') "
                                "for m in pkgutil.iter_modules(p.__path__)]")
    assert "sentrycam.protocol.validation" in loaded
    offenders = sorted(name for name in loaded
                       if any(name == f or name.startswith(f + ".") for f in FORBIDDEN_IN_PROTOCOL))
    assert offenders == []
