"""The short setting's validation table: every candidate setting under
``results/short-setting-search/`` against the authors' setting, prior by prior.

Run from the repository's root: ``python -m studies.short_setting --update
results/short-setting-search/README.md`` (or ``--check`` to fail when the note is stale).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dwp_lib.cli import debug_option, run_guarded
from studies import RESULTS_DIR

from .validation import markdown, settings, update


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m studies.short_setting", description=__doc__)
    p.add_argument("--results", type=Path, default=RESULTS_DIR, help="the results folder")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--update", type=Path, metavar="NOTE", help="write the table into NOTE")
    g.add_argument("--check", type=Path, metavar="NOTE", help="exit 1 if NOTE's table is stale")
    debug_option(p)
    args = p.parse_args(argv)
    return run_guarded(lambda: run(args), args.debug)


def run(args: argparse.Namespace) -> int:
    if args.update:
        update(args.update, args.results)
        print(f"wrote the validation table into {args.update}")
    elif args.check:
        if not update(args.check, args.results, check=True):
            print(f"{args.check}: the table is stale; run --update", file=sys.stderr)
            return 1
        print(f"{args.check}: up to date")
    else:
        print(markdown(settings(args.results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
