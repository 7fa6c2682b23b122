"""Each kernel bank's distance to the released bank, from the committed bank statistics, and its
rank correlation with the accuracy of the priors trained on the banks.

Run from the repository's root:
``python -m studies.bank_fingerprint --out results/bank-fingerprint`` (``--check``: exit 1 when
the folder's fingerprint.csv, fingerprint.md or README block is stale).
"""

from __future__ import annotations

import argparse
import sys

from dwp_lib.cli import debug_option, run_guarded

from .report import cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m studies.bank_fingerprint", description=__doc__)
    p.add_argument("--out", required=True, help="output folder (csv, table, figure, provenance)")
    p.add_argument(
        "--results", default=None, help="the results folder (default: the repository's results/)"
    )
    p.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if the folder is stale"
    )
    debug_option(p)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    return run_guarded(lambda: cli(args), args.debug)


if __name__ == "__main__":
    sys.exit(main())
