"""The ablation's tables: per-run rows, paired differences DWP - N(0, 1) by split seed (the
forest plot's rows), the summary per cell, and the Markdown / CSV files of a run of
:mod:`studies.ablation.ablation`."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from dwp_lib import artifacts as _artifacts

if TYPE_CHECKING:
    from .ablation import CellResult

#: the two methods every cell compares
BASELINE, DWP = "normal:xavier", "dwp:dwp"

# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _fmt(m: float, s: float, digits: int = 3) -> str:
    return "" if math.isnan(m) else f"{m:.{digits}f} ± {s:.{digits}f}"


def contrasts(methods: Sequence[str]) -> list[tuple[str, str]]:
    """The paired differences a cell reports: every method against N(0,1) with Xavier init,
    and the DWP prior against N(0, 1) at the same dwp init (the prior alone)."""
    out = [(m, BASELINE) for m in methods if m != BASELINE and BASELINE in methods]
    if DWP in methods and "normal:dwp" in methods:
        out.append((DWP, "normal:dwp"))
    return out


def forest_rows(runs: Sequence[Mapping]) -> list[dict]:
    """One row per distinct paired difference of the ablation (``runs.csv`` rows): each cell's
    :func:`contrasts` at its size, paired by seed, in accuracy points. A contrast whose seeds all
    repeat an earlier row's values (a cell that shares the base runs and only adds methods) is
    listed once, under the first cell that has it."""
    by: dict[tuple[str, str, int], dict[int, float]] = {}
    order: list[tuple[str, int]] = []
    level: dict[str, str] = {}
    for r in runs:
        cell, n = str(r["cell"]), int(r["n"])
        by.setdefault((cell, str(r["method"]), n), {})[int(r["seed"])] = float(r["accuracy"])
        level.setdefault(cell, str(r.get("level") or cell))
        if (cell, n) not in order:
            order.append((cell, n))
    out: list[dict] = []
    for cell, n in order:
        methods = [m for (c, m, k) in by if c == cell and k == n]
        for a, b in contrasts(methods):
            pa, pb = by[(cell, a, n)], by[(cell, b, n)]
            seeds = sorted(set(pa) & set(pb))
            diffs = tuple(round(100 * (pa[s] - pb[s]), 6) for s in seeds)
            same = [e for e in out if (e["a"], e["b"], e["n"]) == (a, b, n)]
            repeats = any(
                all(s in e["seeds"] and e["diffs"][e["seeds"].index(s)] == d
                    for s, d in zip(seeds, diffs, strict=True))
                for e in same
            )  # fmt: skip
            if not diffs or repeats:  # the same runs, reported by a cell that shares them
                continue
            mean, sd = _mean_std(diffs)
            out.append(
                {"cell": cell, "level": level[cell], "n": n, "a": a, "b": b, "seeds": seeds,
                 "diffs": list(diffs), "mean": mean, "sd": sd, "wins": sum(d > 0 for d in diffs)}
            )  # fmt: skip
    return out


def run_rows(results: Sequence[CellResult]) -> list[dict]:
    """One row per cell, method, n and split seed."""
    out = []
    for res in results:
        for r in sorted(res.rows, key=lambda r: (int(r["n"]), int(r["seed"]))):
            out.append(
                {
                    "cell": res.cell.name,
                    "factor": res.cell.factor,
                    "level": res.cell.level,
                    "method": f"{r['prior']}:{r['init']}",
                    "n": int(r["n"]),
                    "seed": int(r["seed"]),
                    "accuracy": float(r["acc_ensemble"]),
                    "accuracy_mean_weights": float(r["acc_mean"]),
                    "train_accuracy": float(r["train_acc"]),
                    "nll_end": float(r["nll"]),
                    "kl_end": float(r["kl"]),
                    "log_sigma2_conv2": r["log_sigma2_conv2"],
                    "steps": int(r["steps"]),
                    "seconds": float(r["seconds"]),
                }
            )
    return out


def summary_rows(results: Sequence[CellResult]) -> list[dict]:
    """One row per cell and n: accuracy per method, paired contrasts, VAE quality, costs."""
    out = []
    for res in results:
        rows = run_rows([res])
        for n in sorted({r["n"] for r in rows}):
            acc: dict[str, dict[int, float]] = {}
            secs: dict[str, float] = {}
            for r in rows:
                if r["n"] == n:
                    acc.setdefault(r["method"], {})[r["seed"]] = r["accuracy"]
                    secs[r["method"]] = secs.get(r["method"], 0.0) + r["seconds"]
            row = {
                "cell": res.cell.name,
                "factor": res.cell.factor,
                "level": res.cell.level,
                "overrides": " ".join(res.cell.overrides),
                "n": n,
                "seeds": min(len(v) for v in acc.values()),
            }
            for m in res.cell.methods:
                row[f"acc {m}"] = _fmt(*_mean_std(list(acc.get(m, {}).values())))
            diffs = []
            for a, b in contrasts(res.cell.methods):
                common = sorted(set(acc.get(a, {})) & set(acc.get(b, {})))
                d = [100 * (acc[a][s] - acc[b][s]) for s in common]
                m, s = _mean_std(d)
                diffs.append(f"{a} − {b}: {_fmt(m, s, 1)}")
                if (a, b) == (DWP, BASELINE):
                    row["diff DWP − N(0,1) (points)"] = _fmt(m, s, 1)
                    row["DWP wins (seeds)"] = f"{sum(x > 0 for x in d)}/{len(d)}"
            row["contrasts (points)"] = "; ".join(diffs)
            for layer, k in (("conv1", 7), ("conv2", 5)):
                v = res.vae_records.get(layer, {})
                held = v.get("held_out") or {}
                row[f"VAE {k}x{k} nats/slice over baseline"] = (
                    f"{held['advantage']:.1f}" if "advantage" in held else ""
                )
            sd = res.vae_records.get("conv2", {}).get("decoder_sd_median")
            row["VAE 5x5 decoder sd"] = f"{sd:.3f}" if sd is not None else ""
            norms = (res.bank.get("norms") or {}) if res.bank else {}
            row["bank median slice norm 7x7 / 5x5"] = (
                f"{norms['conv1']['after_pruning']['median']:.3f} / "
                f"{norms['conv2']['after_pruning']['median']:.3f}"
                if norms
                else ""
            )
            row["seconds DWP runs"] = round(secs.get(DWP, 0.0))
            row["seconds all runs"] = round(sum(secs.values()))
            vae_s = sum(float(v.get("seconds") or 0) for v in res.vae_records.values())
            row["seconds VAEs"] = round(vae_s)
            row["seconds source nets"] = round(res.bank.get("source_seconds", 0.0))
            out.append(row)
    return out


MD_COLUMNS = (
    "factor",
    "level",
    "n",
    "seeds",
    f"acc {BASELINE}",
    f"acc {DWP}",
    "diff DWP − N(0,1) (points)",
    "DWP wins (seeds)",
    "VAE 7x7 nats/slice over baseline",
    "VAE 5x5 nats/slice over baseline",
    "VAE 5x5 decoder sd",
    "bank median slice norm 7x7 / 5x5",
    "seconds DWP runs",
    "seconds all runs",
    "seconds VAEs",
    "seconds source nets",
)


def markdown_table(summary: Sequence[dict], columns: Sequence[str] = MD_COLUMNS) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in summary:
        lines.append("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    other = [r for r in summary if r["contrasts (points)"]]
    if other:
        lines += ["", "Every paired contrast (mean ± std over split seeds, points):", ""]
        lines += [f"- {r['cell']} (n = {r['n']}): {r['contrasts (points)']}" for r in other]
    return "\n".join(lines) + "\n"


def _write_csv(path: Path, rows: Sequence[dict]) -> None:
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    with _artifacts.atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def write_table(results: Sequence[CellResult], out: str | Path, provenance: dict) -> Path:
    """Write ``runs.csv``, ``table.csv``, ``table.md`` and ``provenance.json`` into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summary_rows(results)
    _write_csv(out / "runs.csv", run_rows(results))
    _write_csv(out / "table.csv", summary)
    _artifacts.atomic_write_bytes(out / "table.md", markdown_table(summary).encode())
    prov = dict(
        provenance,
        cells=[
            {
                "cell": dataclasses.asdict(r.cell),
                "config": r.config.to_dict(),
                "run_folders": r.folders,
                "kernel_vaes": r.vae_records,
                "bank": r.bank,
            }
            for r in results
        ],
        files={n: _artifacts.sha256_file(out / n) for n in ("runs.csv", "table.csv", "table.md")},
    )
    _artifacts.atomic_write_json(out / "provenance.json", prov)
    return out / "provenance.json"


def read_results(folder: str | Path = "results/ablation") -> tuple[list[dict], list[dict], dict]:
    """The committed table: summary rows, run rows and provenance (for book/05)."""
    folder = Path(folder)
    if not (folder / "table.csv").exists():
        raise FileNotFoundError(
            f"{folder}/table.csv not found: run `python -m studies.ablation --out {folder}` first"
        )
    with open(folder / "table.csv", newline="") as fh:
        summary = list(csv.DictReader(fh))
    with open(folder / "runs.csv", newline="") as fh:
        runs = list(csv.DictReader(fh))
    return summary, runs, json.loads((folder / "provenance.json").read_text())
