"""The experiment's cached, resumable stages (:class:`Experiment`; the grid is in ``grid``)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from .. import artifacts as _artifacts
from ..config import to_dict
from ..device import default_device
from ..kernel_bank import KernelBank
from ..kernel_vae import KernelVAE
from ..nets import LAYERS
from ..progress import progress
from . import report
from .config import ExperimentConfig, LayerVAEConfig, at_default, drop_paths
from .folder import RunFolder
from .grid import GridStage
from .names import RELEASED, ExperimentError
from .results import CURVE_COLUMNS, RESULT_COLUMNS, append_row, read_rows, rewrite_rows
from .sources import get_kernel_bank
from .stages import fit_layer_vae, init_costs, test_subset, train_plain_cnn_curve

#: where the slices of a VAE fitted to the released bank come from (recorded with the VAE)
RELEASED_SLICES = (
    "the authors' released bank (GPL-3.0): 7x7 their train split, 5x5 80% of their test file "
    "(seeded split)"
)


class Experiment(GridStage):
    """Runs the stages of ``cfg`` into ``out_dir``, loading what is cached and saying so."""

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
        self.loaded_bank: KernelBank | None = None  # None until a stage needs it
        self.bank_path: Path | None = None
        self._vaes: dict[str, KernelVAE] | None = None
        self.vae_records: dict[str, dict] = {}
        self._released: dict[str, KernelVAE] | None = None
        self._released_bank: dict | None = None
        self.released_records: dict[str, dict] = {}
        self.loaded_mnist = None  # (train, test) once a stage has loaded them
        self.folder = RunFolder(self.out)
        self.results_path, self.curves_path = self.folder.results_path, self.folder.curves_path
        self.folder.check_settings(cfg)  # refuses a folder made with other settings
        if cfg.num_threads is not None:
            torch.set_num_threads(cfg.num_threads)

    def say(self, *msg) -> None:
        if self.verbose:
            print(*msg)

    def artifact_hashes(self, vaes: bool) -> dict[str, str]:
        """The 12-digit SHA-256 of the bank and (``vaes``) of each kernel VAE in use."""
        mine = {"bank": self.bank_sha()[:12]}
        if vaes:
            mine.update({k: v["sha256"][:12] for k, v in self.vae_records.items()})
        return mine

    def check_bank(self, rows: list[dict]) -> None:
        """Refuse rows from another kernel bank before the kernel VAEs train on this one."""
        self.folder.check_artifacts(rows, {"bank": self.bank_sha()[:12]})

    def timed(self, stage: str, t0: float, loaded: bool) -> None:
        self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + time.perf_counter() - t0
        self.stage_loaded[stage] = loaded

    def mnist(self):
        """MNIST train and test :class:`~dwp_lib.data.ImageSet` s (loaded once)."""
        if self.loaded_mnist is None:
            from ..data import load_mnist

            self.loaded_mnist = (load_mnist("train"), load_mnist("test"))
        return self.loaded_mnist

    def kernel_bank(self) -> KernelBank:
        """The kernel bank of ``cfg.source`` (trained, or loaded from the cache)."""
        if self.loaded_bank is None:
            t0 = time.perf_counter()
            out = self.cfg.source.default_dir()
            self.bank_path = out / self.cfg.source.bank_file()
            existed = self.bank_path.exists()
            self.loaded_bank = get_kernel_bank(
                self.cfg.source, out, self.device, verbose=self.verbose, executor=self.cfg.executor
            )
            loaded = existed and self.loaded_bank.provenance.get("file") is not None
            self.timed("source_nets_and_bank", t0, loaded)
        return self.loaded_bank

    def vae_path(self, layer: str) -> Path:
        """The cache file of ``layer``'s kernel VAE: a hash of its slices and config."""
        lc = self.cfg.vae.layers()[layer]
        digest = hashlib.sha256()
        for split in (lc.split, "test"):
            digest.update(self.vae_slices(layer, split).contiguous().numpy().tobytes())
        config = drop_paths(to_dict(lc), at_default({"vae": {layer: to_dict(lc)}}, f"vae.{layer}."))
        spec = {"slices": digest.hexdigest(), "layer": layer, "config": config}
        key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
        return _artifacts.cache_dir("kernel_vaes") / f"{layer}-{key}.pt"

    def vae_slices(self, layer: str, split: str) -> torch.Tensor:
        """The slices of ``split`` the kernel VAE of ``layer`` is fitted to."""
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
        if sha is None and self.bank_path is not None and self.bank_path.exists():
            sha = _artifacts.read_record(self.bank_path)["sha256"]
        return str(sha)

    def kernel_vaes(self) -> dict[str, KernelVAE]:
        """``{"conv1": KernelVAE, "conv2": KernelVAE}``, trained (or loaded from the cache)."""
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
        self.timed("kernel_vaes", t0, all_loaded)
        return vaes

    @staticmethod
    def _check_vae_file(path: Path, vae: KernelVAE, layer: str, lc: LayerVAEConfig) -> None:
        """Refuse a cached VAE file of another layer or architecture (copied under this name)."""
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
        """The paper authors' released kernel VAEs (GPL-3.0), loaded once."""
        if self._released is None:
            from .. import authors_vaes, release

            t0 = time.perf_counter()
            try:
                self._released = authors_vaes.load_released_vaes(self.device)
            except release.ReleaseUnavailableError as err:
                raise ExperimentError(f"the dwp@released prior/init needs them: {err}") from None
            self.released_records = {k: dict(v.record) for k, v in self._released.items()}
            self.say(release.AUTHORS_RELEASE.notice)
            self.timed("released_vaes", t0, True)
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
        slices_from = "this pipeline's bank" if lc.bank == "pipeline" else RELEASED_SLICES
        if lc.slice_scale != 1.0:
            slices_from += f", every slice x {lc.slice_scale:g}"
        record = {"stage": "kernel_vae", "layer": layer, "bank_sha256": self.bank_sha()}
        record.update(slices_from=slices_from, layer_config=to_dict(lc), training=training)
        vae.save(path, record)
        score = training["held_out"]
        adv = f"; {score['advantage']:+.2f} nats/slice vs a per-pixel Gaussian" if score else ""
        self.say(
            f"Trained the {layer} kernel VAE ({training['steps']} steps, "
            f"{training['seconds']:.0f} s, {len(slices):,} slices{adv}); saved to "
            f"{_artifacts.shown(path)}"
        )
        return vae

    def init_experiment(self) -> list[dict]:
        """Accuracy-vs-step rows of a plain CNN from each init and seed (resumes per run)."""
        ic = self.cfg.init
        rows = read_rows(self.curves_path, CURVE_COLUMNS, repair=True)
        if not ic.enabled:
            return rows
        done = {(r["init"], int(r["seed"])) for r in rows if int(r["step"]) == ic.steps}
        todo = [(i, s) for i in ic.inits for s in ic.seeds if (i, s) not in done]
        t0, shown = time.perf_counter(), _artifacts.shown(self.curves_path)
        if todo:
            need_bank = any(i == "filters" for i, _ in todo)
            need_vaes = any(i == "dwp" for i, _ in todo)
            bank = self.kernel_bank() if need_bank or need_vaes else None
            if bank is not None:
                self.check_bank(read_rows(self.results_path, RESULT_COLUMNS))
            vaes = self.kernel_vaes() if need_vaes else None
            released = self.released_vaes() if any(i == RELEASED for i, _ in todo) else None
            if bank is not None:
                self.folder.check_artifacts(
                    read_rows(self.results_path, RESULT_COLUMNS), self.artifact_hashes(need_vaes)
                )
            t0 = time.perf_counter()
            train, test = self.mnist()
            xt, yt = test_subset(test.float_images(), test.labels, ic.test_images, 0)
            data = (train.float_images(), train.labels, xt, yt)
            with self.folder.writing():
                # read again under the lock: a writer that finished meanwhile added runs
                rows = read_rows(self.curves_path, CURVE_COLUMNS, repair=True)
                done = {(r["init"], int(r["seed"])) for r in rows if int(r["step"]) == ic.steps}
                todo = [(i, s) for i in ic.inits for s in ic.seeds if (i, s) not in done]
                # drop partial runs (interrupted mid-way): they are redone from step 0
                keep = [r for r in rows if (r["init"], int(r["seed"])) in done]
                if len(keep) != len(rows):
                    rewrite_rows(self.curves_path, keep, CURVE_COLUMNS)
                    rows = keep
                for init_name, seed in progress(todo, desc="init experiment", position=0):
                    new = train_plain_cnn_curve(
                        init_name, seed, ic, data, bank, vaes, self.device, released
                    )
                    for r in new:
                        append_row(self.curves_path, r, CURVE_COLUMNS)
                    rows += new
            self.say(f"Init experiment: trained {len(todo)} run(s) into {shown}")
        else:
            self.say(f"Init experiment: loaded {len(rows)} rows from {shown}")
        self.timed("init_experiment", t0, not todo)
        return [r for r in rows if r["init"] in ic.inits and int(r["seed"]) in ic.seeds]

    def init_costs(self) -> dict:
        """Bytes and seconds of the dwp init vs the filters init (saved as init_costs.json)."""
        vaes, bank = self.kernel_vaes(), self.kernel_bank()
        costs = init_costs(bank, vaes, self.cfg.init.channels, self.cfg.init.draw_repeats)
        path = self.bank_path
        costs["bank_file_bytes"] = path.stat().st_size if path and path.exists() else None
        costs["vae_file_bytes"] = {k: v["bytes"] for k, v in self.vae_records.items()}
        costs["source_net_seconds"] = sum(float(r.get("seconds") or 0) for r in self.net_records())
        costs["vae_training_seconds"] = {k: v.get("seconds") for k, v in self.vae_records.items()}
        _artifacts.atomic_write_json(self.out / "init_costs.json", costs)
        return costs

    def net_records(self) -> list[dict]:
        folder = self.cfg.source.default_dir()
        paths = [folder / f"net_{i:03d}.pt" for i in range(self.cfg.source.n_nets)]
        records = [_artifacts.read_record(p)["provenance"] for p in paths if p.exists()]
        return [r.get("record", {}) for r in records]

    def write_figures(self, curves=None, rows=None, costs=None) -> dict[str, Path]:
        """Draw every figure of the run into ``out/figures`` (PNG); return their paths."""
        return report.write_figures(self, curves, rows, costs)

    def provenance(self) -> dict:
        """What the run was: command, config, overrides, data, artifacts, versions, times."""
        return report.provenance(self)

    def write_provenance(self, extra: Mapping | None = None) -> Path:
        prov = {**self.provenance(), **(extra or {})}
        path = self.out / "provenance.json"
        _artifacts.atomic_write_json(path, prov)
        return path

    def run(self) -> dict:
        """Every stage in order, then figures and provenance. Returns a summary dict."""
        t0 = time.perf_counter()
        bank = self.kernel_bank()
        self.say(bank.summary())
        self.check_bank(read_rows(self.results_path, RESULT_COLUMNS))
        self.kernel_vaes()
        # before provenance.json is rewritten: it records the artifacts of the rows so far
        self.folder.check_artifacts(
            read_rows(self.results_path, RESULT_COLUMNS), self.artifact_hashes(vaes=True)
        )
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
