"""MyST -> the Markdown that Jupyter and Colab render: for the notebooks made from the chapters.

The HTML book is built by Sphinx, which understands MyST roles and directives; a notebook
opened in Colab or Jupyter does not, and shows them raw. This module rewrites a chapter's
Markdown with the numbers the HTML book shows (chapters are numbered by their file, ``04_...``
is chapter 4; equations, exercises and figures are numbered per chapter, as in ``_toc.yml``'s
numbered parts):

- ``$$ ... $$ (eq-x)`` -> the same display with ``\\tag{4.2}``; ``{eq}`eq-x``` -> ``(4.2)``;
- ``{ref}`ex-4-3``` -> ``Exercise 4.3``; ``{doc}`03_vae``` -> ``chapter 3 (*The variational
  autoencoder*)``;
- ``{cite}`a,b``` -> ``[Atanov et al., 2019; ...]`` from ``book/references.bib``;
- exercise directives -> a bold ``**Exercise 4.3**`` line (see ``make_student.py`` for the
  solutions).

:func:`leftover_myst` lists what a converted text still holds of MyST: the notebook tests fail
on anything it finds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIB = ROOT / "book" / "references.bib"

ROLE = re.compile(r"\{(?P<role>[\w:-]+)\}`(?P<target>[^`]*)`")
EQ_LABEL = re.compile(r"^\$\$\s*\((?P<label>[\w-]+)\)\s*$")
EX_LABEL = re.compile(r"^:label:\s*(?P<label>[\w-]+)\s*$")
EX_OPEN = re.compile(r"^(?::{3,}|`{3,})\s*\{exercise\}")
ADMONITION = re.compile(
    r"^(?P<fence>:{3,})\{(?P<name>note|tip|hint|warning|important|caution|admonition)\}"
    r"\s*(?P<title>.*?)\s*$"
)


class MystError(ValueError):
    """A role points at something the book does not define."""


def chapter_number(md: Path) -> int:
    """``book/04_implicit_prior.md`` -> 4."""
    m = re.match(r"(\d+)_", md.name)
    if not m:
        raise MystError(f"{md.name}: a chapter file is named NN_title.md")
    return int(m.group(1))


def _title(text: str, fallback: str) -> str:
    m = re.search(r"^# (.+)$", text, re.M)
    return m.group(1).strip() if m else fallback


def _bib_entries(path: Path = BIB) -> dict[str, str]:
    """``{key: "Atanov et al., 2019"}`` from a BibTeX file (author and year fields)."""
    out = {}
    text = path.read_text() if path.exists() else ""
    for m in re.finditer(r"@\w+\{([^,]+),(.*?)\n\}", text, re.S):
        key, body = m.group(1).strip(), m.group(2)
        author = re.search(r"author\s*=\s*[{\"](.+?)[}\"],?\s*\n", body, re.S)
        year = re.search(r"year\s*=\s*[{\"]?(\d{4})", body)
        names = [a.strip() for a in (author.group(1) if author else key).split(" and ")]
        last = [n.split(",")[0].strip() if "," in n else n.split()[-1] for n in names if n]
        last = [re.sub(r"[{}\\]", "", n) for n in last]
        who = last[0] if len(last) == 1 else " and ".join(last) if len(last) == 2 else last[0]
        if len(last) > 2:
            who += " et al."
        out[key] = f"{who}, {year.group(1) if year else 'n.d.'}"
    return out


@dataclass
class BookIndex:
    """Every label the chapters define, with the number the HTML book gives it."""

    equations: dict[str, str] = field(default_factory=dict)
    exercises: dict[str, str] = field(default_factory=dict)
    chapters: dict[str, str] = field(default_factory=dict)  # doc name -> "chapter N (*Title*)"
    citations: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(cls, mds: list[Path], bib: Path = BIB) -> BookIndex:
        index = cls(citations=_bib_entries(bib))
        for md in sorted(mds):
            c, text = chapter_number(md), md.read_text()
            index.chapters[md.stem] = f"chapter {c} (*{_title(text, md.stem)}*)"
            eqs = exs = 0
            in_exercise = False
            for line in text.splitlines():
                if m := EQ_LABEL.match(line.strip()):
                    eqs += 1
                    index.equations[m["label"]] = f"{c}.{eqs}"
                if EX_OPEN.match(line.strip()):
                    exs += 1
                    in_exercise = True
                    continue
                if in_exercise:
                    if m := EX_LABEL.match(line.strip()):
                        index.exercises[m["label"]] = f"{c}.{exs}"
                    in_exercise = False
        for md in sorted(mds[0].parent.glob("[!0]*.md")) if mds else []:  # back-matter pages
            index.chapters.setdefault(
                md.stem, f"the page *{_title(md.read_text(), md.stem)}* of the book"
            )
        return index

    def exercise_number(self, md: Path, k: int) -> str:
        """The number of the k-th exercise (1-based) of chapter ``md``."""
        return f"{chapter_number(md)}.{k}"

    def role(self, role: str, target: str, where: str) -> str:
        """The plain text of one MyST role."""
        target = target.strip()
        if role == "doc" and target.endswith(">") and "<" in target:  # {doc}`text <name>`
            target = target[target.rindex("<") + 1 : -1]
        table = {
            "eq": self.equations,
            "ref": self.exercises,
            "doc": self.chapters,
        }.get(role)
        if role in ("cite", "cite:p", "cite:t"):
            keys = [k.strip() for k in target.split(",") if k.strip()]
            missing = [k for k in keys if k not in self.citations]
            if missing:
                raise MystError(f"{where}: no entry {missing} in {BIB.name}")
            return "[" + "; ".join(self.citations[k] for k in keys) + "]"
        if table is None:
            raise MystError(f"{where}: the role {{{role}}} has no plain form; add one")
        name = Path(target).name if role == "doc" else target
        if name not in table:
            raise MystError(f"{where}: {{{role}}}`{target}` points at nothing the book defines")
        if role == "eq":
            return f"({table[name]})"
        if role == "ref":
            return f"Exercise {table[name]}"
        return table[name]

    def convert(self, text: str, where: str = "") -> str:
        """``text`` (one Markdown cell) with equations tagged, admonitions (``:::{note}``) as
        a bold first word, and every role written out."""
        lines: list[str] = []
        open_fences: list[str] = []
        for line in text.split("\n"):
            if m := ADMONITION.match(line.strip()):
                open_fences.append(m["fence"])
                title = m["title"] or m["name"].capitalize()
                lines.append(f"**{title}.**")
                continue
            if open_fences and line.strip() == open_fences[-1]:
                open_fences.pop()
                continue
            if m := EQ_LABEL.match(line.strip()):
                number = self.equations.get(m["label"])
                if number is None:
                    raise MystError(f"{where}: equation label {m['label']} was not indexed")
                lines.append(f"\\tag{{{number}}}")
                lines.append("$$")
                continue
            lines.append(line)
        text = "\n".join(lines)
        # "exercise {ref}`ex-1-3`" would read "exercise Exercise 1.3"
        text = re.sub(r"(?i)\bexercises?\s+(?=\{ref\}`ex-)", "", text)
        return ROLE.sub(lambda m: self.role(m["role"], m["target"], where), text)


def leftover_myst(text: str) -> list[str]:
    """What of MyST is still in ``text``: roles, directive fences, labelled displays."""
    found = [m.group(0) for m in ROLE.finditer(text)]
    found += [ln for ln in text.splitlines() if re.match(r"^(:{3,}|`{3,})\s*\{[\w-]+\}", ln)]
    found += [ln for ln in text.splitlines() if EQ_LABEL.match(ln.strip())]
    found += [ln for ln in text.splitlines() if re.match(r"^:(label|class|tags):", ln.strip())]
    return found
