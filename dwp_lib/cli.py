"""Command line: ``python -m dwp_lib <command>`` (also installed as ``dwp``).

Commands
--------
``data prepare``          fetch, verify and cache MNIST and notMNIST (see :mod:`dwp_lib.data`)
``source-nets``           train the source CNNs and cut the kernel bank (:mod:`dwp_lib.source_nets`, :mod:`dwp_lib.kernel_bank`)
``reproduce``             run the whole pipeline and write results (:mod:`dwp_lib.experiment`)
``ablate``                run named ablation cells, write the table (:mod:`dwp_lib.ablation`)
``release``               fetch and verify the authors' released kernel VAEs and banks (:mod:`dwp_lib.release`)
``score-priors``          score kernel VAEs as densities of held-out and random slices (:mod:`dwp_lib.prior_scores`)
``bank-stats``            kernel statistics of our bank beside the released one (:mod:`dwp_lib.bank_stats`)
``own-prior``             the table of the search for a prior of our own, from the committed runs (:mod:`dwp_lib.own_prior`)

Every command takes ``--preset tiny|book|paper`` where it trains something.
"""

from __future__ import annotations

import argparse
import sys

from .config import PRESETS


def _data(args: argparse.Namespace) -> int:
    from . import data

    return data.cli(args)


def _source_nets(args: argparse.Namespace) -> int:
    from . import kernel_bank

    return kernel_bank.cli(args)


def _reproduce(args: argparse.Namespace) -> int:
    from . import experiment

    return experiment.cli(args)


def _ablate(args: argparse.Namespace) -> int:
    from . import ablation

    return ablation.cli(args)


def _release(args: argparse.Namespace) -> int:
    from . import release

    return release.cli(args)


def _score_priors(args: argparse.Namespace) -> int:
    from . import prior_scores

    return prior_scores.cli(args)


def _bank_stats(args: argparse.Namespace) -> int:
    from . import bank_stats

    return bank_stats.cli(args)


def _own_prior(args: argparse.Namespace) -> int:
    from . import own_prior

    return own_prior.cli(args)


def _notmnist_option(p: argparse.ArgumentParser) -> None:
    """``--notmnist small|large|synthetic``: the notMNIST the source nets train on."""
    p.add_argument(
        "--notmnist",
        default=None,
        choices=["small", "large", "synthetic"],
        help="the source nets' notMNIST: the real tarballs (small, large; the cache, "
        "$DWP_CACHE/data/downloads/ or the author's site) or the notMNIST-style synthetic set "
        "(default: the preset's or config's, source.data_variant)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dwp_lib", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("data", help="prepare the data sets")
    p.add_argument("action", choices=["prepare"], help="fetch, verify and cache every data set")
    p.add_argument(
        "--notmnist",
        default="synthetic",
        choices=["small", "large", "synthetic"],
        help="notMNIST variant: the real tarballs (small, large) or the notMNIST-style synthetic set",
    )
    p.add_argument(
        "--preset", choices=PRESETS, default=None, help="size of the synthetic set (DWP_PRESET)"
    )
    p.set_defaults(func=_data)

    p = sub.add_parser(
        "release",
        help="fetch (or find) and verify the paper authors' released kernel VAEs and banks "
        "(GPL-3.0)",
    )
    p.set_defaults(func=_release)

    p = sub.add_parser(
        "score-priors",
        help="score the released prior and ours as densities over kernels (ELBO, IW log p(w))",
    )
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
    p.set_defaults(func=_score_priors)

    p = sub.add_parser(
        "bank-stats", help="statistics of our kernel banks beside the released ones (figure)"
    )
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
    _notmnist_option(p)
    p.set_defaults(func=_bank_stats)

    p = sub.add_parser(
        "own-prior",
        help="the table of every prior tried against the released one (authors' setting, n = 50)",
    )
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
    p.set_defaults(func=_own_prior)

    p = sub.add_parser("source-nets", help="train source CNNs on notMNIST and cut the kernel bank")
    p.add_argument("--preset", choices=PRESETS, default="book")
    p.add_argument("--out", default=None, help="folder for the nets and the bank (default: cache)")
    _notmnist_option(p)
    p.set_defaults(func=_source_nets)

    p = sub.add_parser("reproduce", help="run every stage and write results, figures, provenance")
    p.add_argument(
        "--preset",
        choices=PRESETS,
        default=None,
        help="starting preset (default: the config file's, else book)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="output folder (resumes if it exists; not needed with --estimate or --print-config)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="override a setting, e.g. bayes.steps=2000, source.prune_norms=[0.3,0.1], "
        "grid.methods=dwp:dwp,normal:xavier (repeatable; see dwp_lib.experiment)",
    )
    p.add_argument("--config", default=None, help="JSON or TOML file of settings (before --set)")
    _notmnist_option(p)
    p.add_argument("--name", default=None, help="label of the run in results and figures")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument(
        "--estimate",
        action="store_true",
        help="time a few steps and print what the run would take on this machine, then exit",
    )
    p.add_argument(
        "--devices",
        default=None,
        metavar="K,K,...",
        help="with --estimate: the device counts to print wall times for (default 1,2,4,8)",
    )
    p.add_argument(
        "--estimate-from",
        default=None,
        metavar="FILE",
        help="with --estimate: time nothing, read the step times of an estimate printed before "
        "(e.g. on a GPU) and print its wall times for --devices",
    )
    p.set_defaults(func=_reproduce)

    p = sub.add_parser("ablate", help="run named ablation cells and write the table (issue 9)")
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
    p.set_defaults(func=_ablate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
