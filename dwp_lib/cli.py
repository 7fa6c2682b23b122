"""Command line: ``python -m dwp_lib <command>`` (also installed as ``dwp``).
Commands: ``data prepare``, ``source-nets``, ``reproduce`` (the whole pipeline), ``release``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

from .config import PRESETS


def _command(module: str, name: str = "cli") -> Callable[[argparse.Namespace], int]:
    """A command's function ``module.name``, imported only when the command runs."""
    return lambda args: getattr(importlib.import_module(module, __package__), name)(args)


def notmnist_option(p: argparse.ArgumentParser) -> None:
    """``--notmnist small|large|synthetic|sample``: the notMNIST the source nets train on."""
    p.add_argument(
        "--notmnist",
        choices=["small", "large", "synthetic", "sample"],
        help="the source nets' notMNIST: the real tarballs (small, large; the cache, "
        "$DWP_CACHE/data/downloads/ or the author's site), the notMNIST-style synthetic set, or "
        "sample (10,000 real images of notMNIST_small, pinned idx files, not split by font) "
        "(default: the preset's or config's, source.data_variant)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dwp_lib", description=__doc__.splitlines()[0])
    debug_option(parser)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("data", help="prepare the data sets")
    p.add_argument("action", choices=["prepare"], help="fetch, verify and cache every data set")
    p.add_argument(
        "--notmnist",
        default="synthetic",
        choices=["small", "large", "synthetic", "sample"],
        help="notMNIST variant: the real tarballs (small, large), the notMNIST-style synthetic set, "
        "or sample (10,000 real images of notMNIST_small, not split by font)",
    )
    p.add_argument("--preset", choices=PRESETS, help="size of the synthetic set (DWP_PRESET)")
    p.set_defaults(func=_command(".data.prepare", "run"))

    p = sub.add_parser(
        "release",
        help="fetch (or find) and verify the paper authors' released kernel VAEs and banks "
        "(GPL-3.0)",
    )
    p.set_defaults(func=_command(".release"))

    p = sub.add_parser("source-nets", help="train source CNNs on notMNIST and cut the kernel bank")
    p.add_argument("--preset", choices=PRESETS, default="book")
    p.add_argument("--out", default=None, help="folder for the nets and the bank (default: cache)")
    notmnist_option(p)
    p.set_defaults(func=_command(".experiment.sources"))

    p = sub.add_parser("reproduce", help="run every stage and write results, figures, provenance")
    p.add_argument(
        "--preset", choices=PRESETS, help="starting preset (default: the config file's, else book)"
    )
    p.add_argument(
        "--out",
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
    notmnist_option(p)
    p.add_argument("--name", default=None, help="label of the run in results and figures")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument(
        "--estimate",
        action="store_true",
        help="time a few steps and print what the run would take on this machine, then exit",
    )
    p.add_argument(
        "--devices",
        metavar="K,K,...",
        help="with --estimate: the device counts to print wall times for (default 1,2,4,8)",
    )
    p.add_argument(
        "--estimate-from",
        metavar="FILE",
        help="with --estimate: time nothing, read the step times of an estimate printed before "
        "(e.g. on a GPU) and print its wall times for --devices",
    )
    p.set_defaults(func=_command(".experiment"))

    return parser


def user_error(err: BaseException) -> str | None:
    """One line for an error whose message says what to do; None for a bug (a traceback)."""
    from .artifacts import ArtifactError
    from .config import ConfigValueError
    from .data import DataUnavailableError
    from .experiment import ExperimentError
    from .release import ReleaseUnavailableError
    from .train import NonFiniteLossError

    known = (ArtifactError, ConfigValueError, DataUnavailableError, ExperimentError,
             ReleaseUnavailableError, NonFiniteLossError)  # fmt: skip
    if isinstance(err, known):
        return str(err)
    if isinstance(err, OSError):  # read-only, full, missing, or a path of the wrong kind
        what = err.strerror or type(err).__name__
        where = f" ({err.filename})" if err.filename else ""
        full = "free some space there, or point DWP_CACHE / --out at a disk that has it"
        hint = {
            28: full,
            122: full,  # over the disk quota
            13: "choose a folder you may write to (--out, DWP_CACHE), or fix its permissions",
            30: "choose a folder on a writable file system (--out, DWP_CACHE)",
            21: "a folder stands where a file is expected: move it away, or choose another path",
            20: "a file stands where a folder is expected: move it away, or choose another path",
            17: "a file stands where a folder is expected: move it away, or choose another path",
        }.get(err.errno, "check the path and try again")
        return f"{what}{where}: {hint}"
    return None


def run_guarded(run: Callable[[], int | None], debug: bool = False) -> int:
    """``run()``'s exit code; a :func:`user_error` is printed as ``error: ...``, exit 2."""
    try:
        return int(run() or 0)
    except Exception as err:  # a message, not a traceback
        message = user_error(err)
        if message is None or debug:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2


def debug_option(p: argparse.ArgumentParser) -> None:
    """``--debug``: show the traceback of an error instead of its message."""
    p.add_argument(
        "--debug", action="store_true", help="show the traceback of an error instead of its message"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_guarded(lambda: args.func(args), args.debug)


if __name__ == "__main__":
    sys.exit(main())
