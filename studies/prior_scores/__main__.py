"""Score the released prior and ours as densities over kernels (ELBO, IW log p(w)).

Run from the repository's root: ``python -m studies.prior_scores --help``.
"""

from __future__ import annotations

import argparse
import sys

from dwp_lib.cli import debug_option, run_guarded
from dwp_lib.config import MAX_SEED, PRESETS

from .prior_scores import cli


def count(what: str):
    """An argparse type: an integer >= 1, else an error that says why ``what`` needs one."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{value}: give at least 1 ({what})")
        return value

    return parse


def seed(text: str) -> int:
    """An argparse type: a seed in torch's range [0, 2**63 - 1]."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"{value}: a seed is in [0, 2**63 - 1]")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m studies.prior_scores", description=__doc__)
    p.add_argument("--preset", choices=PRESETS, default="book", help="which of our priors")
    p.add_argument("--out", required=True, help="output folder (scores.csv, figures, provenance)")
    p.add_argument(
        "--iw-samples",
        type=count("the IW estimate of log p(w) averages over that many samples of z"),
        default=1000,
        help="K of the IW estimate of log p(w)",
    )
    p.add_argument(
        "--max-slices",
        type=count("with no slice to score, every score would be NaN"),
        default=2000,
        help="slices per kind (at most)",
    )
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument(
        "--threads",
        type=count("torch threads"),
        default=None,
        help="torch threads (default: torch's)",
    )
    p.add_argument(
        "--also",
        action="append",
        metavar="CONFIG",
        help="a config file (TOML/JSON) whose kernel VAEs are scored as one more prior, named "
        "after its 'name' (e.g. configs/released-bank-vaes.toml: ours fitted to the released "
        "banks); repeatable",
    )
    debug_option(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_guarded(lambda: cli(args), args.debug)


if __name__ == "__main__":
    sys.exit(main())
