"""The experiment: cached, resumable stages (:class:`Experiment`) and its local worker pool."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import multiprocessing
import os
import platform
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch

from .. import artifacts as _artifacts
from ..config import to_dict
from ..device import default_device, exit_with_parent
from ..executor import run_on_ray
from ..progress import progress
from ..source_nets import LAYERS, KernelBank, get_kernel_bank
from ..vae import (
    KernelVAE,
)
from .cells import CellContext, _ray_grid_cell, run_grid_cell
from .config import (
    EXTENDABLE,
    ExperimentConfig,
    LayerVAEConfig,
    at_default,
    config_differences,
    drop_paths,
    key_of,
    with_added_fields,
)
from .names import RELEASED, ExperimentError, parse_method, vae_sources
from .results import CURVE_COLUMNS, RESULT_COLUMNS, append_row, read_rows
from .stages import fit_layer_vae, init_costs, test_subset, train_plain_cnn_curve

# ------------------------------------------------------------------------------------------------
# The experiment: cached, resumable stages
# ------------------------------------------------------------------------------------------------


class Experiment:
    """Runs the stages of ``cfg`` into ``out_dir`` (default: a cache folder named after the
    config), loading what an earlier run left there and saying so.

    The source nets and the bank are cached by :func:`~dwp_lib.source_nets.get_kernel_bank`;
    the kernel VAEs under ``$DWP_CACHE/kernel_vaes`` (named after the bank's hash and the VAE
    config); the init experiment and the grid append rows to CSV files in ``out_dir``.
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        out_dir: str | os.PathLike | None = None,
        device: torch.device | str | None = None,
        *,
        verbose: bool = True,
        command: str | None = None,
        overrides: Sequence[str] = (),
        config_file: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.out = Path(out_dir) if out_dir else _artifacts.cache_dir("experiments", cfg.key())
        self.device = torch.device(device) if device is not None else default_device()
        self.verbose = verbose
        self.command = command
        self.overrides = list(overrides)
        self.config_file = config_file
        self.stage_seconds: dict[str, float] = {}
        self.stage_loaded: dict[str, bool] = {}
        self._bank: KernelBank | None = None
        self._bank_path: Path | None = None
        self._vaes: dict[str, KernelVAE] | None = None
        self.vae_records: dict[str, dict] = {}
        self._released: dict[str, KernelVAE] | None = None
        self._released_bank: dict | None = None
        self.released_records: dict[str, dict] = {}
        self._mnist = None
        self.out.mkdir(parents=True, exist_ok=True)
        self._check_folder()
        if cfg.num_threads is not None:
            torch.set_num_threads(cfg.num_threads)

    # -- bookkeeping ----------------------------------------------------------------------------
    def say(self, *msg) -> None:
        if self.verbose:
            print(*msg)

    @property
    def results_path(self) -> Path:
        return self.out / "results.csv"

    @property
    def curves_path(self) -> Path:
        return self.out / "init_curves.csv"

    def _check_folder(self) -> None:
        """Refuse a folder whose earlier run used other settings (mixing would be wrong)."""
        path = self.out / "config.json"
        now = self.cfg.to_dict()
        self.accepted_keys = {self.cfg.key()}
        if not path.exists() and read_rows(self.curves_path):
            raise ExperimentError(
                f"{self.out} holds {self.curves_path.name} but no config.json, so nothing says "
                "which settings made its rows; restore config.json (e.g. git checkout), or move "
                "the folder away and start a new run"
            )
        if path.exists():
            try:
                before = json.loads(path.read_text())
                if not isinstance(before, dict):
                    raise ValueError("it does not hold a mapping of settings")
            except ValueError as err:
                raise ExperimentError(
                    f"{path} is damaged ({err}); restore it from a copy (e.g. git checkout), or "
                    "move the folder away and start a new run"
                ) from None
            # rows written before the library gained a field carry the key of the config then
            self.accepted_keys.add(key_of(before))
            self.accepted_keys.update(self._provenance_keys())
            # a setting added to the library since that run, at its preset value, is the old
            # behaviour (new fields default to what the code did before they existed)
            preset = ExperimentConfig.preset_config(self.cfg.from_preset).to_dict()
            before = with_added_fields(before, now, preset)
            diff = config_differences(drop_paths(before, EXTENDABLE), drop_paths(now, EXTENDABLE))
            if diff:
                raise ExperimentError(
                    f"{self.out} holds a run with other settings ({'; '.join(diff[:6])}"
                    f"{'...' if len(diff) > 6 else ''}); use a new --out folder for these "
                    "settings (only sizes, methods, seeds and inits may change in one folder)"
                )
        self._check_row_keys(read_rows(self.results_path, RESULT_COLUMNS))
        _artifacts.atomic_write_json(path, now)

    def _check_artifacts(self, rows: Sequence[Mapping], vaes: bool) -> None:
        """Refuse to add rows made from another kernel bank or other kernel VAEs than the rows
        already in this folder (same settings, but the cache was rebuilt in between, e.g. with
        another thread count): mixed rows would compare two priors under one name."""
        mine = {"bank": self.bank_sha()[:12]}
        if vaes:
            mine.update({k: v["sha256"][:12] for k, v in self.vae_records.items()})
        theirs: dict[str, set[str]] = {}
        for r in rows:
            if r.get("bank_sha256"):
                theirs.setdefault("bank", set()).add(str(r["bank_sha256"]))
            for part in str(r.get("vae_sha256") or "").split("/"):
                layer, _, sha = part.partition("=")
                if sha and layer in mine:
                    theirs.setdefault(layer, set()).add(sha)
        try:
            prov = json.loads((self.out / "provenance.json").read_text())
        except (OSError, ValueError):
            prov = {}
        if read_rows(self.curves_path) and isinstance(prov, dict):  # curves carry no hashes
            if (prov.get("bank") or {}).get("sha256"):
                theirs.setdefault("bank", set()).add(str(prov["bank"]["sha256"])[:12])
            for layer, rec in (prov.get("kernel_vaes") or {}).items():
                if layer in mine and isinstance(rec, dict) and rec.get("sha256"):
                    theirs.setdefault(layer, set()).add(str(rec["sha256"])[:12])
        wrong = [f"{k}: rows {', '.join(sorted(v))}, now {mine[k]}" for k, v in theirs.items()
                 if k in mine and v != {mine[k]}]  # fmt: skip
        if wrong:
            raise ExperimentError(
                f"{self.out} holds rows made from other artifacts than the cache holds now "
                f"({'; '.join(wrong)}): the kernel bank or VAEs were rebuilt since (another "
                "machine or thread count gives other bits). New rows would mix two priors under "
                "one name; use a new --out folder, or restore the cached files those rows used"
            )

    def _provenance_keys(self) -> set[str]:
        """The config keys an earlier run of this folder recorded as its own (``config_keys``)."""
        try:
            prov = json.loads((self.out / "provenance.json").read_text())
        except (OSError, ValueError):
            return set()
        keys = prov.get("config_keys") if isinstance(prov, dict) else None
        return {str(k) for k in keys} if isinstance(keys, list) else set()

    def _check_row_keys(self, rows: Sequence[Mapping]) -> None:
        """Refuse rows that another config made (their ``config_key`` is not this run's)."""
        bad = sorted({str(r.get("config_key")) for r in rows} - self.accepted_keys)
        if bad:
            n = sum(str(r.get("config_key")) in bad for r in rows)
            raise ExperimentError(
                f"{self.results_path} holds {n} row(s) made with other settings (config_key "
                f"{', '.join(bad)}; this run's is {self.cfg.key()}): its config.json was replaced "
                "or deleted. Use a new --out folder, or restore that run's config.json"
            )

    @contextlib.contextmanager
    def _writing(self):
        """Hold the run folder's lock while rows are appended: a second process writing to the
        same folder is refused (it would store every cell twice), with the holder's pid."""
        from filelock import FileLock, Timeout

        lock, owner = FileLock(str(self.out / ".lock")), self.out / ".lock.owner"
        try:
            lock.acquire(timeout=0)
        except Timeout:
            who = owner.read_text().strip() if owner.exists() else "another process"
            raise ExperimentError(
                f"{self.out} is being written by {who}; wait for it to finish (or stop it), or "
                "use another --out folder. Two writers would store every cell twice."
            ) from None
        try:
            owner.write_text(f"process {os.getpid()} on {platform.node()}\n")
            yield
        finally:
            lock.release()

    def _timed(self, stage: str, t0: float, loaded: bool) -> None:
        self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + time.perf_counter() - t0
        self.stage_loaded[stage] = loaded

    def mnist(self):
        """MNIST train and test :class:`~dwp_lib.data.ImageSet` s (loaded once)."""
        if self._mnist is None:
            from ..data import load_mnist

            self._mnist = (load_mnist("train"), load_mnist("test"))
        return self._mnist

    # -- stage 1: source nets and the bank --------------------------------------------------------
    def kernel_bank(self) -> KernelBank:
        """The kernel bank of ``cfg.source`` (trained, or loaded from the cache)."""
        if self._bank is None:
            t0 = time.perf_counter()
            out = self.cfg.source.default_dir()
            self._bank_path = out / self.cfg.source.bank_file()
            existed = self._bank_path.exists()
            self._bank = get_kernel_bank(
                self.cfg.source,
                out,
                self.device,
                verbose=self.verbose,
                executor=self.cfg.executor,
            )
            loaded = existed and self._bank.provenance.get("file") is not None
            self._timed("source_nets_and_bank", t0, loaded)
        return self._bank

    # -- stage 2: one kernel VAE per layer ------------------------------------------------------
    def vae_path(self, layer: str) -> Path:
        """Where the kernel VAE of ``layer`` is cached: named after a hash of the slices it is
        fitted to and held out on (the bank's contents, not its file, so a bank re-cut with
        the same slices keeps its VAEs) and of the layer's VAE config."""
        lc = self.cfg.vae.layers()[layer]
        digest = hashlib.sha256()
        for split in (lc.split, "test"):
            digest.update(self.vae_slices(layer, split).contiguous().numpy().tobytes())
        config = drop_paths(to_dict(lc), at_default({"vae": {layer: to_dict(lc)}}, f"vae.{layer}."))
        spec = {"slices": digest.hexdigest(), "layer": layer, "config": config}
        key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
        return _artifacts.cache_dir("kernel_vaes") / f"{layer}-{key}.pt"

    def vae_slices(self, layer: str, split: str) -> torch.Tensor:
        """The slices the kernel VAE of ``layer`` is fitted to (``split``: ``train``, ``test``
        or ``all``): this pipeline's bank, or with ``vae.<layer>.bank = "released"`` the
        authors' released bank (:func:`dwp_lib.release.released_bank_splits`)."""
        lc = self.cfg.vae.layers()[layer]
        if lc.bank == "pipeline":
            w = self.kernel_bank().slices(layer, split)
            return w if lc.slice_scale == 1.0 else w * lc.slice_scale
        if self._released_bank is None:
            from .. import release

            try:
                self._released_bank = release.released_bank_splits()
            except release.ReleaseUnavailableError as err:
                raise ExperimentError(f"vae.{layer}.bank=released needs them: {err}") from None
        parts = self._released_bank[layer]
        w = torch.cat([parts["train"], parts["test"]]) if split == "all" else parts[split]
        return w if lc.slice_scale == 1.0 else w * lc.slice_scale

    def bank_sha(self) -> str:
        bank = self.kernel_bank()
        sha = bank.provenance.get("sha256")
        if sha is None and self._bank_path is not None and self._bank_path.exists():
            sha = _artifacts.read_record(self._bank_path)["sha256"]
        return str(sha)

    def kernel_vaes(self) -> dict[str, KernelVAE]:
        """``{"conv1": KernelVAE, "conv2": KernelVAE}``, each trained on its layer's bank slices
        (or loaded, hash-checked, from the cache) and scored on held-out slices."""
        if self._vaes is not None:
            return self._vaes
        bank = self.kernel_bank()
        t0 = time.perf_counter()
        vaes, all_loaded = {}, True
        for layer, lc in self.cfg.vae.layers().items():
            path = self.vae_path(layer)
            if _artifacts.is_valid_artifact(path):
                vae = KernelVAE.load(path, map_location=self.device)
                self._check_vae_file(path, vae, layer, lc)
                self.say(f"Loaded the {layer} kernel VAE from {_artifacts.shown(path)}")
            else:
                all_loaded = False
                vae = self._train_vae(layer, lc, bank, path)
            vaes[layer] = vae
            rec = _artifacts.read_record(path)
            self.vae_records[layer] = {
                "file": str(path),
                "sha256": rec["sha256"],
                "bytes": rec["bytes"],
                "bank": lc.bank,
                **rec["provenance"].get("training", {}),
            }
        self._vaes = vaes
        self._timed("kernel_vaes", t0, all_loaded)
        return vaes

    @staticmethod
    def _check_vae_file(path: Path, vae: KernelVAE, layer: str, lc: LayerVAEConfig) -> None:
        """Refuse a cached VAE file that is not the one asked for (another layer's, or another
        architecture's, placed or copied under this name)."""
        prov = getattr(vae, "record", {}).get("provenance", {})
        made_for = prov.get("layer")
        if made_for != layer or vae.config != lc.arch:
            raise ExperimentError(
                f"{path} holds a kernel VAE for {made_for or 'an unknown layer'} "
                f"({vae.config.describe()}), not the {layer} VAE this run needs "
                f"({lc.arch.describe()}): the file was copied or renamed. Delete it and its "
                f"{path.name}.json, then rerun: the {layer} VAE is retrained from the bank"
            )

    def released_vaes(self) -> dict[str, KernelVAE]:
        """The paper authors' released kernel VAEs (:func:`dwp_lib.release.load_released_vaes`:
        verified, their exact architectures; GPL-3.0), loaded once."""
        if self._released is None:
            from .. import release

            t0 = time.perf_counter()
            try:
                self._released = release.load_released_vaes(self.device)
            except release.ReleaseUnavailableError as err:
                raise ExperimentError(f"the dwp@released prior/init needs them: {err}") from None
            self.released_records = {k: dict(v.record) for k, v in self._released.items()}
            self.say(release.AUTHORS_RELEASE.notice)
            self._timed("released_vaes", t0, True)
        return self._released

    def _train_vae(self, layer: str, lc: LayerVAEConfig, bank: KernelBank, path: Path):
        k = LAYERS[layer]
        if lc.arch.kernel_size != k:
            raise ExperimentError(f"vae.{layer}.arch.kernel_size must be {k}")
        slices = self.vae_slices(layer, lc.split)
        if len(slices) < 2:
            raise ExperimentError(
                f"the bank has {len(slices)} {layer} slices in split {lc.split!r}: too few to fit "
                "a kernel VAE; train more source nets or lower source.prune_norms"
            )
        test = self.vae_slices(layer, "test")
        vae, training = fit_layer_vae(lc, slices, test, self.device)
        vae.save(
            path,
            {
                "stage": "kernel_vae",
                "layer": layer,
                "bank_sha256": self.bank_sha(),
                "slices_from": (
                    "this pipeline's bank"
                    if lc.bank == "pipeline"
                    else (
                        "the authors' released bank (GPL-3.0): 7x7 their train split, 5x5 80% "
                        "of their test file (seeded split)"
                    )
                )
                + ("" if lc.slice_scale == 1.0 else f", every slice x {lc.slice_scale:g}"),
                "layer_config": to_dict(lc),
                "training": training,
            },
        )
        score = training["held_out"]
        adv = f"; {score['advantage']:+.2f} nats/slice vs a per-pixel Gaussian" if score else ""
        self.say(
            f"Trained the {layer} kernel VAE ({training['steps']} steps, "
            f"{training['seconds']:.0f} s, "
            f"{len(slices):,} slices{adv}); saved to {_artifacts.shown(path)}"
        )
        return vae

    # -- stage 3: the initialisation experiment --------------------------------------------------
    def init_experiment(self) -> list[dict]:
        """Accuracy-vs-step rows of a plain CNN from each init and seed (resumes per run)."""
        ic = self.cfg.init
        rows = read_rows(self.curves_path, CURVE_COLUMNS, repair=True)
        if not ic.enabled:
            return rows
        done = {(r["init"], int(r["seed"])) for r in rows if int(r["step"]) == ic.steps}
        todo = [(i, s) for i in ic.inits for s in ic.seeds if (i, s) not in done]
        t0 = time.perf_counter()
        if todo:
            need_bank = any(i == "filters" for i, _ in todo)
            need_vaes = any(i == "dwp" for i, _ in todo)
            bank = self.kernel_bank() if need_bank or need_vaes else None
            vaes = self.kernel_vaes() if need_vaes else None
            released = self.released_vaes() if any(i == RELEASED for i, _ in todo) else None
            if bank is not None:
                self._check_artifacts(read_rows(self.results_path, RESULT_COLUMNS), need_vaes)
            t0 = time.perf_counter()
            train, test = self.mnist()
            xt, yt = test_subset(test.float_images(), test.labels, ic.test_images, 0)
            data = (train.float_images(), train.labels, xt, yt)
            # drop partial runs (interrupted mid-way): they are redone from step 0
            keep = [r for r in rows if (r["init"], int(r["seed"])) in done]
            if len(keep) != len(rows):
                self._rewrite(self.curves_path, keep, CURVE_COLUMNS)
                rows = keep
            with self._writing():
                for init_name, seed in progress(todo, desc="init experiment", position=0):
                    new = train_plain_cnn_curve(
                        init_name, seed, ic, data, bank, vaes, self.device, released
                    )
                    for r in new:
                        append_row(self.curves_path, r, CURVE_COLUMNS)
                    rows += new
            self.say(
                f"Init experiment: trained {len(todo)} run(s) into {_artifacts.shown(self.curves_path)}"
            )
        else:
            self.say(
                f"Init experiment: loaded {len(rows)} rows from {_artifacts.shown(self.curves_path)}"
            )
        self._timed("init_experiment", t0, not todo)
        return [r for r in rows if r["init"] in ic.inits and int(r["seed"]) in ic.seeds]

    def init_costs(self) -> dict:
        """Bytes and seconds of the dwp init vs the filters init (saved as init_costs.json)."""
        vaes, bank = self.kernel_vaes(), self.kernel_bank()
        costs = init_costs(bank, vaes, self.cfg.init.channels, self.cfg.init.draw_repeats)
        path = self._bank_path
        costs["bank_file_bytes"] = path.stat().st_size if path and path.exists() else None
        costs["vae_file_bytes"] = {k: v["bytes"] for k, v in self.vae_records.items()}
        costs["source_net_seconds"] = sum(float(r.get("seconds") or 0) for r in self.net_records())
        costs["vae_training_seconds"] = {k: v.get("seconds") for k, v in self.vae_records.items()}
        _artifacts.atomic_write_json(self.out / "init_costs.json", costs)
        return costs

    def net_records(self) -> list[dict]:
        folder = self.cfg.source.default_dir()
        out = []
        for i in range(self.cfg.source.n_nets):
            path = folder / f"net_{i:03d}.pt"
            if path.exists():
                out.append(_artifacts.read_record(path)["provenance"].get("record", {}))
        return out

    @staticmethod
    def _rewrite(path: Path, rows: list[dict], columns: Sequence[str]) -> None:
        with _artifacts.atomic_path(path) as tmp:
            for r in rows:
                append_row(tmp, r, columns)
            if not rows:
                tmp.write_text("")

    # -- stage 4: the prior comparison -----------------------------------------------------------
    def planned_cells(self) -> list[tuple[str, int, int]]:
        """``(method, n, seed)`` of every cell of the grid, small n first."""
        g = self.cfg.grid
        return [(m, n, s) for n in g.sizes for s in g.split_seeds for m in g.methods]

    def prior_grid(self) -> list[dict]:
        """Train and evaluate every cell not yet in ``results.csv``; return the rows of the
        cells of this config (earlier rows of other sizes, methods or seeds stay in the file)."""
        g = self.cfg.grid
        rows = read_rows(self.results_path, RESULT_COLUMNS, repair=True)
        self._check_row_keys(rows)
        if not g.enabled:
            return rows
        todo = self._todo(rows)
        t0 = time.perf_counter()
        if todo:
            sources = set().union(*(vae_sources(m) for m, _, _ in todo))
            bank = self.kernel_bank()
            vaes = self.kernel_vaes() if "trained" in sources else None
            released = self.released_vaes() if "released" in sources else None
            self._check_artifacts(rows, vaes is not None)
            t0 = time.perf_counter()
            with self._writing():
                # read again under the lock: a writer that finished meanwhile added cells
                rows = read_rows(self.results_path, RESULT_COLUMNS, repair=True)
                todo = self._todo(rows)
                workers = min(g.workers, len(todo))
                bar = progress(
                    total=len(todo),
                    desc=f"prior grid ({workers or 1} at a time)",
                    position=0,
                )
                for row in self._grid_rows(todo, bank, vaes, workers, released) if todo else ():
                    append_row(self.results_path, row, RESULT_COLUMNS)
                    rows.append(row)
                    cell = f"{row['prior']}:{row['init']} n={row['n']} seed={row['seed']}"
                    bar.set_postfix_str(cell)
                    bar.update(1)
                bar.close()
            self.say(
                f"Prior grid: ran {len(todo)} cell(s) into {_artifacts.shown(self.results_path)}"
            )
        else:
            self.say(
                f"Prior grid: all {len(self.planned_cells())} cells found in "
                f"{_artifacts.shown(self.results_path)}"
            )
        self._timed("prior_grid", t0, not todo)
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
            self.cfg,
            train,
            test_xy,
            bank,
            vaes,
            released,
            self.bank_sha()[:12],
            vae_sha,
        )

    def _grid_rows(self, todo, bank, vaes, workers: int, released=None):
        """The rows of the cells ``todo``, as they finish (in order when ``workers`` is 0; on
        Ray with ``executor.kind = "ray"``)."""
        ex = self.cfg.executor
        if ex.kind == "ray":
            calls = [(*cell, ex.threads) for cell in todo]
            ctx = self.cell_context(bank, vaes, released)
            yield from run_on_ray(ex, _ray_grid_cell, ctx, calls, unit="cell")
            return
        if workers == 0:
            train, _ = self.mnist()
            test_xy = self._test_xy()
            for method, n, seed in todo:
                yield self.run_cell(method, n, seed, train, test_xy, bank, vaes, released)
            return
        # spawn, not fork: a forked child of a process that ran OpenMP or CUDA can hang
        ctx = multiprocessing.get_context("spawn")
        init = (
            self.cfg,
            str(self.out),
            str(self.device),
            vaes is not None,
            released is not None,
        )
        with ProcessPoolExecutor(workers, ctx, _init_grid_worker, init) as pool:
            futures = [pool.submit(_grid_worker_cell, *cell) for cell in todo]
            for fut in as_completed(futures):
                yield fut.result()

    def run_cell(self, method, n, seed, train, test_xy, bank, vaes, released=None) -> dict:
        """Train one Bayesian CNN (or the det baseline) on the balanced subset (n, seed).
        ``vaes``: the pipeline's kernel VAEs; ``released``: the authors' (``dwp@released``)."""
        ctx = self.cell_context(bank, vaes, released, with_data=False)
        ctx = dataclasses.replace(ctx, train=train, test_xy=test_xy)
        return run_grid_cell(ctx, method, n, seed, self.device)

    # -- outputs ----------------------------------------------------------------------------------
    def write_figures(self, curves=None, rows=None, costs=None) -> dict[str, Path]:
        """Draw every figure of the run into ``out/figures`` (PNG); return their paths."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        from .. import plots

        t0 = time.perf_counter()
        folder = self.out / "figures"
        folder.mkdir(exist_ok=True)
        figs = {}
        bank, vaes = self.kernel_bank(), self.kernel_vaes()
        figs["kernel_examples"] = plots.plot_kernel_examples(bank, vaes)
        figs["latent_space"] = plots.plot_latent_space(bank, vaes)
        if curves is None:
            curves = read_rows(self.curves_path, CURVE_COLUMNS)
        if curves:
            figs["init_curves"] = plots.plot_init_curves(curves)
        if rows is None:
            rows = read_rows(self.results_path, RESULT_COLUMNS)
        if rows:
            figs["accuracy_vs_n"] = plots.plot_accuracy_vs_n(rows, title=self.cfg.name)
        paths = {}
        for name, fig in figs.items():
            path = folder / f"{name}.png"
            with _artifacts.atomic_path(path) as tmp:
                fig.savefig(tmp, dpi=120, format="png")
            plt.close(fig)
            paths[name] = path
        self._timed("figures", t0, False)
        return paths

    def provenance(self) -> dict:
        """What the run was: command, config, overrides, data, artifacts, versions, times."""
        bank = self._bank
        rows = read_rows(self.results_path, RESULT_COLUMNS)
        data: dict[str, Any] = {}
        if self._mnist is not None:
            data["mnist"] = {
                s.provenance.get("split", i): dict(s.provenance) for i, s in enumerate(self._mnist)
            }
        if bank is not None:
            data["source"] = bank.provenance.get("data", {})
        planned = len(self.planned_cells())  # with grid.enabled=false too: says what is missing
        return {
            "command": self.command,
            "preset": self.cfg.from_preset,
            "name": self.cfg.name,
            "overrides": self.overrides,
            "config_file": self.config_file,
            "config": self.cfg.to_dict(),
            "config_key": self.cfg.key(),
            # every key of this folder's rows: the same settings before and after the library
            # gained a field
            "config_keys": sorted({self.cfg.key()} | {str(r["config_key"]) for r in rows}),
            "seeds": {
                "split_seeds": list(self.cfg.grid.split_seeds),
                "init_seeds": list(self.cfg.init.seeds),
                "source_net_seeds": [
                    self.cfg.source.seed + i for i in range(self.cfg.source.n_nets)
                ],
                "vae_seeds": {k: v.seed for k, v in self.cfg.vae.layers().items()},
            },
            "data": data,
            "bank": None
            if bank is None
            else {
                "file": str(self._bank_path),
                "sha256": self.bank_sha(),
                "counts": bank.counts(),
                "norms": bank.provenance.get("norms"),
                "source_accuracy": bank.provenance.get("accuracy"),
            },
            "kernel_vaes": self.vae_records,
            "released_prior": (
                {"layers": self.released_records, **_released_provenance()}
                if self.released_records
                else None
            ),
            "rows": len(rows),
            "cells_planned": planned,
            "complete": planned == 0 or len(self.prior_grid_done()) >= planned,
            "stage_seconds": self.stage_seconds,
            "stage_loaded_from_cache": self.stage_loaded,
            "environment": _artifacts.environment_record(),
            "threads": torch.get_num_threads(),
        }

    def prior_grid_done(self) -> set:
        planned = {(*parse_method(m), n, s) for m, n, s in self.planned_cells()}
        rows = read_rows(self.results_path, RESULT_COLUMNS)
        return {(r["prior"], r["init"], int(r["n"]), int(r["seed"])) for r in rows} & planned

    def write_provenance(self, extra: Mapping | None = None) -> Path:
        prov = self.provenance()
        if extra:
            prov.update(extra)
        path = self.out / "provenance.json"
        _artifacts.atomic_write_json(path, prov)
        return path

    def run(self) -> dict:
        """Every stage in order, then figures and provenance. Returns a summary dict."""
        t0 = time.perf_counter()
        bank = self.kernel_bank()
        self.say(bank.summary())
        self.kernel_vaes()
        # before provenance.json is rewritten: it records the artifacts of the rows so far
        self._check_artifacts(read_rows(self.results_path, RESULT_COLUMNS), vaes=True)
        self.write_provenance({"wall_seconds": time.perf_counter() - t0})
        costs = curves = None
        if self.cfg.init.enabled:
            curves = self.init_experiment()
            costs = self.init_costs()
            self.write_provenance({"wall_seconds": time.perf_counter() - t0})
        rows = self.prior_grid()
        self.write_figures(curves, rows, costs)
        prov = self.write_provenance({"wall_seconds": time.perf_counter() - t0})
        return {"rows": rows, "curves": curves, "costs": costs, "provenance": prov}


# ------------------------------------------------------------------------------------------------
# Grid cells in worker processes (grid.workers > 0)
# ------------------------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _released_provenance() -> dict:
    from ..release import provenance

    return provenance()


def _init_grid_worker(
    cfg: ExperimentConfig,
    out: str,
    device: str,
    with_vaes: bool,
    with_released: bool = False,
) -> None:
    """Load what every cell needs once per worker: the bank and the kernel VAEs come from the
    cache that the parent process filled, MNIST from the data cache."""
    exit_with_parent(os.getppid())
    exp = Experiment(cfg, out, device, verbose=False)
    torch.set_num_threads(1)  # after Experiment, which applies cfg.num_threads
    bank = exp.kernel_bank()
    vaes = exp.kernel_vaes() if with_vaes else None
    released = exp.released_vaes() if with_released else None
    _WORKER.update(exp=exp, ctx=exp.cell_context(bank, vaes, released))


def _grid_worker_cell(method: str, n: int, seed: int) -> dict:
    w = _WORKER
    return run_grid_cell(w["ctx"], method, n, seed, w["exp"].device)
