"""The Colab notebooks (``book/0N_x.ipynb``) and the students' solution-free notebooks.

- Every chapter ``book/0N_x.md`` has a committed ``book/0N_x.ipynb`` that is exactly what
  ``scripts/make_notebooks.py`` generates from it; after editing a chapter, run
  ``make notebooks`` and commit the notebook (this test fails until you do).
- The notebook's first cell installs ``dwp_lib`` from ``repository.url`` in ``_config.yml``,
  does nothing when ``dwp_lib`` is importable, and fails with pip's output when pip fails.
- ``make student`` (``scripts/make_student.py``) keeps every exercise and drops every solution:
  no line of a solution (code or prose) that is not also elsewhere in the chapter reaches the
  student notebook.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import make_notebooks  # noqa: E402

CHAPTERS = make_notebooks.chapters()
PAGES = make_notebooks.notebook_pages()  # the chapters and the other pages with code

FIXTURE = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# Fixture

```{code-cell} ipython3
x = 1
```

:::{exercise} Warm-up
:label: ex-9-1
Compute $x + 1$.
:::

:::{solution-start} ex-9-1
:class: dropdown
:::

The answer needs nothing but addition.

```{code-cell} ipython3
secret_answer_one = x + 1
print(secret_answer_one)
```

:::{solution-end}
:::

::::{exercise}
:label: ex-9-2
Nested:
:::{note}
A note the students keep.
:::
::::

:::{solution-start} ex-9-2
:class: dropdown
:::
Only prose here: the secret prose answer.
:::{solution-end}
:::

:::{exercise}
:label: ex-9-3
Last one.
:::

:::{solution} ex-9-3
:class: dropdown
A non-gated secret solution.
:::

Closing words.
"""

DIRECTIVE = re.compile(r"^(?::{3,}|`{3,})\{(solution-start|solution-end)\}")


def solution_lines(md_text: str) -> set[str]:
    """Non-trivial lines found only inside solutions (gated regions and ``{solution}`` blocks)."""
    inside, outside = [], []
    in_gated, solution_fence = False, None
    for line in md_text.splitlines():
        stripped = line.strip()
        m = DIRECTIVE.match(stripped)
        if m:
            in_gated = m[1] == "solution-start"
            continue
        if solution_fence is None and re.match(r"^(:{3,}|`{3,})\{solution\}", stripped):
            solution_fence = re.match(r"^(:{3,}|`{3,})", stripped)[1]
            continue
        if solution_fence is not None and stripped and set(stripped) == {solution_fence[0]}:
            solution_fence = None
            continue
        (inside if in_gated or solution_fence else outside).append(stripped)
    trivial = {"```", ":::", "```{code-cell} ipython3"}
    return {s for s in inside if len(s) >= 8 and s not in trivial and not s.startswith(":")} - set(
        outside
    )


def notebook_text_lines(nb) -> set[str]:
    return {line.strip() for cell in nb.cells for line in cell.source.splitlines()}


# -- the Colab notebooks ---------------------------------------------------------------


def test_every_chapter_has_a_notebook():
    assert CHAPTERS, "no chapters book/0*.md found"
    missing = [str(make_notebooks.notebook_path(md)) for md in PAGES]
    missing = [p for p in missing if not Path(p).exists()]
    assert not missing, f"missing Colab notebooks {missing}: run `make notebooks` and commit them"


@pytest.mark.parametrize("md", PAGES, ids=lambda p: p.stem)
def test_committed_notebook_matches_its_chapter(md):
    problems = make_notebooks.drifted([md])
    assert not problems, f"{problems}: run `make notebooks` and commit book/*.ipynb"


def test_no_orphan_notebooks():
    problems = [p for p in make_notebooks.drifted(PAGES) if "has no chapter" in p]
    assert not problems, problems


