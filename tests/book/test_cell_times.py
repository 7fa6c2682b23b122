"""scripts/cell_times.py: cells are attributed to their section and to the exercise whose solution
holds them, from nbclient's per-cell timestamps."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import cell_times  # noqa: E402


def _code(source: str, start: str, end: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["execution"] = {"iopub.execute_input": start, "shell.execute_reply": end}
    return cell


def test_attribute_sums_by_section_and_exercise():
    md = nbformat.v4.new_markdown_cell
    nb = nbformat.v4.new_notebook(cells=[
        _code("import x", "2026-01-01T00:00:00.000Z", "2026-01-01T00:00:01.500Z"),
        md("## Training\n\nText."),
        _code("train()", "2026-01-01T00:00:02Z", "2026-01-01T00:00:12Z"),
        md("## Exercises\n\n:::{exercise}\n:label: ex-1-1\nDo it.\n:::\n\n:::{solution-start} ex-1-1\n:::"),
        _code("\n# comment\nsolve()", "2026-01-01T00:00:12Z", "2026-01-01T00:00:15Z"),
        md(":::{solution-end}\n:::\n\n:::{solution-start} ex-1-2\n:::"),
        _code("other()", "2026-01-01T00:00:15Z", "2026-01-01T00:00:15.250Z"),
        md(":::{solution-end}\n:::"),
        _code("after()", "2026-01-01T00:00:16Z", "2026-01-01T00:00:17Z"),
        nbformat.v4.new_code_cell("never_run()"),  # no timestamps: not counted
    ])  # fmt: skip
    out = cell_times.attribute(nb)
    assert out["sections"] == {"(top)": 1.5, "Training": 10.0, "Exercises": 4.2}
    assert out["exercises"] == {"ex-1-1": 3.0, "ex-1-2": 0.2}
    assert out["total_seconds"] == 15.8
    slowest = out["slowest_cells"][0]
    assert slowest["first_line"] == "train()" and slowest["section"] == "Training"
    assert out["slowest_cells"][1]["first_line"] == "# comment"
    assert out["slowest_cells"][1]["exercise"] == "ex-1-1"
