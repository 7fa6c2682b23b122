"""Run named ablation cells and write the table.

Run from the repository's root: ``python -m studies.ablation --help``.
"""

from __future__ import annotations

import argparse
import sys

from dwp_lib.cli import debug_option, run_guarded
from dwp_lib.config import PRESETS

from .ablation import cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m studies.ablation", description=__doc__)
    p.add_argument("--preset", choices=PRESETS, default="book")
    p.add_argument("--out", required=True, help="output folder for the table and provenance")
    p.add_argument("--cells", default=None, help="comma-separated cell names (default: all)")
    p.add_argument("--set", action="append", help="override, e.g. bayes.steps=2000 (repeatable)")
    p.add_argument(
        "--own-only", action="store_true", help="run only each cell's own runs (read shared ones)"
    )
    p.add_argument(
        "--table-only", action="store_true", help="run nothing: tabulate the runs already made"
    )
    debug_option(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_guarded(lambda: cli(args), args.debug)


if __name__ == "__main__":
    sys.exit(main())
