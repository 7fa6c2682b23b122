"""Results files: typed CSV rows, summaries, paired differences, tables, the committed runs."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import re
import statistics
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import artifacts as _artifacts
from .names import INIT_LABELS, PAPER_RESULTS, PRIOR_LABELS, PRIORS, ExperimentError, parse_method

RESULT_COLUMNS = (
    *("experiment", "prior", "init", "n", "seed"),
    *("acc_ensemble", "acc_mean", "train_acc", "loss", "nll", "kl"),
    *("log_sigma2_conv1", "log_sigma2_conv2", "steps", "lr", "log_sigma2_init", "kl_weight"),
    *("channels", "dwp_slices_per_step", "dwp_train_reverse", "eval_samples", "test_images"),
    *("seconds", "device", "threads", "config_key", "bank_sha256", "vae_sha256"),
)
CURVE_COLUMNS = ("init", "seed", "step", "test_acc", "train_loss", "seconds")

# The columns that name a row's cell, and the ones that hold numbers, of the two files a run
# folder appends to; other tables are read as they are.
CELL_COLUMNS = {
    RESULT_COLUMNS: ("prior", "init", "n", "seed"),
    CURVE_COLUMNS: ("init", "seed", "step"),
}
NUMBER_COLUMNS = {
    RESULT_COLUMNS: (
        *("n", "seed", "acc_ensemble", "acc_mean", "train_acc", "loss", "nll", "kl"),
        *("log_sigma2_conv1", "log_sigma2_conv2", "steps", "lr", "log_sigma2_init", "kl_weight"),
        *("dwp_slices_per_step", "eval_samples", "test_images", "seconds", "threads"),
    ),
    CURVE_COLUMNS: ("seed", "step", "test_acc", "train_loss", "seconds"),
}
REQUIRED_COLUMNS = {
    RESULT_COLUMNS: ("prior", "init", "n", "seed", "acc_ensemble"),
    CURVE_COLUMNS: ("init", "seed", "step", "test_acc"),
}
INTEGER_COLUMNS = ("n", "seed", "step")
_WARNED: set[str] = set()


def read_rows(
    path: str | os.PathLike, columns: Sequence[str] | None = None, repair: bool = False
) -> list[dict]:
    """Rows of a results CSV as dicts of typed values (empty -> None). An interrupted last
    line or a repeated line is dropped with a warning (``repair=True``: from the file too); an
    unexpected header, a bad number or key, or two different rows of one cell raise."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as f:  # keep the file's own line ends for a repair
        text = f.read()
    lines = text.splitlines(keepends=True)
    torn = 0
    if lines and not lines[-1].endswith("\n"):
        lines, torn = lines[:-1], 1
    reader = csv.DictReader(lines)
    header = tuple(reader.fieldnames or ())
    if columns is not None and header and header != tuple(columns):
        raise ExperimentError(
            f"{path} has columns {header}, not this version's {tuple(columns)}; "
            "move it away (or use a new --out folder)"
        )
    rows, lines_of = [], []
    for raw in reader:
        if None in raw or any(v is None for v in raw.values()):
            torn += 1
            continue
        # hashes and keys stay text ("1e5123456789" is a hash, not a number)
        row = {k: _parse_cell(v, text=k.endswith(("_sha256", "_key"))) for k, v in raw.items()}
        _check_row(path, reader.line_num, raw, row, header)
        rows.append(row)
        lines_of.append(reader.line_num)
    rows, repeated = _unique_rows(path, rows, lines_of, header)
    if torn:
        print(f"warning: {path}: dropped {torn} incomplete row(s) (an interrupted write)",
              file=sys.stderr)  # fmt: skip
    if (torn or repeated) and repair:
        with _artifacts.atomic_path(path) as tmp:
            tmp.write_text("".join(lines[:1]))
            for r in rows:
                append_row(tmp, r, header)
    return rows


def _check_row(path: Path, line: int, raw: Mapping, row: Mapping, header: tuple) -> None:
    """Refuse a row of results.csv or init_curves.csv whose numbers are not finite numbers."""
    where = f"{path}, line {line}: column"
    fix = "Delete that line (the next run recomputes its cell), or restore the file from a copy"
    for col in REQUIRED_COLUMNS.get(header, ()):
        if row[col] is None:
            raise ExperimentError(f"{where} {col} is empty. {fix}")
    for col in NUMBER_COLUMNS.get(header, ()):
        v = row[col]
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ExperimentError(f"{where} {col} is {raw[col]!r}, not a finite number. {fix}")
        if col in INTEGER_COLUMNS and not isinstance(v, int):
            raise ExperimentError(f"{where} {col} is {raw[col]!r}, not a whole number. {fix}")


