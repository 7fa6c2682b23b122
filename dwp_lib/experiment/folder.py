"""A run folder's checks and lock: :class:`RunFolder` refuses other settings, rows of another key or
from other artifacts, and a second writer; rows keyed before a field was added are re-keyed."""

from __future__ import annotations

import contextlib
import json
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path

from .. import artifacts as _artifacts
from .config import (
    EXTENDABLE,
    ExperimentConfig,
    config_differences,
    drop_paths,
    key_of,
    with_added_fields,
)
from .names import ExperimentError, uses_pipeline
from .results import RESULT_COLUMNS, read_provenance, read_rows, rewrite_rows


class RunFolder:
    """The checks and the lock of one run folder ``out``."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.results_path, self.curves_path = self.out / "results.csv", self.out / "init_curves.csv"
        self.accepted_keys: set[str] = set()
        self.key = ""

    def check_settings(self, cfg: ExperimentConfig) -> set[str]:
        """Refuse other settings than the folder's; write config.json; the keys rows may carry."""
        path = self.out / "config.json"
        now = cfg.to_dict()
        self.accepted_keys = {cfg.key()}
        self.key = cfg.key()
        earlier = self.key  # the key this folder's config.json gives (before any re-key)
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
            earlier = key_of(before)
            # a setting added since that run, at its preset value, is the old behaviour
            preset = ExperimentConfig.preset_config(cfg.from_preset).to_dict()
            before = with_added_fields(before, now, preset)
            diff = config_differences(drop_paths(before, EXTENDABLE), drop_paths(now, EXTENDABLE))
            if diff:
                raise ExperimentError(
                    f"{self.out} holds a run with other settings ({'; '.join(diff[:6])}"
                    f"{'...' if len(diff) > 6 else ''}); use a new --out folder for these "
                    "settings (only sizes, methods, seeds and inits may change in one folder)"
                )
            if earlier != self.key:
                self.rekey_rows(earlier)
        self.check_row_keys(read_rows(self.results_path, RESULT_COLUMNS))
        self.check_provenance_key(earlier)
        _artifacts.atomic_write_json(path, now)
        return self.accepted_keys

    def rekey_rows(self, earlier: str) -> None:
        """Rewrite the rows keyed ``earlier`` (the same settings) with this run's key."""
        if not any(str(r.get("config_key")) == earlier for r in read_rows(self.results_path)):
            return
        with self.writing():
            rows = read_rows(self.results_path, RESULT_COLUMNS, repair=True)
            mine = [r for r in rows if str(r.get("config_key")) == earlier]
            for r in mine:
                r["config_key"] = self.key
            rewrite_rows(self.results_path, rows, RESULT_COLUMNS)
        print(
            f"{self.results_path}: {len(mine)} row(s) re-keyed from config key {earlier} to "
            f"{self.key}: the same settings, keyed before the library gained a field"
        )

    def check_provenance_key(self, earlier: str) -> None:
        """Refuse a provenance.json of other settings than config.json (curves carry no key)."""
        prov = read_provenance(self.out)
        config = prov.get("config") if prov is not None else None
        if not isinstance(config, dict):  # no record yet (or one older than the field)
            return
        if (theirs := key_of(config)) not in (self.key, earlier):
            raise ExperimentError(
                f"{self.out / 'provenance.json'} records a run of other settings (config key "
                f"{theirs}; this run's is {self.key}): the folder's config.json was replaced. "
                "Restore that run's config.json, or use a new --out folder"
            )

    def check_artifacts(self, rows: Sequence[Mapping], mine: Mapping[str, str]) -> None:
        """Refuse rows from other artifacts than the rows here (the rows of methods that use
        this pipeline's bank or VAEs); ``mine``: the 12-digit SHA-256 of the bank (``"bank"``) and
        of each kernel VAE now in use."""
        theirs: dict[str, set[str]] = {}
        for r in rows:
            if not uses_pipeline(f"{r['prior']}:{r['init']}"):
                continue  # the released files, N(0, 1), Xavier: no bank or VAE of ours
            if r.get("bank_sha256"):
                theirs.setdefault("bank", set()).add(str(r["bank_sha256"]))
            for part in str(r.get("vae_sha256") or "").split("/"):
                layer, _, sha = part.partition("=")
                if sha and layer in mine:
                    theirs.setdefault(layer, set()).add(sha)
        prov = read_provenance(self.out) or {}
        if read_rows(self.curves_path):  # curves carry no hashes
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

    def check_row_keys(self, rows: Sequence[Mapping]) -> None:
        """Refuse rows that another config made (their ``config_key`` is not this run's)."""
        if bad := sorted({str(r.get("config_key")) for r in rows} - self.accepted_keys):
            n = sum(str(r.get("config_key")) in bad for r in rows)
            raise ExperimentError(
                f"{self.results_path} holds {n} row(s) made with other settings (config_key "
                f"{', '.join(bad)}; this run's is {self.key}): its config.json was replaced "
                "or deleted. Use a new --out folder, or restore that run's config.json"
            )

    @contextlib.contextmanager
    def writing(self):
        """Hold the run folder's lock while rows are appended; a second writer is refused."""
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
