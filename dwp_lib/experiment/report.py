"""What a run leaves beside its rows: the figures and the provenance record."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import torch

from .. import artifacts as _artifacts
from .results import CURVE_COLUMNS, RESULT_COLUMNS, read_rows

if TYPE_CHECKING:
    from .runner import Experiment


def write_figures(exp: Experiment, curves=None, rows=None, costs=None) -> dict[str, Path]:
    """Draw every figure of the run into ``out/figures`` (PNG); return their paths."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .. import plots
    from . import figures

    t0 = time.perf_counter()
    folder = exp.out / "figures"
    folder.mkdir(exist_ok=True)
    figs = {}
    # the slices each kernel VAE was fitted to, read like a bank: each VAE beside its own
    fitted = SimpleNamespace(layers=list(exp.cfg.vae.layers()), slices=exp.vae_slices)
    vaes = exp.kernel_vaes()
    figs["kernel_examples"] = plots.plot_kernel_examples(fitted, vaes)
    figs["latent_space"] = plots.plot_latent_space(fitted, vaes)
    if curves is None:
        curves = read_rows(exp.curves_path, CURVE_COLUMNS)
    if curves:
        figs["init_curves"] = figures.plot_init_curves(curves)
    if rows is None:
        rows = read_rows(exp.results_path, RESULT_COLUMNS)
    if rows:
        figs["accuracy_vs_n"] = figures.plot_accuracy_vs_n(rows, title=exp.cfg.name)
    paths = {}
    for name, fig in figs.items():
        path = folder / f"{name}.png"
        with _artifacts.atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120, format="png")
        plt.close(fig)
        paths[name] = path
    exp.timed("figures", t0, False)
    return paths


def provenance(exp: Experiment) -> dict:
    """What the run was: command, config, overrides, data, artifacts, versions, times."""
    from ..release import provenance as released_provenance

    bank = exp.loaded_bank
    rows = read_rows(exp.results_path, RESULT_COLUMNS)
    data: dict[str, Any] = {}
    if exp.loaded_mnist is not None:
        data["mnist"] = {
            s.provenance.get("split", i): dict(s.provenance) for i, s in enumerate(exp.loaded_mnist)
        }
    if bank is not None:
        data["source"] = bank.provenance.get("data", {})
    planned = len(exp.planned_cells())  # with grid.enabled=false too: says what is missing
    return {
        "command": exp.command,
        "preset": exp.cfg.from_preset,
        "name": exp.cfg.name,
        "overrides": exp.overrides,
        "config_file": exp.config_file,
        "config": exp.cfg.to_dict(),
        "config_key": exp.cfg.key(),
        # every key of this folder's rows (the same settings, keyed before a field was added)
        "config_keys": sorted({exp.cfg.key()} | {str(r["config_key"]) for r in rows}),
        "seeds": {
            "split_seeds": list(exp.cfg.grid.split_seeds),
            "init_seeds": list(exp.cfg.init.seeds),
            "source_net_seeds": [exp.cfg.source.seed + i for i in range(exp.cfg.source.n_nets)],
            "vae_seeds": {k: v.seed for k, v in exp.cfg.vae.layers().items()},
        },
        "data": data,
        "bank": None
        if bank is None
        else {
            "file": str(exp.bank_path),
            "sha256": exp.bank_sha(),
            "counts": bank.counts(),
            "norms": bank.provenance.get("norms"),
            "source_accuracy": bank.provenance.get("accuracy"),
        },
        "kernel_vaes": exp.vae_records,
        "released_prior": (
            {"layers": exp.released_records, **released_provenance()}
            if exp.released_records
            else None
        ),
        "rows": len(rows),
        "cells_planned": planned,
        "complete": planned == 0 or len(exp.prior_grid_done()) >= planned,
        "stage_seconds": exp.stage_seconds,
        "stage_loaded_from_cache": exp.stage_loaded,
        "environment": _artifacts.environment_record(),
        "threads": torch.get_num_threads(),
    }
