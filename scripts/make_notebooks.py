"""Generate the Colab notebooks: ``book/0N_x.md`` -> ``book/0N_x.ipynb`` (committed).

    python scripts/make_notebooks.py            # (re)write every chapter's notebook
    python scripts/make_notebooks.py --check    # exit 1 if a committed notebook drifted

Why beside the source: sphinx-book-theme's "Open in Colab" button links to
``<repository>/blob/<branch>/<page path>`` and uses the ``.ipynb`` extension when a notebook of
the same name sits beside the ``.md`` source at build time. Committing the generated notebook
there makes the button open a real notebook (a ``.md`` would fail in Colab). ``_config.yml``
excludes ``book/*.ipynb`` from the build, so the ``.md`` stays the only source of the page.

Each notebook is the chapter converted by jupytext, with one cell prepended that installs
``dwp_lib`` from the repository named in ``_config.yml`` (``repository.url`` and ``.branch``,
the one place it is written). The cell does nothing when ``dwp_lib`` is importable, prints
nothing on success, and installs from ``$DWP_LIB_SOURCE`` instead when that is set (the tests
point it at the local checkout). Cell ids are derived from the cells' contents, so the output is
deterministic and a test can compare it byte for byte with the committed file.

The same command writes the instructors' table of time per exercise into ``book/intro.md``
(between its ``exercise-times`` markers) from ``book/exercise_times.json``, which
``scripts/cell_times.py`` writes from a cell-by-cell run of the chapters.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import jupytext
import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "_config.yml"
INSTALL_TAG = "colab-install"
SOURCE_ENV = "DWP_LIB_SOURCE"

INSTALL_TEMPLATE = """\
# Installs dwp_lib, the course library, if it is missing (as in a fresh Colab runtime);
# prints nothing on success. Generated from {source}: edit that, then `make notebooks`.
import importlib.util
import os
import subprocess
import sys


def _install_dwp_lib(source="{requirement}"):
    source = os.environ.get("{env}", source)
    pip = [sys.executable, "-m", "pip", "install", "-q", source]
    done = subprocess.run(pip, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"installing dwp_lib failed:\\n{{done.stdout}}{{done.stderr}}")
    importlib.invalidate_caches()
    if "google.colab" in sys.modules:  # Colab renders ipywidgets 8 only with this manager
        from google.colab import output

        output.enable_custom_widget_manager()


if importlib.util.find_spec("dwp_lib") is None:
    _install_dwp_lib()
"""


#: pages with code that are not numbered chapters; they get a Colab notebook too
PAGES_WITH_CODE = ("conclusion",)


def chapters(root: Path = ROOT) -> list[Path]:
    """The book's chapters, ``book/0*.md``, in order."""
    return sorted((root / "book").glob("0*.md"))


def notebook_pages(root: Path = ROOT) -> list[Path]:
    """Every page that has a Colab notebook: the chapters, then :data:`PAGES_WITH_CODE`."""
    extra = [root / "book" / f"{name}.md" for name in PAGES_WITH_CODE]
    return chapters(root) + [p for p in extra if p.exists()]


def notebook_path(md: Path) -> Path:
    """Where the Colab notebook of chapter ``md`` is committed (beside it)."""
    return md.with_suffix(".ipynb")


def pip_requirement(config: Path = CONFIG) -> str:
    """``git+<repository.url>@<repository.branch>`` from ``_config.yml``."""
    repo = (yaml.safe_load(config.read_text()) or {}).get("repository") or {}
    url = str(repo.get("url") or "").rstrip("/")
    if not url.startswith("https://"):
        raise SystemExit(
            f"make_notebooks: {config} has no https repository.url (got {url!r}); "
            "set it to the public repository the notebooks install dwp_lib from"
        )
    branch = repo.get("branch") or "main"
    return f"git+{url}@{branch}"


