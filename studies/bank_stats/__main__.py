"""Kernel statistics of our banks beside the released ones (table and figure).

Run from the repository's root: ``python -m studies.bank_stats --help``.
"""

from __future__ import annotations

import argparse
import sys

from dwp_lib.cli import debug_option, notmnist_option, run_guarded
from dwp_lib.config import PRESETS

from .bank_stats import cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m studies.bank_stats", description=__doc__)
    p.add_argument("--preset", choices=PRESETS, default="book", help="which of our banks")
    p.add_argument("--out", required=True, help="output folder (stats.csv, figures, provenance)")
    p.add_argument("--seed", type=int, default=0, help="seed of the Xavier reference slices")
    p.add_argument(
        "--also",
        action="append",
        metavar="CONFIG",
        help="add the bank of this config file (e.g. other source-net settings; repeatable)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="a setting for every bank built here, e.g. source.workers=0 to train the source "
        "nets in this process (settings that change a bank make another bank; repeatable)",
    )
    notmnist_option(p)
    debug_option(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_guarded(lambda: cli(args), args.debug)


if __name__ == "__main__":
    sys.exit(main())
