"""Every labelled display equation of the book is findable in the library by grepping its label.

The book defines a label by closing a ``$$ ... $$`` block with ``$$ (eq-some-name)``; the library
cites it in a docstring as ``(book/0N, eq-some-name)``, N being the chapter whose file defines it.
These tests keep the two sides in step: no citation of a label the book lacks, no label the
library never cites (unless it is allowlisted below with a reason), and no citation that names
the wrong chapter.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BOOK = ROOT / "book"
LIB = ROOT / "dwp_lib"

#: Labels that no code computes, each with the reason. Keep it short: a label goes here only if
#: citing it anywhere in ``dwp_lib`` would be untrue.
NOT_IN_CODE = {
    "eq-grad-problem": "states that the gradient cannot move inside the expectation; the "
    "estimators of its left side cite eq-score-function and eq-reparam-grad",
}

DEFINITION = re.compile(r"^\$\$[ \t]*\((eq-[A-Za-z0-9-]+)\)[ \t]*$", re.MULTILINE)
LABEL = re.compile(r"(?<![\w-])eq-[a-z0-9]+(?:-[a-z0-9]+)*")
# "book/03, eq-x", "book/03 eq-x", "book/04 eq. ``eq-x``", also across a docstring line break
CHAPTER_CITATION = re.compile(
    r"book/(\d\d)(?:_\w+(?:\.md)?)?,?\s+(?:eqs?\.\s+)?(?:``)?(eq-[a-z0-9]+(?:-[a-z0-9]+)*)"
)


def _chapter(path: Path) -> str | None:
    m = re.match(r"(\d\d)_", path.name)
    return m.group(1) if m else None


def book_labels() -> dict[str, list[tuple[str | None, str]]]:
    """label -> [(chapter number or None, file name), ...] for every definition in the book."""
    out: dict[str, list[tuple[str | None, str]]] = {}
    for path in sorted(BOOK.glob("*.md")):
        for label in DEFINITION.findall(path.read_text(encoding="utf-8")):
            out.setdefault(label, []).append((_chapter(path), path.name))
    return out


def library_sources() -> dict[str, str]:
    return {
        str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in sorted(LIB.rglob("*.py"))
    }


def cited_labels() -> dict[str, set[str]]:
    """label -> the library files that mention it."""
    out: dict[str, set[str]] = {}
    for name, text in library_sources().items():
        for label in LABEL.findall(text):
            out.setdefault(label, set()).add(name)
    return out


def test_the_book_defines_labels_once():
    defined = book_labels()
    assert len(defined) > 20, f"found only {sorted(defined)}: is DEFINITION still right?"
    twice = {k: [f for _, f in v] for k, v in defined.items() if len(v) > 1}
    assert not twice, f"labels defined more than once in book/*.md: {twice}"


def test_every_cited_label_is_defined_in_the_book():
    defined, cited = book_labels(), cited_labels()
    unknown = {label: sorted(files) for label, files in cited.items() if label not in defined}
    assert not unknown, (
        "dwp_lib cites equation labels that no book/*.md defines as `$$ (eq-...)`: "
        f"{dict(sorted(unknown.items()))}"
    )


def test_every_defined_label_is_cited_in_the_library():
    defined, cited = book_labels(), cited_labels()
    missing = sorted(set(defined) - set(cited) - set(NOT_IN_CODE))
    assert not missing, (
        "book labels that dwp_lib never cites; add `(book/0N, eq-...)` to the docstring of the "
        f"code that computes each, or allowlist it in NOT_IN_CODE with a reason: {missing}"
    )


def test_the_allowlist_is_not_stale():
    defined, cited = book_labels(), cited_labels()
    gone = sorted(set(NOT_IN_CODE) - set(defined))
    assert not gone, f"NOT_IN_CODE names labels the book no longer defines: {gone}"
    now_cited = {label: sorted(cited[label]) for label in NOT_IN_CODE if label in cited}
    assert not now_cited, f"NOT_IN_CODE names labels dwp_lib now cites; drop them: {now_cited}"
    unexplained = sorted(k for k, why in NOT_IN_CODE.items() if not why.strip())
    assert not unexplained, f"NOT_IN_CODE entries without a reason: {unexplained}"


def test_citations_name_the_defining_chapter():
    defined = book_labels()
    wrong = []
    for name, text in library_sources().items():
        for m in CHAPTER_CITATION.finditer(text):
            chapter, label = m.groups()
            chapters = {c for c, _ in defined.get(label, [])}
            if chapters and chapter not in chapters:
                line = text.count("\n", 0, m.start()) + 1
                wrong.append(
                    f"{name}:{line}: book/{chapter}, {label} (defined in chapter "
                    f"{'/'.join(sorted(c or '?' for c in chapters))})"
                )
    assert not wrong, "citations that name the wrong chapter:\n" + "\n".join(wrong)


def test_the_patterns_read_the_citation_styles():
    text = "x (book/02, eq-reparam) y (book/03 eq-vae-elbo) (book/04\n    eq. ``eq-aux-gap``)"
    assert CHAPTER_CITATION.findall(text) == [
        ("02", "eq-reparam"),
        ("03", "eq-vae-elbo"),
        ("04", "eq-aux-gap"),
    ]
    assert LABEL.findall("freq-x eq-a-b, (eq-c)") == ["eq-a-b", "eq-c"]
    assert DEFINITION.findall("$$\na = b\n$$ (eq-a-b)\n$$ x $$\n") == ["eq-a-b"]