def _unique_rows(
    path: Path, rows: list[dict], lines: list[int], header: tuple
) -> tuple[list[dict], int]:
    """One row per cell: a repeated line is dropped with a warning; two different ones raise."""
    key_columns = CELL_COLUMNS.get(header)
    if not key_columns:
        return rows, 0
    first: dict[tuple, tuple[int, dict]] = {}
    kept, repeated = [], 0
    for line, row in zip(lines, rows, strict=True):
        key = tuple(row[c] for c in key_columns)
        cell = ", ".join(f"{c} {row[c]}" for c in key_columns)
        if key not in first:
            first[key] = line, row
            kept.append(row)
            continue
        line0, row0 = first[key]
        if row == row0:
            repeated += 1
            note = f"warning: {path}: line {line} repeats line {line0} ({cell}); dropped it"
            if note not in _WARNED:
                _WARNED.add(note)
                print(note, file=sys.stderr)  # on stderr: a table piped to a file stays clean
            continue
        differ = [f"{c} {row0[c]!r} / {row[c]!r}" for c in header if row[c] != row0[c]]
        raise ExperimentError(
            f"{path}: lines {line0} and {line} are two different rows of one cell ({cell}; "
            f"{', '.join(differ[:4])}{', ...' if len(differ) > 4 else ''}). Delete the line "
            "that is wrong, or both to recompute the cell on the next run"
        )
    return kept, repeated


def rewrite_rows(path: str | os.PathLike, rows: Sequence[Mapping], columns: Sequence[str]) -> None:
    """Replace the rows of a results CSV (atomically; an empty file if there are none)."""
    with _artifacts.atomic_path(path) as tmp:
        for r in rows:
            append_row(tmp, r, columns)
        if not rows:
            tmp.write_text("")


def _parse_cell(v: str, text: bool = False) -> Any:
    if v == "":
        return None
    if text:
        return v
    for t in (int, float):
        try:
            return t(v)
        except ValueError:
            pass
    return v == "True" if v in ("True", "False") else v


def append_row(path: str | os.PathLike, row: Mapping, columns: Sequence[str]) -> None:
    """Append one row (header first if the file is new), flushed to disk before returning."""
    path = Path(path)
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        if new:
            writer.writeheader()
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
        f.flush()
        os.fsync(f.fileno())


def summarise(rows: Iterable[Mapping], value: str = "acc_ensemble") -> dict[tuple, dict]:
    """``{(prior, init, n): {"mean", "std", "count", "seeds"}}`` over split seeds."""
    groups: dict[tuple, list] = {}
    for r in rows:
        groups.setdefault((r["prior"], r["init"], int(r["n"])), []).append(r)
    out = {}
    for key, rs in sorted(groups.items()):
        vals = [float(r[value]) for r in rs]
        std = statistics.stdev(vals) if len(vals) > 1 else 0.0
        seeds = sorted(int(r["seed"]) for r in rs)
        out[key] = {"mean": statistics.fmean(vals), "std": std, "count": len(vals), "seeds": seeds}
    return out


def paired_difference(
    rows: Iterable[Mapping], a: str, b: str, n: int, value: str = "acc_ensemble"
) -> dict:
    """``a`` minus ``b`` at ``n`` paired by split seed (book/05, eq-exp-paired): differences,
    mean, std, ``a``'s wins."""
    pa, pb = parse_method(a), parse_method(b)
    by = {pa: {}, pb: {}}
    for r in rows:
        key = (r["prior"], r["init"])
        if key in by and int(r["n"]) == n:
            by[key][int(r["seed"])] = float(r[value])
    seeds = sorted(set(by[pa]) & set(by[pb]))
    diffs = [by[pa][s] - by[pb][s] for s in seeds]
    out = {"a": a, "b": b, "n": n, "seeds": seeds, "differences": diffs}
    out["by_seed"] = dict(zip(seeds, diffs, strict=True))
    out["mean"] = statistics.fmean(diffs) if diffs else float("nan")
    out["std"] = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    out["wins"] = sum(d > 0 for d in diffs)
    return out


def results_table(rows: Iterable[Mapping], paper: bool = True) -> str:
    """A Markdown table of ``mean ± sd (seeds)`` per method and n (``paper``: its numbers too)."""
    rows = list(rows)
    stats = summarise(rows)
    sizes = sorted({k[2] for k in stats})
    rank = {p: i for i, p in enumerate(PRIORS)}  # priors the library does not know go last
    methods = sorted({k[:2] for k in stats}, key=lambda m: (rank.get(m[0], len(rank)), m[1]))
    head = "| method (mean ± sd, seeds) | " + " | ".join(f"n = {n}" for n in sizes) + " |"
    lines = [head, "|" + "---|" * (len(sizes) + 1)]
    for prior, init in methods:
        cells = []
        for n in sizes:
            s = stats.get((prior, init, n))
            if s is None:
                cells.append("")
                continue
            cell = f"{s['mean']:.3f} ± {s['std']:.3f} ({s['count']})"
            ref = PAPER_RESULTS.get(prior, {}).get(n)
            ran = init == prior if prior.startswith("dwp") else init == "xavier"
            if paper and ran and ref is not None:
                cell += f" [paper {ref:.3f}]"
            cells.append(cell)
        label = f"{PRIOR_LABELS.get(prior, prior)}, {INIT_LABELS.get(init, init)} init"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def load_results(folder: str | os.PathLike) -> tuple[list[dict], dict | None]:
    """The rows of ``folder/results.csv`` and its ``provenance.json`` (None if absent)."""
    folder = Path(folder)
    return read_rows(folder / "results.csv", RESULT_COLUMNS), read_provenance(folder)


