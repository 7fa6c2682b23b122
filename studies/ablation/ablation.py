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

Command line: ``python -m studies.ablation --preset book --out results/ablation``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dwp_lib import __version__
from dwp_lib import artifacts as _artifacts
from dwp_lib.config import check_preset
from dwp_lib.experiment import (
    RESULT_COLUMNS,
    Experiment,
    ExperimentConfig,
    apply_overrides,
    drop_paths,
    parse_method,
    read_rows,
)
from studies import command_line

from .tables import (
    BASELINE,
    DWP,
    contrasts,
    forest_rows,
    markdown_table,
    read_results,
    run_rows,
    summary_rows,
    write_table,
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

#: The ablation: each factor against the same base (see book/05, "Ablations").
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


def select_cells(names: Sequence[str] | None) -> list[Cell]:
    if not names:
        return list(CELLS)
    known = {c.name: c for c in CELLS}
    missing = [n for n in names if n not in known]
    if missing:
        raise ValueError(f"unknown cells {missing}; cells are {', '.join(known)}")
    return [known[n] for n in names]


def cli(args) -> int:
    """``python -m studies.ablation --preset P --out DIR [--cells a,b] [--set PATH=VALUE ...]``."""
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
        from dwp_lib.data import load_mnist

        mnist = {s: dict(load_mnist(s).provenance) for s in ("train", "test")}
    except Exception as err:  # noqa: BLE001 (provenance only: say what failed)
        mnist = {"error": str(err)}
    provenance = {
        "command": command_line("studies.ablation"),
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
    "contrasts",
    "forest_rows",
    "markdown_table",
    "run_rows",
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
