"""The table of every prior tried against the released one (authors' setting, n = 50).

Run from the repository's root: ``python -m studies.own_prior --help``.
"""

from __future__ import annotations

import argparse
import sys

from dwp_lib.cli import debug_option, run_guarded

from .own_prior import cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m studies.own_prior", description=__doc__)
    p.add_argument(
        "--results", default=None, help="the results folder (default: the repository's results/)"
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--update", metavar="FILE", help="write the table into FILE between its markers")
    g.add_argument(
        "--check", metavar="FILE", help="exit 1 if FILE's table is not the one the runs give"
    )
    g.add_argument(
        "--noise",
        metavar="FOLDER",
        help="write FOLDER/weight-noise.{csv,md}: the posterior's noise beside the prior "
        "decoder's variance at the weights, from the networks FOLDER saved (grid.save_models)",
    )
    debug_option(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_guarded(lambda: cli(args), args.debug)


if __name__ == "__main__":
    sys.exit(main())
