"""Studies that question single findings: each folder holds its code, figures, findings note and
tests, reads the committed runs under ``results/`` and runs from the repository's root
(``python -m studies.<name>``). Not installed with ``dwp_lib``."""

import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from dwp_lib.experiment import ExperimentError

#: The committed runs every study reads (``results/`` of the repository).
RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"


def command_line(module: str, argv: Sequence[str] | None = None) -> str:
    """The command a study ran as, for its provenance: ``python -m <module>`` and its
    arguments (default: this process's), quoted so that a shell runs it again."""
    args = sys.argv[1:] if argv is None else argv
    return " ".join(["python", "-m", module, *(shlex.quote(a) for a in args)])


def format_or_blank(value: float | None, fmt: str) -> str:
    """``value`` in ``fmt``, or an empty table cell for None."""
    return "" if value is None else format(value, fmt)


def with_table(text: str, table: str, where: str, begin: str, end: str) -> str:
    """``text`` with the part between the markers ``begin`` and ``end`` replaced by ``table``."""
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise ExperimentError(
            f"{where} needs one pair of markers, {begin!r} then {end!r}, around the table"
        )
    head, rest = text.split(begin)
    _, tail = rest.split(end)
    return f"{head}{begin}\n{table}{end}{tail}"