def read_provenance(folder: str | os.PathLike) -> dict | None:
    """``folder/provenance.json`` (None if absent); a damaged one raises, naming it and the fix."""
    path = Path(folder) / "provenance.json"
    if not path.exists():
        return None
    try:
        prov = json.loads(path.read_text())
        if not isinstance(prov, dict):
            raise ValueError("it does not hold a mapping")
    except ValueError as err:  # JSON and UTF-8 decoding errors are ValueErrors
        raise ExperimentError(
            f"{path} is damaged ({err}); restore it from a copy (e.g. git checkout), or delete "
            "it and rerun the command that made the folder: the run writes it again"
        ) from None
    return prov


def init_table(curves: Iterable[Mapping], steps: Sequence[int] | None = None) -> str:
    """A Markdown table of the init experiment's test accuracy per init at ``steps``."""
    curves = list(curves)
    all_steps = sorted({int(r["step"]) for r in curves} - {0})
    if steps is None:
        steps = sorted({all_steps[0], all_steps[len(all_steps) // 2], all_steps[-1]})
    inits = list(dict.fromkeys(r["init"] for r in curves))
    lines = ["| init | " + " | ".join(f"step {t}" for t in steps) + " |"]
    lines.append("|" + "---|" * (len(steps) + 1))
    for init in inits:
        cells = []
        for t in steps:
            vals = [
                float(r["test_acc"]) for r in curves if r["init"] == init and int(r["step"]) == t
            ]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            cells.append(f"{statistics.fmean(vals):.3f} ± {sd:.3f}" if vals else "")
        lines.append(f"| {init} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def costs_table(costs: Mapping) -> str:
    """A Markdown table of :func:`~dwp_lib.experiment.stages.init_costs`."""
    lines = [
        "| layer | kernels drawn | kernel VAE (bytes) | bank slices (bytes) | "
        "draw with the VAE (ms) | draw from the bank (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for layer, c in costs["layers"].items():
        lines.append(
            f"| {layer} | {c['kernels_drawn']:,} | {c['vae_bytes']:,} | "
            f"{c['bank_bytes']:,} ({c['bank_slices']:,} slices) | "
            f"{1000 * c['seconds_dwp']:.2f} | {1000 * c['seconds_filters']:.2f} |"
        )
    return "\n".join(lines)


def results_dir() -> Path:
    """The committed runs: ``results/`` of a checkout, else the copy installed with the package
    (``dwp_results``, e.g. in Colab), or a clear error when this copy has none."""
    checkout = Path(__file__).resolve().parents[2] / "results"
    if checkout.is_dir():
        return checkout
    spec = importlib.util.find_spec("dwp_results")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    raise FileNotFoundError(
        "the committed runs are not installed with this copy of dwp_lib: install it from the "
        "repository (pip install git+<repository>) or run from a checkout, whose results/ "
        "folder holds them"
    )


def find_results(root: str | os.PathLike | None = None) -> list[Path]:
    """Run folders under ``root`` (default: the committed runs), the one with most rows first."""
    root = Path(root) if root is not None else results_dir()
    if not root.is_dir():
        return []
    found = {}
    for path in root.glob("*/results.csv"):
        with open(path, newline="") as f:
            header = tuple(next(csv.reader(f), ()))
        if header == RESULT_COLUMNS:  # other tables (e.g. an ablation's) are not grid runs
            found[path.parent] = len(read_rows(path, RESULT_COLUMNS))
    return sorted(found, key=lambda p: (-found[p], p.name))


def describe_run(name: str, rows: Sequence[Mapping], provenance: Mapping | None) -> str:
    """A few lines on a results folder: runs, command, wall time, machine."""
    lines = [f"{name}: {len(rows)} runs"]
    if provenance is None:
        return lines[0] + " (no provenance.json beside the results)"
    env = provenance.get("environment", {})
    command = provenance.get("command") or "(not recorded)"
    # the machine's own folders say nothing about the run: .../name, as in the repository
    command = re.sub(r"(?<=\s)/\S*/(?=[^/\s]+(\s|$))", ".../", command)
    lines.append(f"command: {command}")
    wall = provenance.get("wall_seconds")
    where = f"{env.get('device', '?')}, {provenance.get('threads', '?')} thread(s), {env.get('platform', '?')}"
    if cell_hours := sum(float(r.get("seconds") or 0) for r in rows) / 3600:
        lines.append(f"training time of the {len(rows)} cells, added up: {cell_hours:.1f} h")
    last = f"{wall:.0f} s" if wall and wall < 120 else f"{(wall or 0) / 60:.0f} min"
    lines.append(f"the command's last run: {last} on {where}" if wall else f"machine: {where}")
    lines.append(
        f"dwp_lib {env.get('dwp_lib', '?')}, torch {env.get('torch', '?')}, {env.get('created', '')}"
    )
    return "\n".join(lines)
