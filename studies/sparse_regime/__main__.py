"""One source net trained with the authors' recipe, its kernels measured after every epoch.

``curve`` trains (or resumes) net 0 and adds a row per epoch to ``OUT/curve.csv``; ``figure``
draws it into ``OUT/figures/curve.png``, beside the released banks when they are in the cache.
Run from the repository's root: ``python -m studies.sparse_regime curve --out FOLDER``.
"""

from __future__ import annotations

import argparse
import sys

from dwp_lib.cli import debug_option, run_guarded

from . import curve, figure


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m studies.sparse_regime", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser(
        "curve",
        help="train net 0 with the authors' recipe (batch 256, Adam lr 1e-3 decayed linearly, "
        "l2 1e-3), a row per epoch; the same command resumes",
    )
    c.add_argument("--out", required=True, help="folder of curve.csv and provenance.json")
    c.add_argument(
        "--widths",
        type=int,
        nargs=2,
        default=[256, 512],
        metavar=("C1", "C2"),
        help="the net's conv widths (default: the authors' 256 512)",
    )
    c.add_argument("--epochs", type=int, default=100, help="epochs; the lr decays over all")
    c.add_argument(
        "--notmnist",
        choices=["sample", "synthetic", "small", "large"],
        default="sample",
        help="the letters the net trains on (default: the real notMNIST sample)",
    )
    c.add_argument("--threads", type=int, default=1, help="torch threads (results depend on it)")
    c.set_defaults(func=curve.cli)
    f = sub.add_parser("figure", help="draw OUT/curve.csv into OUT/figures/curve.png")
    f.add_argument("--out", required=True, help="the folder `curve` wrote")
    f.set_defaults(func=figure.cli)
    for q in (c, f):
        debug_option(q)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    return run_guarded(lambda: args.func(args), args.debug)


if __name__ == "__main__":
    sys.exit(main())
