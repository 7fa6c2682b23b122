"""Score the released prior and ours as densities over kernels (ELBO, IW log p(w)).

Run from the repository's root: ``python -m studies.prior_scores --help``.
"""

from __future__ import annotations

import argparse
import sys

from dwp_lib.config import PRESETS

from .prior_scores import cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m studies.prior_scores", description=__doc__)
    p.add_argument("--preset", choices=PRESETS, default="book", help="which of our priors")
    p.add_argument("--out", required=True, help="output folder (scores.csv, figures, provenance)")
    p.add_argument("--iw-samples", type=int, default=1000, help="K of the IW estimate of log p(w)")
    p.add_argument("--max-slices", type=int, default=2000, help="slices per kind (at most)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument(
        "--also",
        action="append",
        metavar="CONFIG",
        help="a config file (TOML/JSON) whose kernel VAEs are scored as one more prior, named "
        "after its 'name' (e.g. configs/released-bank-vaes.toml: ours fitted to the released "
        "banks); repeatable",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    return int(cli(build_parser().parse_args(argv)) or 0)


if __name__ == "__main__":
    sys.exit(main())
