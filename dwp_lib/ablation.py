"""Ablations of the small-data experiment: which factor decides whether the deep weight prior helps.

The experiment of ``book/05`` (:mod:`dwp_lib.experiment`) compares, on a few labelled MNIST
digits, a Bayesian CNN whose conv kernels have the deep weight prior (DWP) with the same network
under an N(0, 1) prior. This module runs *named cells*: each is the experiment's preset plus a
few overrides in the experiment's own syntax (``bayes.steps=3000``, ``source.widths=[32,128]``,
``vae.conv2.arch.logvar_floor=-6``), trained through :class:`dwp_lib.experiment.Experiment`'s
cached stages

    source nets -> kernel bank -> kernel VAEs -> prior grid (methods x split seeds)

and writes one table: accuracy per factor, level, method (prior:init) and split seed; the paired
differences DWP - N(0, 1) by split seed (mean ± std over seeds, in points); how well the cell's
kernel VAEs model held-out slices; and what each cell cost in seconds.

>>> cell = Cell("steps3000", "1 training length", "3,000 steps", ("bayes.steps=3000",))
>>> cfg = cell_config("tiny", cell)
>>> cfg.bayes.steps, cfg.grid.methods
(3000, ('normal:xavier', 'dwp:dwp'))

Runs are shared between cells where they must be identical: an N(0, 1) network with a Xavier
init does not depend on the bank or the kernel VAEs, so every cell that changes only those reuses
the base cell's N(0, 1) runs (:func:`method_key`). Every run is appended to its experiment
folder's ``results.csv`` as it finishes, so an interrupted ablation resumes.

Command line: ``python -m dwp_lib ablate --preset book --out results/ablation``.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import shlex
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import __version__
from . import artifacts as _artifacts
from .config import check_preset
from .experiment import (
    RESULT_COLUMNS,
    Experiment,
    ExperimentConfig,
    apply_overrides,
    drop_paths,
    parse_method,
    read_rows,
)

# --------------------------------------------------------------------------------------------
# Cells
# --------------------------------------------------------------------------------------------

#: What every cell of a preset starts from, on top of the experiment's preset. For ``book``:
#: the experiment's book Bayesian CNN (FConv(16, 64), 300 full-batch steps: what chapter 5 runs;
#: the authors' FConv(32, 128) for 1,000+ steps costs ~10x more per run, too much for a 2-core
#: CPU shared by the team), no init-convergence stage, n = 50, 2,000 test digits. The source
#: nets, kernel VAEs and the Bayesian CNN are pinned here, so that a later change of a stage's
#: preset does not silently change the base.
BASE_OVERRIDES: dict[str, tuple[str, ...]] = {
    "tiny": ("init.enabled=false", "grid.sizes=[50]"),
    "book": (
        "source.n_nets=8",
        "source.widths=[32,64]",
        "source.epochs=3",
        "source.batch_size=128",
        "source.lr=0.003",
        "source.prune_norms=[0.39,0.13]",
        "vae.conv1.train.steps=1000",
        "vae.conv2.train.steps=1000",
        "vae.conv2.train.batch_size=256",
        "init.enabled=false",
        "init.steps=200",  # unused (disabled) but part of the run folders' key
        "init.eval_every=20",
        "init.test_images=1000",
        "bayes.channels=[16,64]",
        "bayes.steps=300",
        "bayes.lr=0.001",
        "bayes.log_sigma2_init=-10",
        "bayes.kl_weight=1",
        "bayes.dwp_slices_per_step=256",
        "bayes.dwp_train_reverse=false",
        "bayes.eval_samples=10",
        "grid.sizes=[50]",
        "grid.test_images=2000",
    ),
    "paper": ("init.enabled=false",),
}

#: The method every contrast is measured against, and the paper's DWP method.
BASELINE, DWP = "normal:xavier", "dwp:dwp"


@dataclass(frozen=True)
class Cell:
    """A group of rows of the table: a factor, a level, the overrides that make it, the methods
    (``prior:init``, see :class:`dwp_lib.experiment.GridConfig`) and optionally its own seeds
    and training-set sizes (else the preset's)."""

    name: str
    factor: str
    level: str
    overrides: tuple[str, ...] = ()
    methods: tuple[str, ...] = (BASELINE, DWP)
    seeds: tuple[int, ...] | None = None
    sizes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        for m in self.methods:
            parse_method(m)


SEEDS5 = (0, 1, 2, 3, 4)

#: The investigation of issue 9: each factor against the same base (see book/05, "Ablations").
CELLS: tuple[Cell, ...] = (
    Cell("base", "0 base", "base", seeds=SEEDS5),
    Cell(
        "prior-init",
        "7 prior vs init",
        "N(0,1) with dwp init; DWP with Xavier init",
        methods=(BASELINE, DWP, "normal:dwp", "dwp:xavier"),
    ),
    Cell("layers", "layers", "DWP on conv1 only", methods=(BASELINE, DWP, "dwp/normal:dwp")),
    Cell("base-n100", "0 base", "n = 100", sizes=(100,)),
    Cell("steps1000", "1 training length", "1,000 steps", ("bayes.steps=1000",)),
    Cell("steps3000", "1 training length", "3,000 steps", ("bayes.steps=3000",)),
    Cell(
        "target128",
        "4 scale match",
        "target FConv(32,128) (authors'), 1,000 steps",
        ("bayes.channels=[32,128]", "bayes.steps=1000"),
    ),
    Cell(
        "logvar-6",
        "1 posterior variance",
        "log sigma^2 init -6",
        ("bayes.log_sigma2_init=-6",),
        seeds=SEEDS5,
    ),
    Cell(
        "logvar-6-n100",
        "1 posterior variance",
        "log sigma^2 init -6, n = 100",
        ("bayes.log_sigma2_init=-6",),
        seeds=SEEDS5,
        sizes=(100,),
    ),
    Cell("lr3e-3", "1 learning rate", "lr 3e-3 (all parameters)", ("bayes.lr=0.003",)),
    Cell("nets2", "2 bank", "2 source nets (of 8)", ("source.n_nets=2",)),
    Cell("nets2-ep6", "2 bank", "2 nets x 6 epochs", ("source.n_nets=2", "source.epochs=6")),
    Cell(
        "unpruned",
        "2 bank",
        "no pruning (base: authors' 0.39 / 0.13)",
        ("source.prune_norms=[0,0]",),
    ),
    Cell(
        "vae-long",
        "3 kernel VAEs",
        "4,000 VAE steps",
        ("vae.conv1.train.steps=4000", "vae.conv2.train.steps=4000"),
    ),
    Cell("vae5-z8", "3 kernel VAEs", "5x5 latent 8", ("vae.conv2.arch.latent_dim=8",)),
    Cell(
        "vae5-floor",
        "3 kernel VAEs",
        "5x5 decoder floor -6",
        ("vae.conv2.arch.logvar_floor=-6",),
        seeds=SEEDS5,
    ),
    Cell(
        "vae5-floor-n100",
        "3 kernel VAEs",
        "5x5 decoder floor -6, n = 100",
        ("vae.conv2.arch.logvar_floor=-6",),
        sizes=(100,),
    ),
    Cell(
        "vae5-floor-4", "3 kernel VAEs", "5x5 decoder floor -4", ("vae.conv2.arch.logvar_floor=-4",)
    ),
    Cell(
        "width128",
        "4 scale match",
        "sources FConv(32,128), 2 nets",
        ("source.n_nets=2", "source.widths=[32,128]"),
    ),
    Cell("reverse", "5 reverse model", "reverse model trained", ("bayes.dwp_train_reverse=true",)),
    Cell("exact", "6 penalty", "exact sum over slices", ("bayes.dwp_slices_per_step=None",)),
)


def cell_config(preset: str, cell: Cell, extra: Sequence[str] = ()) -> ExperimentConfig:
    """The experiment config of ``cell``: preset, :data:`BASE_OVERRIDES`, ``extra`` (the
    command line's ``--set``), the cell's overrides, then its methods, seeds and sizes."""
    check_preset(preset)
    items = list(cell.overrides)
    items.append("grid.methods=" + json.dumps(list(cell.methods)))
    if cell.seeds is not None:
        items.append("grid.split_seeds=" + json.dumps(list(cell.seeds)))
    if cell.sizes is not None:
        items.append("grid.sizes=" + json.dumps(list(cell.sizes)))
    cfg = apply_overrides(
        ExperimentConfig.preset_config(preset), [*BASE_OVERRIDES[preset], *extra, *items]
    )
    return dataclasses.replace(cfg, name=f"ablation-{cell.name}")


def method_key(cfg: ExperimentConfig, method: str) -> str:
    """A hash of every setting that changes a run of ``method`` under ``cfg``.

    The run folders' own key (:meth:`ExperimentConfig.key`) covers every setting; here the ones
    a method cannot see are left out: the DWP's knobs for a network without it, the bank and the
    kernel VAEs for one that uses neither (N(0, 1) or log-uniform prior, Xavier init).
    """
    prior, init = parse_method(method)
    drop = ["name", "from_preset", "init", "grid.enabled", "grid.methods"]
    drop += ["grid.sizes", "grid.split_seeds"]
    if "dwp" not in prior:
        drop += ["bayes.dwp_slices_per_step", "bayes.dwp_train_reverse"]
        if init in ("xavier", "default"):
            drop += ["source", "vae"]
    d = drop_paths(cfg.to_dict(), drop)
    return hashlib.sha256(json.dumps([d, method], sort_keys=True).encode()).hexdigest()[:12]


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


@dataclass
class CellResult:
    cell: Cell
    config: ExperimentConfig
    rows: list[dict] = field(default_factory=list)
    folders: dict[str, str] = field(default_factory=dict)  # method -> run folder
    vae_records: dict = field(default_factory=dict)
    bank: dict = field(default_factory=dict)


def default_root() -> Path:
    """Where the cells' experiment folders live: ``$DWP_CACHE/ablation``."""
    return _artifacts.cache_dir("ablation")


def run_folder(root: Path, cfg: ExperimentConfig) -> Path:
    return root / f"{cfg.name}-{cfg.key()}"


def run_cells(
    preset: str,
    cells: Sequence[Cell],
    extra: Sequence[str] = (),
    root: str | Path | None = None,
    all_cells: Sequence[Cell] | None = None,
    verbose: bool = True,
    own_only: bool = False,
    table_only: bool = False,
) -> list[CellResult]:
    """Run ``cells`` (their stages, then every method x size x seed not yet done).

    A run is done in the folder of the first cell of ``all_cells`` (default :data:`CELLS`) with
    the same :func:`method_key`, so cells run in separate invocations still share runs.
    ``own_only``: run only the runs a cell owns and read the shared ones as they are (for
    several invocations side by side, none of which should run another's share).
    ``table_only``: run nothing; read the runs (and stage summaries) already made.
    """
    root = Path(root) if root is not None else default_root()
    all_cells = list(all_cells or CELLS)
    for c in cells:
        if c not in all_cells:
            all_cells.append(c)
    configs = {c.name: cell_config(preset, c, extra) for c in all_cells}
    owner: dict[str, ExperimentConfig] = {}
    for c in all_cells:
        cfg = configs[c.name]
        for m in c.methods:
            owner.setdefault(method_key(cfg, m), cfg)
    results = []
    for cell in cells:
        cfg = configs[cell.name]
        res = CellResult(cell, cfg)
        by_folder: dict[Path, tuple[ExperimentConfig, list[str]]] = {}
        for m in cell.methods:
            own = owner[method_key(cfg, m)]
            folder = run_folder(root, own)
            by_folder.setdefault(folder, (own, []))[1].append(m)
            res.folders[m] = str(folder)
        for folder, (own, methods) in by_folder.items():
            run_cfg = dataclasses.replace(
                own,
                grid=dataclasses.replace(
                    own.grid,
                    methods=tuple(methods),
                    sizes=cfg.grid.sizes,
                    split_seeds=cfg.grid.split_seeds,
                ),
            )
            uses_vaes = any("dwp" in m for m in methods)
            stages = folder / STAGES_FILE
            if table_only or (own_only and own.name != cfg.name):
                res.rows += _rows_in(folder, run_cfg)  # read what is there, run nothing
                if uses_vaes and stages.exists() and not res.vae_records:
                    summary = json.loads(stages.read_text())
                    res.vae_records, res.bank = summary["kernel_vaes"], summary["bank"]
                continue
            done = _rows_in(folder, run_cfg)
            if len(done) == _planned(run_cfg) and (stages.exists() or not uses_vaes):
                res.rows += done  # complete: no stage is loaded (a shared bank may have changed)
            else:
                exp = Experiment(run_cfg, folder, verbose=verbose)
                exp.prior_grid()
                res.rows += _rows_in(folder, run_cfg)
                if uses_vaes:
                    _artifacts.atomic_write_json(stages, _stage_summary(exp))
            if uses_vaes:
                summary = json.loads(stages.read_text())
                res.vae_records, res.bank = summary["kernel_vaes"], summary["bank"]
        results.append(res)
    return results


#: Per run folder: what its bank and kernel VAEs were (written once, when its runs are made).
STAGES_FILE = "ablation_stages.json"


def _stage_summary(exp: Experiment) -> dict:
    exp.kernel_vaes()
    bank = exp.kernel_bank()
    return {
        "kernel_vaes": _vae_summary(exp),
        "bank": {
            "sha256": exp.bank_sha()[:12],
            "norms": bank.provenance.get("norms"),
            "counts": bank.counts(),
            "source_accuracy": bank.provenance.get("accuracy"),
            "data": bank.provenance.get("data", {}).get("label"),
            "source_seconds": _source_seconds(exp),
        },
    }


def _planned(cfg: ExperimentConfig) -> int:
    g = cfg.grid
    return len(g.methods) * len(g.sizes) * len(g.split_seeds)


def _rows_in(folder: Path, cfg: ExperimentConfig) -> list[dict]:
    planned = {(*parse_method(m), n, s) for m in cfg.grid.methods for n in cfg.grid.sizes
               for s in cfg.grid.split_seeds}  # fmt: skip
    out, seen = [], set()
    for r in read_rows(folder / "results.csv", RESULT_COLUMNS):
        key = (r["prior"], r["init"], int(r["n"]), int(r["seed"]))
        if key in planned and key not in seen:  # the first run of a cell counts (a second
            seen.add(key)  # invocation may have run it again side by side)
            out.append(r)
    return out


def _vae_summary(exp: Experiment) -> dict:
    out = {}
    for layer, rec in exp.vae_records.items():
        path = Path(rec["file"])
        vae = exp.kernel_vaes()[layer]
        test = exp.kernel_bank().slices(layer, "test")
        out[layer] = {
            "file": path.name,
            "sha256": rec["sha256"][:12],
            "seconds": rec.get("seconds"),
            "held_out": rec.get("held_out"),
            "decoder_sd_median": _decoder_sd(vae, test),
        }
    return out


@torch.no_grad()
def _decoder_sd(vae, slices: torch.Tensor) -> float | None:
    """Median standard deviation of p(w|z) per weight, at z = the encoder mean of ``slices``:
    how tightly the prior holds a kernel near the decoder's mean."""
    if len(slices) == 0:
        return None
    dev = next(vae.parameters()).device
    mu_z, _ = vae.encode(slices[:2000].float().to(dev))
    _, logvar = vae.decode(mu_z)
    return float(torch.exp(0.5 * logvar).median())


def _source_seconds(exp: Experiment) -> float:
    return sum(float(r.get("seconds") or 0) for r in exp.net_records())


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
            f"{folder}/table.csv not found: run `python -m dwp_lib ablate --out {folder}` first"
        )
    with open(folder / "table.csv", newline="") as fh:
        summary = list(csv.DictReader(fh))
    with open(folder / "runs.csv", newline="") as fh:
        runs = list(csv.DictReader(fh))
    return summary, runs, json.loads((folder / "provenance.json").read_text())


