"""The prior grid: each (method, n, seed) cell trained once, its row appended as it finishes."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

import torch

from .. import artifacts as _artifacts
from ..device import exit_with_parent
from ..progress import progress
from .cells import MODEL_KEY, CellContext, ray_grid_cell, run_grid_cell, save_cell_model
from .config import ExperimentConfig
from .executor import run_on_ray
from .names import parse_method, uses_pipeline, vae_sources
from .results import RESULT_COLUMNS, append_row, read_rows
from .stages import test_subset

# Grid cells in worker processes (grid.workers > 0): each worker loads what the cells need once.

_WORKER: dict[str, Any] = {}


def init_grid_worker(
    experiment_class: type,
    cfg: ExperimentConfig,
    out: str,
    device: str,
    with_vaes: bool,
    with_released: bool = False,
    cell_bars: bool = True,
) -> None:
    """Load what every cell needs once per worker, from the caches the parent process filled."""
    exit_with_parent(os.getppid())
    if not cell_bars:
        os.environ["DWP_PROGRESS"] = "0"
    exp = experiment_class(cfg, out, device, verbose=False)
    torch.set_num_threads(1)  # after Experiment, which applies cfg.num_threads
    bank = exp.kernel_bank()
    vaes = exp.kernel_vaes() if with_vaes else None
    released = exp.released_vaes() if with_released else None
    _WORKER.update(exp=exp, ctx=exp.cell_context(bank, vaes, released))


def grid_worker_cell(method: str, n: int, seed: int) -> dict:
    return run_grid_cell(_WORKER["ctx"], method, n, seed, _WORKER["exp"].device)


class GridStage:
    """The prior grid of an :class:`~dwp_lib.experiment.runner.Experiment` (its stage 4)."""

    def planned_cells(self) -> list[tuple[str, int, int]]:
        """``(method, n, seed)`` of every cell of the grid, small n first."""
        g = self.cfg.grid
        return [(m, n, s) for n in g.sizes for s in g.split_seeds for m in g.methods]

    def prior_grid(self) -> list[dict]:
        """Train and evaluate every cell not yet in ``results.csv``; the rows of this config."""
        g = self.cfg.grid
        rows = read_rows(self.results_path, RESULT_COLUMNS, repair=True)
        self.folder.check_row_keys(rows)
        if not g.enabled:
            return rows
        todo = self._todo(rows)
        t0, shown = time.perf_counter(), _artifacts.shown(self.results_path)
        if todo:
            sources = set().union(*(vae_sources(m) for m, _, _ in todo))
            ours = any(uses_pipeline(m) for m, _, _ in todo)  # else the bank's bits do not matter
            bank = self.kernel_bank()
            if ours:
                self.check_bank(rows)
            vaes = self.kernel_vaes() if "trained" in sources else None
            released = self.released_vaes() if "released" in sources else None
            if ours:
                self.folder.check_artifacts(rows, self.artifact_hashes(vaes is not None))
            t0 = time.perf_counter()
            with self.folder.writing():
                # read again under the lock: a writer that finished meanwhile added cells
                rows = read_rows(self.results_path, RESULT_COLUMNS, repair=True)
                todo = self._todo(rows)
                workers = min(g.workers, len(todo))
                bar = progress(
                    total=len(todo), desc=f"prior grid ({workers or 1} at a time)", position=0
                )
                for row in self._grid_rows(todo, bank, vaes, workers, released) if todo else ():
                    state = row.pop(MODEL_KEY, None)
                    if state is not None:  # before the row: a row always has its network
                        save_cell_model(self.out, row, state, self.cfg)
                    append_row(self.results_path, row, RESULT_COLUMNS)
                    rows.append(row)
                    if (self.out / "provenance.json").exists():  # a killed run's says how far
                        self.write_provenance()
                    cell = f"{row['prior']}:{row['init']} n={row['n']} seed={row['seed']}"
                    bar.set_postfix_str(cell)
                    bar.update(1)
                bar.close()
            self.say(f"Prior grid: ran {len(todo)} cell(s) into {shown}")
        else:
            self.say(f"Prior grid: all {len(self.planned_cells())} cells found in {shown}")
        self.timed("prior_grid", t0, not todo)
        planned = {(*parse_method(m), n, s) for m, n, s in self.planned_cells()}
        return [r for r in rows if (r["prior"], r["init"], int(r["n"]), int(r["seed"])) in planned]

    def _todo(self, rows: list[dict]) -> list[tuple[str, int, int]]:
        """The planned cells that have no row yet."""
        have = {(r["prior"], r["init"], int(r["n"]), int(r["seed"])) for r in rows}
        return [
            (m, n, s) for m, n, s in self.planned_cells() if (*parse_method(m), n, s) not in have
        ]

    def _test_xy(self):
        _, test = self.mnist()
        g = self.cfg.grid
        return test_subset(test.float_images(), test.labels, g.test_images, g.test_seed)

    def cell_context(
        self, bank, vaes=None, released=None, *, with_data: bool = True
    ) -> CellContext:
        """What every grid cell reads, in one picklable object (see :class:`CellContext`)."""
        vae_sha = {
            "trained": [f"{k}={v['sha256'][:12]}" for k, v in self.vae_records.items()],
            "released": [
                f"released:{k}={v['sha256'][:12]}" for k, v in self.released_records.items()
            ],
        }
        train, test_xy = (self.mnist()[0], self._test_xy()) if with_data else (None, None)
        return CellContext(
            self.cfg, train, test_xy, bank, vaes, released, self.bank_sha()[:12], vae_sha
        )

    def _grid_rows(self, todo, bank, vaes, workers: int, released=None):
        """The rows of the cells ``todo``, as they finish."""
        ex = self.cfg.executor
        if ex.kind == "ray":
            calls = [(*cell, ex.threads) for cell in todo]
            ctx = self.cell_context(bank, vaes, released)
            yield from run_on_ray(ex, ray_grid_cell, ctx, calls, unit="cell")
            return
        if workers == 0:
            train, _ = self.mnist()
            test_xy = self._test_xy()
            for method, n, seed in todo:
                yield self.run_cell(method, n, seed, train, test_xy, bank, vaes, released)
            return
        # spawn, not fork: a forked child of a process that ran OpenMP or CUDA can hang
        ctx = multiprocessing.get_context("spawn")
        # in a notebook the workers' bars would interleave in the cell's output (its kernel
        # captures their stderr): there the grid's own bar counts the cells
        cell_bars = "ipykernel" not in sys.modules
        init = (type(self), self.cfg, str(self.out), str(self.device), vaes is not None)
        init += (released is not None, cell_bars)
        with ProcessPoolExecutor(workers, ctx, init_grid_worker, init) as pool:
            futures = [pool.submit(grid_worker_cell, *cell) for cell in todo]
            for fut in as_completed(futures):
                yield fut.result()

    def run_cell(self, method, n, seed, train, test_xy, bank, vaes, released=None) -> dict:
        """Train one Bayesian CNN (or the det baseline) on the balanced subset (n, seed)."""
        ctx = self.cell_context(bank, vaes, released, with_data=False)
        ctx = dataclasses.replace(ctx, train=train, test_xy=test_xy)
        return run_grid_cell(ctx, method, n, seed, self.device)

    def prior_grid_done(self) -> set:
        planned = {(*parse_method(m), n, s) for m, n, s in self.planned_cells()}
        rows = read_rows(self.results_path, RESULT_COLUMNS)
        return {(r["prior"], r["init"], int(r["n"]), int(r["seed"])) for r in rows} & planned
