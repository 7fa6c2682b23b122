"""A prior of our own (book/05, ``results/own-prior-FINDINGS.md``): every cell of the search for
what our deep weight prior lacks, one line each, read from the committed runs.

Each line is one prior at the authors' setting (FConv(32, 128), 10,000 full-batch steps from
log sigma^2 = -10, 256 slices per step, a 10-sample ensemble on all 10,000 test digits, n = 50),
paired by split seed with the released prior and with N(0, 1) from Xavier of
``results/released-authors-setting/``. Nothing in the table is typed: :func:`table_rows` reads
the folders' ``results.csv`` files, refuses a row run at another setting, and says "not run yet"
for a folder without rows. ``python -m dwp_lib own-prior`` prints the table;
``--update FILE`` writes it into the findings note between its markers, and ``--check`` fails
when the note's table is not the one the committed runs give (a test runs it).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .experiment.names import ExperimentError, parse_method
from .experiment.results import RESULT_COLUMNS, read_rows, repo_results_dir

REFERENCE = "released-authors-setting"  # the folder with the released prior and N(0, 1)
RELEASED = "dwp@released:dwp@released"
NORMAL = "normal:xavier"
NORMAL_RELEASED_INIT = "normal:dwp@released"  # N(0, 1) from the released VAEs' samples
N = 50
# every row of the table must have been run at this setting (the authors')
SETTING: Mapping[str, object] = {
    "n": N,
    "steps": 10_000,
    "lr": 0.001,
    "kl_weight": 1.0,
    "dwp_train_reverse": False,
    "channels": "32x128",
    "log_sigma2_init": -10.0,
    "dwp_slices_per_step": 256,
    "eval_samples": 10,
    "test_images": 10_000,
}
BEGIN = "<!-- own-prior-table: written by `python -m dwp_lib own-prior --update`; do not edit -->"
END = "<!-- end own-prior-table -->"


@dataclass(frozen=True)
class PriorCell:
    """One line of the table: a prior (``method``, ``"prior:init"``) in a results folder;
    ``own``: both layers' priors are ours (a candidate for the recipe), not the released one or a
    mix of the two. ``normal``: the N(0, 1) line it is paired with: from Xavier (the paper's
    baseline), or from the released samples for a line that starts there (same init)."""

    label: str
    folder: str
    method: str
    own: bool = True
    normal: str = NORMAL


CELLS: tuple[PriorCell, ...] = (
    PriorCell("released prior (their VAEs, their bank)", REFERENCE, RELEASED, own=False),
    PriorCell("ours: our VAEs, our bank (book preset)", REFERENCE, "dwp:dwp"),
    PriorCell("ours, their bank (1,000-step VAEs)", "released-bank-vaes", "dwp:dwp"),
    PriorCell(
        "ours, their bank (VAEs trained 300 epochs)", "released-bank-vaes-long-prior", "dwp:dwp"
    ),
    PriorCell("ours, our bank rescaled to their norms", "rescaled-bank-vaes", "dwp:dwp"),
    PriorCell(
        "our 5x5 prior on conv2, released 7x7 (released init)",
        "mixed-layer-priors",
        "dwp@released/dwp:dwp@released",
        own=False,
        normal=NORMAL_RELEASED_INIT,
    ),
    PriorCell(
        "our 7x7 prior on conv1, released 5x5 (released init)",
        "mixed-layer-priors",
        "dwp/dwp@released:dwp@released",
        own=False,
        normal=NORMAL_RELEASED_INIT,
    ),
    PriorCell("N(0, 1), Xavier", REFERENCE, NORMAL, own=False),
)


def _check_setting(row: Mapping, where: Path) -> None:
    bad = {k: row.get(k) for k, v in SETTING.items() if row.get(k) != v}
    if bad:
        raise ExperimentError(
            f"{where}: the row of {row.get('prior')}:{row.get('init')}, split seed "
            f"{row.get('seed')}, was not run at the authors' setting ({bad} instead of "
            f"{ {k: SETTING[k] for k in bad} }); move it to another folder or drop it from "
            "own_prior.CELLS"
        )


def accuracies(root: Path, folder: str, method: str) -> dict[int, dict]:
    """``{split seed: row}`` of ``method`` at n = 50 in ``root/folder`` (empty if none)."""
    prior, init = parse_method(method)
    path = root / folder / "results.csv"
    out: dict[int, dict] = {}
    for r in read_rows(path, RESULT_COLUMNS):
        if (r["prior"], r["init"]) != (prior, init) or int(r["n"]) != N:
            continue
        _check_setting(r, path)
        seed = int(r["seed"])
        if seed in out:
            raise ExperimentError(f"{path}: two rows of {method} for split seed {seed}")
        out[seed] = r
    return out


def _values(rows: Mapping[int, dict], column: str) -> list[float]:
    """``column`` of the rows, by split seed, without the rows that lack it (``None``: det)."""
    return [rows[s][column] for s in sorted(rows) if rows[s][column] is not None]


def _paired(mine: Mapping[int, dict], base: Mapping[int, dict]) -> tuple[list[int], list[float]]:
    seeds = sorted(set(mine) & set(base))
    return seeds, [mine[s]["acc_ensemble"] - base[s]["acc_ensemble"] for s in seeds]


def table_rows(root: str | Path | None = None, cells: Sequence[PriorCell] = CELLS) -> list[dict]:
    """One dict per cell: seeds, accuracy mean and std, the paired differences (fractions) to
    the released prior and to N(0, 1) with on how many seeds it is below / above, minutes, and
    two means over seeds of the trained network at its last steps: conv2's mean log sigma^2 and
    the data term, the cross-entropy summed over the 50 training digits under one weight sample
    (``nll``, loss minus KL, printed to 0.01: at a KL of ~30,000, as under the deep weight
    priors, float32 resolves that difference to ~0.004; at N(0, 1)'s ~209,000 only to ~0.03).
    A number a row lacks (``None``) is left out of its mean."""
    root = Path(root) if root is not None else repo_results_dir()
    released = accuracies(root, REFERENCE, RELEASED)
    normals = {m: accuracies(root, REFERENCE, m) for m in {c.normal for c in cells}}
    out = []
    for cell in cells:
        mine = accuracies(root, cell.folder, cell.method)
        acc = [mine[s]["acc_ensemble"] for s in sorted(mine)]
        seconds, ls2, nll = (_values(mine, c) for c in ("seconds", "log_sigma2_conv2", "nll"))
        s_rel, d_rel = _paired(mine, released)
        s_norm, d_norm = _paired(mine, normals[cell.normal])
        out.append(
            {
                "label": cell.label,
                "folder": cell.folder,
                "method": cell.method,
                "own": cell.own,
                "seeds": sorted(mine),
                "mean": statistics.fmean(acc) if acc else None,
                "std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                "vs_released": statistics.fmean(d_rel) if d_rel else None,
                "below_released": sum(d < 0 for d in d_rel),
                "released_seeds": s_rel,
                "vs_normal": statistics.fmean(d_norm) if d_norm else None,
                "above_normal": sum(d > 0 for d in d_norm),
                "normal_seeds": s_norm,
                "normal": cell.normal,
                "minutes": statistics.fmean(seconds) / 60 if seconds else None,
                "devices": sorted({str(mine[s]["device"]) for s in mine}),
                "log_sigma2_conv2": statistics.fmean(ls2) if ls2 else None,
                "log_sigma2_conv2_spread": max(ls2) - min(ls2) if ls2 else None,
                "nll": statistics.fmean(nll) if nll else None,
            }
        )
    return out


def _diff(mean: float | None, count: int, seeds: Sequence[int]) -> str:
    return "" if mean is None else f"{100 * mean:+.1f} ({count}/{len(seeds)})"


def _num(value: float | None, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def markdown(rows: Sequence[Mapping]) -> str:
    """The table, one line per cell (a cell without rows says so)."""
    lines = [
        "| prior (n = 50, authors' setting) | results folder | split seeds | accuracy "
        "| - released prior (points, seeds below) | - N(0, 1) (points, seeds above; init: *) "
        "| conv2 log sigma^2 | train nll (nats) | minutes per cell (device) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        folder = f"`{r['folder']}`"
        if not r["seeds"]:
            lines.append(f"| {r['label']} | {folder} | no row yet | | | | | | |")
            continue
        seeds = ",".join(str(s) for s in r["seeds"])
        mark = "" if r["normal"] == NORMAL else " (released)"
        acc = f"{r['mean']:.3f} ± {r['std']:.3f}" if len(r["seeds"]) > 1 else f"{r['mean']:.3f}"
        lines.append(
            f"| {r['label']} | {folder} | {seeds} | {acc} "
            f"| {_diff(r['vs_released'], r['below_released'], r['released_seeds'])} "
            f"| {_diff(r['vs_normal'], r['above_normal'], r['normal_seeds'])}{mark} "
            f"| {_num(r['log_sigma2_conv2'], '.2f')} | {_num(r['nll'], '.2f')} "
            f"| {_num(r['minutes'], '.0f')} ({', '.join(r['devices'])}) |"
        )
    lines.append(
        "\n(*) N(0, 1) from Xavier, the paper's baseline; \"(released)\": from the released VAEs' "
        "samples, the init of that line."
    )
    return "\n".join(lines) + "\n"


def conv2_prior(method: str) -> str:
    """The prior of conv2 in a method: ``"dwp@released/dwp:..."`` -> ``"dwp"``."""
    prior, _ = parse_method(method)
    return prior.split("/")[-1]


def _span(values: Sequence[float], fmt: str) -> str:
    lo, hi = min(values), max(values)
    return format(lo, fmt) if format(lo, fmt) == format(hi, fmt) else f"{lo:{fmt}} to {hi:{fmt}}"


def observations(rows: Sequence[Mapping]) -> str:
    """What the trained networks' two columns say, computed from the same rows: how far conv2's
    log sigma^2 moves between split seeds of one prior, and both columns by conv2's prior."""
    ran = [r for r in rows if r["seeds"]]
    if not ran:
        return ""
    spread = [
        r["log_sigma2_conv2_spread"]
        for r in ran
        if len(r["seeds"]) > 1 and r["log_sigma2_conv2_spread"] is not None
    ]
    lines = []
    if spread:
        lines.append(
            f"- conv2's mean log sigma^2 differs by at most {max(spread):.3f} between the split "
            "seeds of a line (the largest max - min over the lines with two or more seeds)."
        )
    both = [r for r in ran if r["log_sigma2_conv2"] is not None and r["nll"] is not None]
    groups = {
        "the released 5x5 VAE": [r for r in both if conv2_prior(r["method"]) == "dwp@released"],
        "one of our 5x5 VAEs": [r for r in both if conv2_prior(r["method"]) == "dwp"],
        "N(0, 1)": [r for r in both if conv2_prior(r["method"]) == "normal"],
    }
    parts = [
        f"{name}: log sigma^2 {_span([r['log_sigma2_conv2'] for r in rs], '.2f')}, train nll "
        f"{_span([r['nll'] for r in rs], '.2f')} nats"
        for name, rs in groups.items()
        if rs
    ]
    lines.append("- By the prior on conv2 (means per line): " + "; ".join(parts) + ".")
    return "\n".join(lines) + "\n"


def with_table(text: str, table: str, where: str = "the findings note") -> str:
    """``text`` with the part between :data:`BEGIN` and :data:`END` replaced by ``table``."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ExperimentError(
            f"{where} needs one pair of markers, {BEGIN!r} then {END!r}, around the table"
        )
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    return f"{head}{BEGIN}\n{table}{END}{tail}"


def cli(args: argparse.Namespace) -> int:
    try:
        return _cli(args)
    except ExperimentError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _cli(args: argparse.Namespace) -> int:
    rows = table_rows(args.results)
    table = markdown(rows) + "\n" + observations(rows)
    if args.update is None and args.check is None:
        sys.stdout.write(table)
        return 0
    path = Path(args.update or args.check)
    if not path.exists():
        raise ExperimentError(f"{path} does not exist; give the findings note's path")
    text = path.read_text()
    new = with_table(text, table, str(path))
    if args.check is not None:
        if new != text:
            print(
                f"{path}: its table is not the one the committed runs give; run "
                f"`python -m dwp_lib own-prior --update {path}`",
                file=sys.stderr,
            )
            return 1
        print(f"{path}: the table is up to date")
        return 0
    path.write_text(new)
    print(f"{path}: table written ({len(rows)} lines)")
    return 0
