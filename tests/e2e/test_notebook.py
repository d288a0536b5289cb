"""Every notebook in notebooks/ runs headless (nbclient) against a real server, without an
error, and shows the live panels inline. A new notebook is picked up by being there."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow
NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
PANEL_MIMETYPE = "application/vnd.holoviews_exec.v0+json"
#: Frameworks a notebook needs beyond sentrycam's core (skipped when not installed).
NEEDS = {"lightning.ipynb": ("lightning",), "huggingface.ipynb": ("transformers", "accelerate")}
#: What the plain loop's notebook shows besides the panels: two dashboards, the last step.
PLAIN = "live_dashboard.ipynb"


@pytest.mark.parametrize("notebook_path", NOTEBOOKS, ids=[path.name for path in NOTEBOOKS])
def test_notebook_runs_and_displays_the_live_panels(notebook_path, tmp_path, monkeypatch,
                                                     server_process):
    for module in NEEDS.get(notebook_path.name, ()):
        pytest.importorskip(module)
    server = server_process(db=tmp_path / "nb.duckdb").start()
    try:
        monkeypatch.setenv("SENTRYCAM_URL", server.url)
        notebook = nbformat.read(notebook_path, as_version=4)
        NotebookClient(notebook, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        server.stop()
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    errors = [o for cell in code for o in cell.outputs if o.output_type == "error"]
    assert errors == []
    shown = [cell for cell in code if any(PANEL_MIMETYPE in o.get("data", {})
                                          for o in cell.outputs)]
    texts = " ".join(o.get("text", "") for cell in code for o in cell.outputs)
    trained = re.search(r"trained to step (\d+)", texts)
    assert trained is not None and int(trained.group(1)) > 0
    if notebook_path.name == PLAIN:
        assert len(shown) == 2  # run.dashboard() and frontend.show(...)
        assert trained.group(1) == "120"
    else:
        assert len(shown) >= 1