def select_cells(names: Sequence[str] | None) -> list[Cell]:
    if not names:
        return list(CELLS)
    known = {c.name: c for c in CELLS}
    missing = [n for n in names if n not in known]
    if missing:
        raise ValueError(f"unknown cells {missing}; cells are {', '.join(known)}")
    return [known[n] for n in names]


def cli(args) -> int:
    """``python -m dwp_lib ablate --preset P --out DIR [--cells a,b] [--set PATH=VALUE ...]``."""
    extra = list(args.set or [])
    names = [n for n in (args.cells or "").split(",") if n]
    t0 = time.perf_counter()
    try:
        cells = select_cells(names)
        results = run_cells(
            args.preset,
            cells,
            extra,
            own_only=getattr(args, "own_only", False),
            table_only=getattr(args, "table_only", False),
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - t0
    mnist = {}
    try:
        from .data import load_mnist

        mnist = {s: dict(load_mnist(s).provenance) for s in ("train", "test")}
    except Exception as err:  # noqa: BLE001 (provenance only: say what failed)
        mnist = {"error": str(err)}
    provenance = {
        "command": "python -m dwp_lib " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "preset": args.preset,
        "base_overrides": list(BASE_OVERRIDES[args.preset]),
        "extra_overrides": extra,
        "metric": "accuracy of the 10-sample predictive mean on a seeded subset of MNIST test",
        "data": {"mnist": mnist},
        "seconds_this_invocation": seconds,
        "dwp_lib": __version__,
        "environment": _artifacts.environment_record(),
        "threads": torch.get_num_threads(),
    }
    write_table(results, args.out, provenance)
    print(markdown_table(summary_rows(results)))
    print(f"Wrote {args.out}: table.md, table.csv, runs.csv, provenance.json ({seconds:.0f} s)")
    return 0


__all__ = [
    "BASE_OVERRIDES",
    "CELLS",
    "Cell",
    "RESULT_COLUMNS",
    "cell_config",
    "method_key",
    "read_results",
    "run_cells",
    "summary_rows",
    "write_table",
]
