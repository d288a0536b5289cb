"""The frontend reads only through its API client: it never loads the store, DuckDB or the
server's modules, even though the server imports it to serve the page."""

import subprocess
import sys


def test_frontend_does_not_import_the_backend_or_duckdb():
    code = ("import sys; import sentrycam.frontend.page, sentrycam.frontend.run_view, "
            "sentrycam.frontend.client; print('\\n'.join(sorted(sys.modules)))")
    loaded = set(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                text=True).stdout.split())
    offenders = sorted(m for m in loaded if m == "duckdb" or m.startswith(("duckdb.",
                                                                         "sentrycam.backend")))
    assert offenders == []


def test_importing_the_frontend_package_stays_light():
    code = "import sys, sentrycam.frontend; print('panel' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout.split()
    assert out == ["False", "False"]