def install_cell(requirement: str, source: str) -> nbformat.NotebookNode:
    """The first cell of every Colab notebook (tagged ``colab-install``)."""
    code = INSTALL_TEMPLATE.format(requirement=requirement, env=SOURCE_ENV, source=source)
    return nbformat.v4.new_code_cell(code.rstrip("\n"), metadata={"tags": [INSTALL_TAG]})


TIMES = ROOT / "book" / "chapter_times.json"
RUNTIME_TAG = "colab-runtime"


def minutes_text(seconds: float) -> str:
    if seconds < 60:
        return "under a minute"
    return f"about {round(seconds / 60)} min"


def runtime_cell(md: Path, times_file: Path = TIMES) -> nbformat.NotebookNode | None:
    """A Markdown line with the chapter's measured runtime (``book/chapter_times.json``, written
    by ``scripts/chapter_times.py`` after a book build from an empty data cache), or None."""
    if not times_file.exists():
        return None
    import json

    record = json.loads(times_file.read_text())
    entry = record.get("chapters", {}).get(md.name)
    if entry is None:
        return None
    when = str(record.get("written", ""))[:10]
    cache = "an empty data cache" if record.get("dwp_cache") == "cold" else "a warm data cache"
    text = (
        f"**Runtime.** On a {record.get('cpus', 2)}-core CPU this notebook ran in "
        f"{minutes_text(entry['seconds'])} at the `{record.get('preset', 'book')}` preset from "
        f"{cache} (measured {when}); Colab's free CPU runtime also has 2 cores, so expect about "
        "the same there. It was timed with the chapters run in order, each reusing what earlier "
        "ones downloaded and trained: opened alone in a fresh runtime, a later chapter first "
        "redoes that work. A GPU runtime is used automatically when present (not timed)."
    )
    return nbformat.v4.new_markdown_cell(text, metadata={"tags": [RUNTIME_TAG]})


EXERCISE_TIMES = ROOT / "book" / "exercise_times.json"
INTRO = ROOT / "book" / "intro.md"
TABLE_START = "<!-- exercise-times: generated by `make notebooks` from book/exercise_times.json -->"
TABLE_END = "<!-- exercise-times: end -->"


def seconds_text(seconds: float) -> str:
    if seconds < 1:
        return "under 1 s"
    if seconds < 60:
        return f"{round(seconds)} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes < 10 else f"{round(seconds / 60)} min"


def exercise_table(times_file: Path = EXERCISE_TIMES) -> str:
    """The instructors' table: how long each exercise's reference solution runs, per chapter,
    from ``book/exercise_times.json`` (written by ``scripts/cell_times.py``)."""
    import json

    record = json.loads(times_file.read_text())
    rows, meta = [], None
    for name, chapter in record["chapters"].items():
        exercises = chapter.get("exercises", {})
        if not exercises:
            continue
        meta = meta or chapter
        code = chapter.get("exercise_code_cells", {})
        cells = [f"{label.removeprefix('ex-').replace('-', '.')}: "
                 + (seconds_text(sec) if code.get(label, 1) else "no code")
                 for label, sec in exercises.items()]  # fmt: skip
        rows.append(f"| {name.split('_')[0].lstrip('0')} | {' · '.join(cells)} |")
    cache = "an empty data cache" if meta.get("dwp_cache") == "cold" else "a warm data cache"
    threads = meta.get("torch_threads")
    threads = "one torch thread" if str(threads) == "1" else f"torch threads: {threads}"
    head = (
        f"How long each exercise's solution takes to run, measured cell by cell at the "
        f"`{meta.get('preset', 'book')}` preset on a {meta.get('cpus', 2)}-core CPU "
        f"({threads}, from {cache}, {str(meta.get('executed'))[:10]}):"
        " the time a student waits for the computations, not the time to write the answer."
    )
    lines = [head, "", "| chapter | exercise: runtime of its solution |", "|---|---|", *rows]
    return "\n".join([TABLE_START, *lines, TABLE_END])


