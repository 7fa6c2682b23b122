"""Widgets never leave the HTML book empty: each sits beside a static figure of the same idea.

The HTML book has no kernel, so an ipywidget shows nothing useful there. Convention for
chapter authors:

- A code cell that shows an ipywidget (it uses a name imported from ``ipywidgets``, or calls a
  function whose name contains ``widget`` or ``interact``, e.g. ``plots.kernel_widget()``)
  carries the tag ``widget``::

      ```{code-cell} ipython3
      :tags: [widget]
      interact(show_kernels, temperature=(0.1, 2.0))
      ```

- The nearest code cell before or after it carries the tag ``static-figure`` and draws the same
  idea as a plain matplotlib figure (for example the widget's default setting, or a grid of a
  few settings). It must not use widgets itself.

This test checks the tags on the chapters' sources; ``tests/test_book_browser.py`` checks in the
built HTML that every ``static-figure`` cell shows a loaded image and that widget outputs only
appear in ``widget`` cells.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import make_notebooks  # noqa: E402

WIDGET_TAG = "widget"
STATIC_TAG = "static-figure"
WIDGET_WORDS = ("widget", "interact")


def _tree(source: str) -> ast.Module:
    # IPython magics and shell escapes are not Python; blank them out before parsing
    lines = ["" if line.lstrip().startswith(("%", "!")) else line for line in source.split("\n")]
    return ast.parse("\n".join(lines))


def widget_names(sources: list[str]) -> set[str]:
    """Names bound by ``import ipywidgets ...`` / ``from ipywidgets... import ...``."""
    names = set()
    for source in sources:
        for node in ast.walk(_tree(source)):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "ipywidgets":
                        names.add(alias.asname or "ipywidgets")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ipywidgets"):
                names.update(alias.asname or alias.name for alias in node.names)
    return names


def uses_widgets(source: str, names: set[str]) -> bool:
    for node in ast.walk(_tree(source)):
        if isinstance(node, ast.Name) and node.id in names:
            return True
        if isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if any(word in called.lower() for word in WIDGET_WORDS):
                return True
    return False


def problems_of(cells: list[dict]) -> list[str]:
    """``cells``: code cells as dicts with ``source`` and ``tags``, in order."""
    names = widget_names([c["source"] for c in cells])
    problems = []
    for i, cell in enumerate(cells):
        uses = uses_widgets(cell["source"], names)
        first_line = cell["source"].strip().splitlines()[0] if cell["source"].strip() else ""
        where = f"code cell {i + 1} ({first_line[:50]!r})"
        if uses and WIDGET_TAG not in cell["tags"]:
            problems.append(f"{where} shows a widget but is not tagged {WIDGET_TAG!r}")
        if STATIC_TAG in cell["tags"] and uses:
            problems.append(f"{where} is tagged {STATIC_TAG!r} but uses widgets")
        if WIDGET_TAG in cell["tags"]:
            neighbours = [cells[j] for j in (i - 1, i + 1) if 0 <= j < len(cells)]
            if not any(STATIC_TAG in n["tags"] for n in neighbours):
                problems.append(
                    f"{where} is a widget with no {STATIC_TAG!r} code cell right before or after"
                )
    return problems


def code_cells(md: Path) -> list[dict]:
    return [
        {"source": c.source, "tags": c.metadata.get("tags", [])}
        for c in jupytext.read(md).cells
        if c.cell_type == "code"
    ]


def _cells(*pairs):
    return [{"source": s, "tags": list(t)} for s, t in pairs]


def test_checker_on_examples():
    imports = ("from ipywidgets import interact, FloatSlider as Slider\nimport numpy as np", ())
    static = ("fig = plots.kernels(temperature=1.0)", (STATIC_TAG,))
    widget = ("interact(draw, t=Slider(min=0.1, max=2))", (WIDGET_TAG,))
    assert problems_of(_cells(imports, static, widget)) == []
    assert problems_of(_cells(imports, widget, static)) == []
    assert "not tagged" in problems_of(_cells(imports, static, (widget[0], ())))[0]
    assert "no 'static-figure'" in problems_of(_cells(imports, widget))[0]
    far = _cells(imports, static, ("x = 1", ()), widget)
    assert "no 'static-figure'" in problems_of(far)[0]
    # widgets returned by a library helper count too
    helper = _cells(("plots.kernel_widget(bank)", ()))
    assert "not tagged" in problems_of(helper)[0]
    aliased = _cells(("import ipywidgets as W", ()), ("W.IntSlider()", ()))
    assert "not tagged" in problems_of(aliased)[0]
    magic = _cells(("%matplotlib inline\nx = 1", ()))
    assert problems_of(magic) == []


@pytest.mark.parametrize("md", make_notebooks.chapters(), ids=lambda p: p.stem)
def test_chapter_widgets_have_static_figures(md):
    problems = problems_of(code_cells(md))
    assert not problems, f"{md.name}: " + "; ".join(problems)
