"""The Jupyter notebook runs headless (nbclient) against a real server and shows the panels."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow
NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "live_dashboard.ipynb"
PANEL_MIMETYPE = "application/vnd.holoviews_exec.v0+json"


def test_notebook_runs_and_displays_the_live_panels(tmp_path, monkeypatch, server_process):
    server = server_process(db=tmp_path / "nb.duckdb").start()
    try:
        monkeypatch.setenv("SENTRYCAM_URL", server.url)
        notebook = nbformat.read(NOTEBOOK, as_version=4)
        NotebookClient(notebook, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        server.stop()
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    errors = [o for cell in code for o in cell.outputs if o.output_type == "error"]
    assert errors == []
    shown = [cell for cell in code if any(PANEL_MIMETYPE in o.get("data", {})
                                          for o in cell.outputs)]
    assert len(shown) == 2  # run.dashboard() and frontend.show(...)
    assert any("trained to step 120" in o.get("text", "") for cell in code
               for o in cell.outputs)
