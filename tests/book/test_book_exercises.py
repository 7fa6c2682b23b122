"""Every chapter ends with at least three exercises, each with a dropdown solution.

The form (sphinx-exercise, gated solutions so that solutions can hold code cells):

    :::{exercise}
    :label: ex-3-1
    The question.
    :::

    :::{solution-start} ex-3-1
    :class: dropdown
    :::

    ```{code-cell} ipython3
    ...
    ```

    :::{solution-end}
    :::

Each exercise has a unique ``:label:``; exactly one ``{solution-start}`` names it, comes after
it, has ``:class: dropdown`` and is closed by a ``{solution-end}`` before the next solution
starts. ``make student`` relies on these markers to strip the solutions.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import make_notebooks  # noqa: E402

MIN_EXERCISES = 3
OPEN = re.compile(
    r"^(?P<fence>:{3,}|`{3,})\{(?P<name>exercise|solution-start|solution-end)\}\s*(?P<arg>.*?)\s*$"
)
OPTION = re.compile(r"^:(?P<key>[\w-]+):\s*(?P<value>.*?)\s*$")


def directives(text: str) -> list[dict]:
    """The exercise/solution directives of a chapter, in order, with their options."""
    found = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = OPEN.match(line.strip())
        if not m:
            continue
        options = {}
        for following in lines[i + 1 :]:
            o = OPTION.match(following.strip())
            if not o:
                break
            options[o["key"]] = o["value"]
        found.append({"name": m["name"], "arg": m["arg"], "options": options, "line": i + 1})
    return found


def problems_of(text: str) -> list[str]:
    """What is wrong with a chapter's exercises (empty when all is well)."""
    items = directives(text)
    exercises = [d for d in items if d["name"] == "exercise"]
    problems = []
    if len(exercises) < MIN_EXERCISES:
        problems.append(f"{len(exercises)} exercise(s), at least {MIN_EXERCISES} wanted")
    labels = [d["options"].get("label") for d in exercises]
    for d, label in zip(exercises, labels, strict=True):
        if not label:
            problems.append(f"line {d['line']}: exercise without :label:")
    for label, n in Counter(labels).items():
        if label and n > 1:
            problems.append(f"label {label} used by {n} exercises")
    seen: set[str] = set()
    starts: Counter[str] = Counter()
    open_start = None
    for d in items:
        if d["name"] == "exercise":
            seen.add(d["options"].get("label") or "")
        elif d["name"] == "solution-start":
            if open_start is not None:
                problems.append(f"line {d['line']}: solution-start before the last one ended")
            open_start = d
            starts[d["arg"]] += 1
            if d["arg"] not in seen:
                problems.append(
                    f"line {d['line']}: solution-start {d['arg']!r} names no earlier exercise"
                )
            if "dropdown" not in d["options"].get("class", "").split():
                problems.append(
                    f"line {d['line']}: solution-start {d['arg']} lacks :class: dropdown"
                )
        elif d["name"] == "solution-end":
            if open_start is None:
                problems.append(f"line {d['line']}: solution-end without a solution-start")
            open_start = None
    if open_start is not None:
        problems.append(f"line {open_start['line']}: solution-start has no solution-end")
    for label in labels:
        if label and starts[label] != 1:
            problems.append(f"exercise {label} has {starts[label]} solution-start blocks, wants 1")
    return problems


GOOD = """
:::{exercise}
:label: ex-1-1
A.
:::
:::{solution-start} ex-1-1
:class: dropdown
:::
```{code-cell} ipython3
1
```
:::{solution-end}
:::
"""


def test_checker_accepts_the_documented_form():
    three = GOOD + GOOD.replace("ex-1-1", "ex-1-2") + GOOD.replace("ex-1-1", "ex-1-3")
    assert problems_of(three) == []


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        (GOOD, "1 exercise(s)"),
        (GOOD.replace(":class: dropdown\n", ""), "lacks :class: dropdown"),
        (GOOD.replace(":::{solution-end}\n:::\n", ""), "has no solution-end"),
        (GOOD.replace("solution-start} ex-1-1", "solution-start} ex-9-9"), "names no earlier"),
        (GOOD + GOOD, "used by 2 exercises"),
        (GOOD.replace(":label: ex-1-1\n", ""), "without :label:"),
    ],
)
def test_checker_rejects(text, complaint):
    assert any(complaint in p for p in problems_of(text)), problems_of(text)


@pytest.mark.parametrize("md", make_notebooks.chapters(), ids=lambda p: p.stem)
def test_chapter_exercises(md):
    problems = problems_of(md.read_text())
    assert not problems, f"{md.name}: " + "; ".join(problems)
