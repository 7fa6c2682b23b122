"""Every figure of the book's text is numbered and captioned, with alt text that describes it.

A code cell outside the solutions that draws with ``dwp_lib.plots`` carries myst-nb metadata
(``mystnb.figure.caption`` and ``.name``, ``mystnb.image.alt``); the HTML book then numbers it
per chapter (Fig. 4.2, ``numfig_secnum_depth`` in ``_config.yml``). Names are unique.
"""

from __future__ import annotations

import re
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parents[2]
CHAPTERS = sorted((ROOT / "book").glob("0*.md"))
DRAWS = re.compile(r"\bplots\.(plot_\w+)\(")


def figure_cells(md: Path):
    """(cell index, plot functions, metadata) of each code cell outside a solution that draws."""
    nb = jupytext.read(md)
    in_solution = False
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            starts = len(re.findall(r"\{solution-start\}", cell.source))
            ends = len(re.findall(r"\{solution-end\}", cell.source))
            if starts or ends:
                in_solution = starts > ends or (in_solution and starts == ends)
            continue
        draws = DRAWS.findall(cell.source)
        if draws and not in_solution and "widget" not in cell.metadata.get("tags", []):
            yield i, draws, cell.metadata


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_every_figure_has_a_caption_a_name_and_alt_text(md):
    cells = list(figure_cells(md))
    assert cells, f"{md.name} draws no figure?"
    for i, draws, meta in cells:
        nb = meta.get("mystnb", {})
        caption = nb.get("figure", {}).get("caption", "")
        name = nb.get("figure", {}).get("name", "")
        alt = nb.get("image", {}).get("alt", "")
        where = f"{md.name} cell {i} ({', '.join(draws)})"
        assert len(caption.split()) >= 6, f"{where}: no caption (mystnb.figure.caption)"
        assert name.startswith("fig-"), f"{where}: no name fig-... (mystnb.figure.name)"
        assert len(alt.split()) >= 5 and not re.fullmatch(r"[0-9a-f]{16,}", alt), f"{where}: alt"


def test_figure_names_are_unique():
    names = [meta["mystnb"]["figure"]["name"] for md in CHAPTERS for _, _, meta in figure_cells(md)]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_a_figure_cell_displays_nothing_else(md):
    """myst-nb gives a named cell's name to each of its display outputs: a table shown with
    ``display(...)`` in the same cell becomes a second target of that name, a warning that fails
    the book's build (``-W``). Tables go in a cell of their own."""
    cells = jupytext.read(md).cells
    for i, draws, meta in figure_cells(md):
        if not meta.get("mystnb", {}).get("figure", {}).get("name"):
            continue
        source = cells[i].source
        assert not re.search(r"\bdisplay\(", source), (
            f"{md.name} cell {i} ({', '.join(draws)}): display(...) beside a named figure"
        )