def intro_text(intro: Path = INTRO, times_file: Path = EXERCISE_TIMES) -> str:
    """``intro`` with its exercise-times table regenerated (unchanged without the JSON)."""
    text = intro.read_text()
    if not times_file.exists():
        return text
    start, end = text.find(TABLE_START), text.find(TABLE_END)
    if start < 0 or end < start:
        raise SystemExit(f"make_notebooks: {intro} lacks the markers {TABLE_START!r} ... "
                         f"{TABLE_END!r} where the exercise-times table goes")  # fmt: skip
    return text[:start] + exercise_table(times_file) + text[end + len(TABLE_END) :]


def _stable_ids(nb: nbformat.NotebookNode) -> None:
    seen: dict[str, int] = {}
    for cell in nb.cells:
        digest = hashlib.sha1(f"{cell.cell_type}\n{cell.source}".encode()).hexdigest()[:8]
        seen[digest] = seen.get(digest, 0) + 1
        cell["id"] = digest if seen[digest] == 1 else f"{digest}-{seen[digest]}"


def colab_notebook(
    md: Path, requirement: str | None = None, solutions: bool = False
) -> nbformat.NotebookNode:
    """Chapter ``md`` as the notebook Colab opens: first cell installs ``dwp_lib``, MyST written
    out as plain Markdown, no solutions (``solutions=True``: the instructor's copy, with them)."""
    from make_student import converted_notebook  # it imports this module

    return converted_notebook(md, requirement, solutions)[0]


def chapter_notebook(md: Path, requirement: str | None = None) -> nbformat.NotebookNode:
    """Chapter ``md`` as jupytext reads it, with the install cell first (MyST left as is)."""
    nb = jupytext.read(md)
    try:
        source = md.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        source = md.name
    nb.cells.insert(0, install_cell(requirement or pip_requirement(), source))
    runtime = runtime_cell(md)
    if runtime is not None:
        nb.cells.insert(1, runtime)
    nb.metadata.pop("jupytext", None)  # the .md is the source; no pairing in the copy
    _stable_ids(nb)
    return nb


def notebook_text(nb: nbformat.NotebookNode) -> str:
    return nbformat.writes(nb) + "\n"


def drifted(mds: list[Path], requirement: str | None = None) -> list[str]:
    """Problems with the committed notebooks of ``mds``: missing, out of date or orphaned."""
    problems = []
    for md in mds:
        target = notebook_path(md)
        if not target.exists():
            problems.append(f"{target} is missing")
        elif target.read_text() != notebook_text(colab_notebook(md, requirement)):
            problems.append(f"{target} differs from what {md} generates")
    if INTRO.exists() and INTRO.read_text() != intro_text():
        problems.append(f"{INTRO}'s exercise-times table differs from {EXERCISE_TIMES.name}")
    for md in {m.parent for m in mds}:
        for nb in sorted(md.glob("0*.ipynb")):
            if not nb.with_suffix(".md").exists():
                problems.append(f"{nb} has no chapter {nb.with_suffix('.md').name}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chapters", nargs="*", type=Path, help="default: book/0*.md")
    parser.add_argument("--check", action="store_true", help="report drift, write nothing")
    args = parser.parse_args(argv)
    mds = args.chapters or notebook_pages()
    for md in mds:
        if md.suffix != ".md" or not md.exists():
            raise SystemExit(f"make_notebooks: {md} is not a chapter (.md file)")
    if args.check:
        problems = drifted(mds)
        for p in problems:
            print(f"make_notebooks: {p}", file=sys.stderr)
        if problems:
            print("make_notebooks: run `make notebooks` and commit book/*.ipynb", file=sys.stderr)
        return 1 if problems else 0
    requirement = pip_requirement()
    for md in mds:
        target = notebook_path(md)
        text = notebook_text(colab_notebook(md, requirement))
        if not target.exists() or target.read_text() != text:
            target.write_text(text)
            print(f"make_notebooks: wrote {target}")
    if INTRO.exists() and INTRO.read_text() != (text := intro_text()):
        INTRO.write_text(text)
        print(f"make_notebooks: wrote the exercise-times table in {INTRO}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