@pytest.mark.parametrize("md", PAGES, ids=lambda p: p.stem)
def test_notebook_starts_with_the_install_cell(md):
    nb = nbformat.read(make_notebooks.notebook_path(md), as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "code" and make_notebooks.INSTALL_TAG in first.metadata["tags"]
    assert make_notebooks.pip_requirement() in first.source
    # the chapter's code follows unchanged, in order, less the solutions' cells (answer cells
    # stand in for them); the instructor's copy holds every one of them
    import jupytext
    import make_student

    chapter = [c.source for c in jupytext.read(md).cells if c.cell_type == "code"]
    instructor = make_student.converted_notebook(md, solutions=True)[0]
    assert [c.source for c in instructor.cells if c.cell_type == "code"][1:] == chapter
    code = [c.source for c in nb.cells[1:] if c.cell_type == "code"]
    kept = iter(chapter)
    assert all(any(c == k for k in kept) for c in code if not c.startswith("# Your answer"))


@pytest.mark.parametrize("md", PAGES, ids=lambda p: p.stem)
def test_notebook_states_its_measured_runtime(md):
    """Under the install cell, a line with the chapter's runtime from the committed
    book/chapter_times.json (written by scripts/chapter_times.py after a book build)."""
    times = make_notebooks.TIMES
    if not times.exists():
        pytest.skip("no book/chapter_times.json committed yet")
    record = json.loads(times.read_text())
    nb = nbformat.read(make_notebooks.notebook_path(md), as_version=4)
    second = nb.cells[1]
    assert second.cell_type == "markdown" and second.source.startswith("**Runtime.**")
    seconds = record["chapters"][md.name]["seconds"]
    assert make_notebooks.minutes_text(seconds) in second.source
    assert f"{record['cpus']}-core CPU" in second.source and "GPU" in second.source


def test_install_url_comes_from_config(tmp_path):
    config = tmp_path / "_config.yml"
    config.write_text("repository:\n  url: https://github.com/someone/elsewhere/\n  branch: dev\n")
    assert make_notebooks.pip_requirement(config) == "git+https://github.com/someone/elsewhere@dev"
    config.write_text("title: no repository\n")
    with pytest.raises(SystemExit, match="repository.url"):
        make_notebooks.pip_requirement(config)


def test_check_mode_reports_drift(tmp_path, monkeypatch):
    book = tmp_path / "book"
    book.mkdir()
    md = book / "09_fixture.md"
    md.write_text(FIXTURE)
    script = [sys.executable, str(ROOT / "scripts" / "make_notebooks.py")]
    assert subprocess.run([*script, "--check", str(md)], capture_output=True).returncode == 1
    subprocess.run([*script, str(md)], check=True, capture_output=True)
    assert subprocess.run([*script, "--check", str(md)], capture_output=True).returncode == 0
    md.write_text(FIXTURE.replace("x = 1", "x = 2"))
    done = subprocess.run([*script, "--check", str(md)], capture_output=True, text=True)
    assert done.returncode == 1 and "differs from what" in done.stderr
    # deterministic: generating twice gives the same bytes
    a = make_notebooks.notebook_text(make_notebooks.colab_notebook(md))
    assert a == make_notebooks.notebook_text(make_notebooks.colab_notebook(md))


def _install_cell_source() -> str:
    return make_notebooks.install_cell("git+https://example.invalid/x", "book/x.md").source


def test_install_cell_is_a_no_op_when_dwp_lib_is_importable(tmp_path):
    # a bogus source: if the cell tried to install, pip would fail and the cell would raise
    env = {"DWP_LIB_SOURCE": str(tmp_path / "does-not-exist"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", _install_cell_source()], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""


def test_install_cell_failure_shows_pips_output(tmp_path):
    hide = (
        "import importlib.util as u\n"
        "_find = u.find_spec\n"
        "u.find_spec = lambda name, *a: None if name == 'dwp_lib' else _find(name, *a)\n"
    )
    env = {"DWP_LIB_SOURCE": str(tmp_path / "does-not-exist"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", hide + _install_cell_source()],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode != 0
    assert "installing dwp_lib failed" in done.stderr and "does-not-exist" in done.stderr


# -- student notebooks -----------------------------------------------------------------


def test_student_fixture_keeps_exercises_and_drops_solutions(tmp_path):
    md = tmp_path / "09_fixture.md"
    md.write_text(FIXTURE)
    out = tmp_path / "student"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_student.py"), "--out", str(out), str(md)],
        check=True,
        capture_output=True,
    )
    nb = nbformat.read(out / "09_fixture.ipynb", as_version=4)
    text = "\n".join(c.source for c in nb.cells)
    assert solution_lines(FIXTURE) >= {
        "secret_answer_one = x + 1",
        "Only prose here: the secret prose answer.",
        "A non-gated secret solution.",
    }
    assert not solution_lines(FIXTURE) & notebook_text_lines(nb)
    assert "secret" not in text and "solution" not in text
    for kept in ["Compute $x + 1$.", "A note the students keep.", "Last one.", "Closing words."]:
        assert kept in text
    assert [line for line in text.splitlines() if line.startswith("**Exercise")] == [
        "**Exercise 9.1** (Warm-up).",
        "**Exercise 9.2**.",
        "**Exercise 9.3**.",
    ]
    answers = [c.source for c in nb.cells if c.source.startswith("# Your answer")]
    assert answers == ["# Your answer to exercise 9.1."]  # only ex 1's solution had code
    assert nb.cells[0].metadata["tags"] == [make_notebooks.INSTALL_TAG]
    nbformat.validate(nb)


def test_student_rejects_unpaired_markers(tmp_path):
    md = tmp_path / "09_broken.md"
    md.write_text(FIXTURE.replace(":::{solution-end}\n:::\n\n::::{exercise}", "::::{exercise}"))
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "make_student.py"),
            "--out",
            str(tmp_path),
            str(md),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and "09_broken.md" in done.stderr


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_student.py"), "--out", str(out)]
        + [str(md) for md in CHAPTERS],
        check=True,
        capture_output=True,
    )
    return out


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_no_solution_leaks_into_student_notebooks(md, student_dir):
    nb = nbformat.read(student_dir / md.with_suffix(".ipynb").name, as_version=4)
    leaked = solution_lines(md.read_text()) & notebook_text_lines(nb)
    assert not leaked, f"solution lines in the student notebook of {md.name}: {sorted(leaked)}"
    text = json.dumps([c.source for c in nb.cells])
    assert "{solution" not in text
    n_exercises = len(re.findall(r"^(?::{3,}|`{3,})\{exercise\}", md.read_text(), re.M))
    assert text.count("**Exercise ") == n_exercises


# -- plain Markdown for Jupyter and Colab, and the instructor's copy -----------------------


@pytest.mark.parametrize("md", PAGES, ids=lambda p: p.stem)
def test_committed_notebooks_read_as_plain_markdown_without_solutions(md):
    """Colab renders no MyST: no role, directive or labelled display may be left, and the
    committed notebook is the student's (no line of a solution)."""
    from plain_markdown import leftover_myst

    nb = nbformat.read(make_notebooks.notebook_path(md), as_version=4)
    left = [x for c in nb.cells if c.cell_type == "markdown" for x in leftover_myst(c.source)]
    assert not left, f"MyST left in {md.with_suffix('.ipynb').name}: {left[:5]}"
    leaked = solution_lines(md.read_text()) & notebook_text_lines(nb)
    assert not leaked, f"solution lines in {md.with_suffix('.ipynb').name}: {sorted(leaked)[:5]}"
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    n = int(md.name[:2]) if md.name[:2].isdigit() else None
    labelled = len(re.findall(r"^\$\$\s*\(eq-[\w-]+\)\s*$", md.read_text(), re.M))
    assert [f"\\tag{{{n}.{k}}}" in text for k in range(1, labelled + 1)] == [True] * labelled


def test_roles_become_the_numbers_the_html_book_shows(tmp_path):
    from plain_markdown import BookIndex, MystError

    (tmp_path / "03_first.md").write_text("# A first chapter\n\n$$\na = b\n$$ (eq-ab)\n")
    (tmp_path / "04_second.md").write_text(
        "# Second\n\n$$\nx\n$$ (eq-x)\n\n$$\ny\n$$ (eq-y)\n\n:::{exercise}\n:label: ex-4-1\nDo.\n:::\n"
    )
    index = BookIndex.build(sorted(tmp_path.glob("0*.md")))
    text = (
        "By {eq}`eq-y` and {eq}`eq-ab` ({cite}`atanov2019dwp,blei2017vi`); see exercise "
        "{ref}`ex-4-1` and {doc}`03_first`.\n$$\ny\n$$ (eq-y)\n:::{note} Careful\nkept\n:::"
    )
    out = index.convert(text, "04_second.md")
    assert out.startswith("By (4.2) and (3.1) ([Atanov et al., 2019; Blei et al., 2017]); see ")
    assert "see Exercise 4.1 and chapter 3 (*A first chapter*)." in out
    assert "y\n\\tag{4.2}\n$$" in out and "**Careful.**\nkept" in out and ":::" not in out
    with pytest.raises(MystError, match=r"\{eq\}`eq-nope` points at nothing"):
        index.convert("{eq}`eq-nope`", "04_second.md")
    with pytest.raises(MystError, match=r"no entry \['nobody2020'\]"):
        index.convert("{cite}`nobody2020`", "04_second.md")


def test_the_instructor_copy_keeps_the_solutions(tmp_path):
    md = tmp_path / "09_fixture.md"
    md.write_text(FIXTURE)
    out = tmp_path / "instructor"
    script = str(ROOT / "scripts" / "make_student.py")
    subprocess.run(
        [sys.executable, script, "--solutions", "--out", str(out), str(md)],
        check=True,
        capture_output=True,
    )
    nb = nbformat.read(out / "09_fixture.ipynb", as_version=4)
    text = "\n".join(c.source for c in nb.cells)
    assert solution_lines(FIXTURE) - {"A non-gated secret solution."} <= notebook_text_lines(nb)
    assert "**Solution to Exercise 9.1.**" in text and "**Solution to Exercise 9.2.**" in text
    assert "{solution" not in text and "# Your answer" not in text


def test_intro_lists_the_measured_time_of_every_exercise():
    """book/intro.md's instructors' table is what book/exercise_times.json renders to, and it
    names every exercise the chapters define, each with a time."""
    times = make_notebooks.EXERCISE_TIMES
    if not times.exists():
        pytest.skip("no book/exercise_times.json committed yet")
    intro = make_notebooks.INTRO.read_text()
    assert intro == make_notebooks.intro_text(), "run `make notebooks` and commit book/intro.md"
    record = json.loads(times.read_text())
    table = intro[intro.index(make_notebooks.TABLE_START) : intro.index(make_notebooks.TABLE_END)]
    for md in make_notebooks.chapters():
        labels = re.findall(r"^:label: (ex-\d+-\d+)$", md.read_text(), re.M)
        assert labels, md
        timed = record["chapters"][md.name]["exercises"]
        assert list(timed) == labels, f"{md.name}: re-run scripts/cell_times.py on it"
        for label in labels:
            number = label.removeprefix("ex-").replace("-", ".")
            code = record["chapters"][md.name]["exercise_code_cells"][label]
            shown = make_notebooks.seconds_text(timed[label]) if code else "no code"
            assert f"{number}: {shown}" in table


def test_exercise_times_format():
    assert make_notebooks.seconds_text(0.4) == "under 1 s"
    assert make_notebooks.seconds_text(42.4) == "42 s"
    assert make_notebooks.seconds_text(125) == "2 min 05 s"
    assert make_notebooks.seconds_text(1500) == "25 min"


def test_slide_map_names_sections_that_exist():
    """The intro's slide-to-section map quotes section titles; each must be a ``##`` heading of
    a chapter that its row links."""
    intro = make_notebooks.INTRO.read_text()
    rows = [ln for ln in intro.splitlines() if ln.startswith("| ") and "{doc}`" in ln]
    assert len(rows) >= 7
    headings = {}
    for md in [*make_notebooks.chapters(), make_notebooks.INTRO.with_name("conclusion.md")]:
        headings[md.stem] = set(re.findall(r"^## (.+?)\s*$", md.read_text(), re.M))
    for row in rows:
        docs = re.findall(r"\{doc\}`([^`]+)`", row)
        known = set().union(*(headings[d] for d in docs))
        for title in re.findall(r'"([^"]+)"', row):
            assert title in known, f"{title!r} is not a section of {docs}"
