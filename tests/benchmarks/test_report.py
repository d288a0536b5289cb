"""docs/benchmarks.md is generated from the committed result files, and a malformed result file
is refused with a message that names what is wrong."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_report():
    spec = importlib.util.spec_from_file_location("benchmarks_report",
                                                  ROOT / "benchmarks" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


report = _load_report()


def test_committed_results_reproduce_the_docs_exactly():
    results = report.load_all(ROOT / "benchmarks" / "results")
    assert results, "no committed result files under benchmarks/results"
    docs = (ROOT / "docs" / "benchmarks.md").read_text()
    assert report.update(docs, results) == docs, (
        "docs/benchmarks.md is out of date: run python benchmarks/report.py")


def _one_result(tmp_path: Path, drop: str | None = None) -> Path:
    """A copy of a committed result file in ``tmp_path``, without the key ``drop``."""
    source = sorted((ROOT / "benchmarks" / "results").glob("*.json"))[0]
    result = json.loads(source.read_text())
    if drop is not None:
        del result[drop]
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / source.name).write_text(json.dumps(result))
    return folder / source.name


@pytest.mark.parametrize("key", ["load_1min", "rows", "commit", "command"])
def test_a_result_file_missing_a_required_key_is_refused(tmp_path, key, capsys):
    path = _one_result(tmp_path, drop=key)
    with pytest.raises(report.ResultError, match=f"missing required key.*{key}"):
        report.load(path)
    docs = tmp_path / "benchmarks.md"
    docs.write_text(f"<!-- results:{path.stem} -->\nold\n<!-- /results -->\n")
    assert report.main(["--docs", str(docs), "--results", str(path.parent)]) == 2
    assert f"missing required key(s) {key}" in capsys.readouterr().err
    assert "old" in docs.read_text()  # nothing rewritten


def test_a_block_and_its_result_file_must_match(tmp_path):
    path = _one_result(tmp_path)
    results = report.load_all(path.parent)
    with pytest.raises(report.ResultError, match="without a block"):
        report.update("no blocks here\n", results)
    with pytest.raises(report.ResultError, match="no benchmarks/results/missing.json"):
        report.update(f"<!-- results:{path.stem} -->\n<!-- /results -->\n"
                      "<!-- results:missing -->\n<!-- /results -->\n", results)


def test_a_block_is_filled_with_the_command_and_a_dated_row_per_result_row(tmp_path):
    path = _one_result(tmp_path)
    result = json.loads(path.read_text())
    docs = f"prose stays\n<!-- results:{path.stem} -->\nstale table\n<!-- /results -->\nend\n"
    filled = report.update(docs, report.load_all(path.parent))
    assert filled.startswith("prose stays\n") and filled.endswith("<!-- /results -->\nend\n")
    assert "stale table" not in filled
    date = result["started_utc"][:16].replace("T", " ")
    dated = [line for line in filled.splitlines() if line.startswith(f"| {date} |")]
    assert len(dated) >= len(result["rows"])
    assert report.display_command(result).startswith("python benchmarks/")


def test_the_command_shows_python_for_the_interpreter_and_keeps_a_launcher():
    command = {"command": "taskset -c 0,1 /opt/venv/bin/python3 benchmarks/x.py --json out.json"}
    assert report.display_command(command) == (
        "taskset -c 0,1 python benchmarks/x.py --json out.json")
