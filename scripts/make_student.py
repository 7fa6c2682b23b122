"""Write the chapters as notebooks for students (no solutions) or instructors (with them).

    python scripts/make_student.py --out student book/0*.md      # what `make student` runs
    python scripts/make_student.py --solutions --out instructor book/0*.md   # `make instructor`

Each chapter becomes ``<out>/0N_x.ipynb``. The student's copy is the committed Colab notebook
(first cell installs ``dwp_lib``): every sphinx-exercise solution removed - the
``{solution-start}`` ... ``{solution-end}`` region (its directive lines, the code cells and
text between them) and any ``{solution}`` directive - and an exercise whose solution had code
gets an empty code cell to answer in. The instructor's copy keeps each solution under a bold
"Solution to Exercise N.k" line. In both, ``{exercise}`` directives become a bold
"Exercise N.k" line (numbered per chapter, as in the HTML book) and MyST roles become plain
Markdown (:mod:`plain_markdown`), since Jupyter and Colab render neither. The HTML book keeps
the solutions in dropdowns.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_notebooks import _stable_ids, chapter_notebook, notebook_text  # noqa: E402
from plain_markdown import BookIndex  # noqa: E402

# The opening line of a MyST directive or code fence: ``:::{name} argument`` or ``` ```{name} ```.
FENCE = re.compile(r"^(?P<fence>:{3,}|`{3,})\s*(?:\{(?P<name>[\w-]+)\})?\s*(?P<arg>.*?)\s*$")
OPTION = re.compile(r"^:[\w-]+:")
ANSWER_CELL = "# Your answer to exercise {n}."


class SolutionError(ValueError):
    """A chapter's solution markers do not pair up."""


def _closes(line: str, fence: str) -> bool:
    stripped = line.strip()
    return len(stripped) >= len(fence) and set(stripped) == {fence[0]}


class _Stripper:
    """Walks a notebook's cells, dropping solutions and rewriting exercise headers.

    With ``keep_solutions`` (the instructor's notebook) the solutions stay, each under a bold
    "Solution to Exercise N.k" line; only their directive lines go."""

    def __init__(self, where: str, keep_solutions: bool = False) -> None:
        self.where = where
        self.keep_solutions = keep_solutions
        m = re.match(r"(\d+)_", Path(where).name)
        self.chapter = int(m.group(1)) if m else None
        self.in_solution = False  # between solution-start and solution-end
        self.solution_had_code = False
        self.solving = 0  # the exercise whose solution is being dropped
        self.exercises = 0
        self.solutions = 0
        self.stack: list[tuple[str, str]] = []  # open fences: (fence, directive name)
        self.skip_until: str | None = None  # fence whose close ends a dropped directive
        self.skip_options = False

    def markdown(self, text: str) -> list[nbformat.NotebookNode]:
        """The cells that replace markdown ``text``: what is kept, and any answer cells."""
        cells: list[nbformat.NotebookNode] = []
        kept: list[str] = []

        def flush() -> None:
            if "\n".join(kept).strip():
                cells.append(nbformat.v4.new_markdown_cell("\n".join(kept).strip("\n")))
            kept.clear()

        for line in text.split("\n"):
            if self.skip_until is not None:  # inside a directive we drop whole
                if _closes(line, self.skip_until):
                    self.skip_until = None
                continue
            if self.skip_options:  # the option lines right after an exercise header
                if OPTION.match(line.strip()):
                    continue
                self.skip_options = False
            opening = FENCE.match(line)
            is_open = opening and (opening["name"] or opening["arg"] or not self._closes_top(line))
            if is_open:
                name, fence = opening["name"], opening["fence"]
                if name == "solution-start":
                    if self.in_solution:
                        raise SolutionError(f"{self.where}: solution-start inside a solution")
                    self.in_solution, self.solution_had_code = True, False
                    self.solving = self.exercises
                    self.solutions += 1
                    self.skip_until = fence
                    if self.keep_solutions:
                        kept.append(f"**Solution to Exercise {self.number(self.solving)}.**")
                    continue
                if name == "solution-end":
                    if not self.in_solution:
                        raise SolutionError(f"{self.where}: solution-end without solution-start")
                    self.in_solution = False
                    if self.solution_had_code and not self.keep_solutions:
                        flush()
                        answer = ANSWER_CELL.format(n=self.number(self.solving))
                        cells.append(nbformat.v4.new_code_cell(answer))
                    self.skip_until = fence
                    continue
                if self.in_solution and not self.keep_solutions:
                    continue
                if name == "solution":
                    self.solutions += 1
                    self.skip_until = fence
                    continue
                if name == "exercise":
                    self.exercises += 1
                    title = f" ({opening['arg']})" if opening["arg"] else ""
                    kept.append(f"**Exercise {self.number(self.exercises)}**{title}.")
                    self.stack.append((fence, name))
                    self.skip_options = True
                    continue
                self.stack.append((fence, name or ""))
                kept.append(line)
                continue
            if self.in_solution and not self.keep_solutions:
                continue
            if self.stack and _closes(line, self.stack[-1][0]):
                _, name = self.stack.pop()
                if name != "exercise":
                    kept.append(line)
                continue
            kept.append(line)
        flush()
        return cells

    def number(self, k: int) -> str:
        """Exercise ``k`` of this chapter as the book numbers it (``4.3``; ``3`` without a
        chapter number in the file name)."""
        return f"{self.chapter}.{k}" if self.chapter is not None else str(k)

    def _closes_top(self, line: str) -> bool:
        return bool(self.stack) and _closes(line, self.stack[-1][0])

    def notebook(self, nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
        cells = []
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                cells.extend(self.markdown(cell.source))
            elif self.in_solution and not self.keep_solutions:
                self.solution_had_code = True
            else:
                cells.append(cell)
        if self.in_solution:
            raise SolutionError(f"{self.where}: a solution-start has no solution-end")
        nb.cells = cells
        _stable_ids(nb)
        return nb


def converted_notebook(
    md: Path, requirement: str | None = None, solutions: bool = False
) -> tuple[nbformat.NotebookNode, _Stripper]:
    """Chapter ``md`` as a notebook for Jupyter or Colab: the install cell, solutions removed
    (kept with ``solutions``), MyST roles and directives written out (:mod:`plain_markdown`);
    also the stripper, which counted the exercises and solutions."""
    stripper = _Stripper(str(md), keep_solutions=solutions)
    nb = stripper.notebook(chapter_notebook(md, requirement))
    index = BookIndex.build(sorted(md.parent.glob("0*.md")))
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = index.convert(cell.source, md.name)
    _stable_ids(nb)
    return nb, stripper


def student_notebook(md: Path) -> nbformat.NotebookNode:
    """Chapter ``md`` as a Colab notebook without solutions."""
    return converted_notebook(md)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chapters", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("student"))
    parser.add_argument(
        "--solutions", action="store_true", help="keep the solutions (the instructor's copy)"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for md in args.chapters:
        if md.suffix != ".md" or not md.exists():
            raise SystemExit(f"make_student: {md} is not a chapter (.md file)")
        try:
            nb, stripper = converted_notebook(md, solutions=args.solutions)
        except SolutionError as err:
            raise SystemExit(f"make_student: {err}; fix the chapter's solution markers") from None
        target = args.out / md.with_suffix(".ipynb").name
        target.write_text(notebook_text(nb))
        how = "kept" if args.solutions else "removed"
        print(
            f"make_student: {target}: {stripper.exercises} exercise(s), "
            f"{stripper.solutions} solution(s) {how}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
