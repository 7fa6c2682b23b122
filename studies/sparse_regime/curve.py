"""One source net trained with the authors' recipe, measured after every epoch: how many of its
kernel slices are *live* (L2 norm at or above the bank's pruning threshold,
``SourceNetsConfig.prune_norms``: the rule :func:`dwp_lib.kernel_bank.build_kernel_bank` cuts
with) and how large they are, against Adam steps.

:func:`run_curve` trains net 0 of :func:`source_config` through
:func:`dwp_lib.source_nets.train_one_net`, whose ``on_epoch`` hook measures the net and whose
``checkpoint`` (in the cache, one per out folder) lets the same command resume to the same bits.
Each epoch adds a row (:data:`COLUMNS`) to ``curve.csv`` (the file is rewritten atomically);
``provenance.json`` holds the settings a folder was written with (a folder of other settings is
refused), the config, the data's provenance and one record per run (command, CPU, versions,
git commit).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import hashlib
import io
import json
import shlex
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from dwp_lib import artifacts
from dwp_lib import config as _config
from dwp_lib.experiment.names import ExperimentError
from dwp_lib.nets import LAYERS, FConv, accuracy
from dwp_lib.progress import progress
from dwp_lib.source_nets import (
    SourceData,
    SourceNetsConfig,
    checkpoint_epochs,
    delete_checkpoint,
    load_source_data,
    train_one_net,
)

CURVE = "curve.csv"
PROVENANCE = "provenance.json"
#: the net of the recipe this study follows (net ``i`` is seeded with ``seed + i``)
NET = 0
#: per conv layer: share and count of live slices, median norm of the live ones and of all
LAYER_COLUMNS = ("live_fraction", "live", "live_median_norm", "median_norm")
COLUMNS = (
    "epoch",  # epochs done (1 after the first)
    "step",  # Adam steps done
    "train_loss",  # mean cross-entropy over the epoch's mini-batches (the data term)
    "test_accuracy",  # on the held-out letters
    *(f"{layer}_{c}" for layer in LAYERS for c in LAYER_COLUMNS),
    "seconds",  # wall seconds of training so far, over every run, measurements left out
)
ROOT = Path(__file__).resolve().parents[2]


def source_config(
    widths: Sequence[int] = (256, 512),
    epochs: int = 100,
    notmnist: str = "sample",
    threads: int | None = 1,
) -> SourceNetsConfig:
    """The authors' source-net recipe (``SourceNetsConfig.paper()``: batch 256, Adam lr 1e-3
    decayed linearly to 0 over all epochs, 1e-3 x the conv parameters' sum of squares) for one
    net of ``widths`` on ``notmnist``, trained in this process with ``threads`` threads."""
    return dataclasses.replace(
        SourceNetsConfig.paper(),
        n_nets=1,
        widths=tuple(widths),
        epochs=epochs,
        data_variant=notmnist,
        data_preset="book",  # the synthetic set's size (the real sets have no preset)
        workers=0,
        num_threads=threads,
    )


def settings(cfg: SourceNetsConfig) -> dict:
    """What a folder's rows depend on: the net's training, the live thresholds and the net."""
    return {**cfg.training_dict(), "prune_norms": list(cfg.prune_norms), "net": NET}


def checkpoint_path(out: Path, cfg: SourceNetsConfig) -> Path:
    """The training checkpoint of the folder ``out``: in the cache, named after its settings
    and the folder's absolute path (two folders never share one)."""
    folder = hashlib.sha256(str(out.resolve()).encode()).hexdigest()[:12]
    return artifacts.cache_dir("sparse_regime", cfg.training_key()) / f"net_{NET:03d}-{folder}.pt"


def slice_measures(net: FConv, cfg: SourceNetsConfig) -> dict[str, float | int | None]:
    """Per conv layer (:data:`LAYER_COLUMNS`): the share and count of slices whose L2 norm is at
    least the layer's threshold, the median norm of those (None if none) and of all slices."""
    out: dict[str, float | int | None] = {}
    for (layer, k), threshold in zip(LAYERS.items(), cfg.prune_norms, strict=True):
        norms = net.kernels()[layer].detach().cpu().reshape(-1, k * k).double().norm(dim=1)
        live = norms[norms >= threshold]
        out[f"{layer}_live_fraction"] = len(live) / len(norms)
        out[f"{layer}_live"] = len(live)
        out[f"{layer}_live_median_norm"] = float(live.quantile(0.5)) if len(live) else None
        out[f"{layer}_median_norm"] = float(norms.quantile(0.5))
    return out


def read_rows(out: Path) -> list[dict[str, str]]:
    """The rows of ``out/curve.csv`` (none if it does not exist), as text."""
    path = out / CURVE
    if not path.exists():
        return []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ExperimentError(
                f"{path} has the columns {reader.fieldnames}, not this study's {list(COLUMNS)}; "
                "choose another --out, or move the folder away"
            )
        return list(reader)


def write_rows(out: Path, rows: Sequence[Mapping]) -> None:
    """All ``rows`` to ``out/curve.csv`` at once (a killed run leaves the old file or the new)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if r.get(k) is None else r[k] for k in COLUMNS} for r in rows)
    artifacts.atomic_write_bytes(out / CURVE, buf.getvalue().encode())


def git_commit() -> dict:
    """The checkout's commit and whether tracked files differ from it (None outside git)."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True
        )
        return done.stdout.strip()

    try:
        return {
            "commit": git("rev-parse", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "-uno")),
        }
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def check_folder(out: Path, cfg: SourceNetsConfig) -> dict | None:
    """The folder's provenance if it was written with ``cfg``'s settings (None: a new folder);
    a folder of other settings, or with rows and no record of them, is refused."""
    path = out / PROVENANCE
    if not path.exists():
        if (out / CURVE).exists():
            raise ExperimentError(
                f"{out} holds {CURVE} but no {PROVENANCE}, so the settings of its rows are "
                "unknown; restore the file, or choose another --out"
            )
        return None
    try:
        prov = json.loads(path.read_text())
        theirs = prov["settings"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ExperimentError(
            f"{path} is damaged ({err!r}); restore it, or choose another --out"
        ) from None
    mine = settings(cfg)
    if theirs != mine:
        diff = ", ".join(
            f"{k} {theirs.get(k)!r} there, {mine.get(k)!r} here"
            for k in sorted(set(theirs) | set(mine))
            if theirs.get(k) != mine.get(k)
        )
        raise ExperimentError(
            f"{out} was written with other settings ({diff}); choose another --out, or rerun "
            "with the folder's settings to resume it"
        )
    return prov


def run_curve(
    out: str | Path,
    cfg: SourceNetsConfig,
    command: str = "",
    data: SourceData | None = None,
    show_progress: bool = True,
) -> list[dict[str, str]]:
    """Train net 0 of ``cfg`` and write a row per epoch to ``out/curve.csv``, resuming a folder
    written before with the same settings (its rows are kept, none is written twice); returns
    every row. ``data``: the source data (default: :func:`load_source_data` of ``cfg``)."""
    out = Path(out)
    prov = check_folder(out, cfg)
    rows = read_rows(out)
    if len(rows) >= cfg.epochs:
        print(f"{out / CURVE}: all {cfg.epochs} epochs are there; nothing to train")
        return rows
    data = data if data is not None else load_source_data(cfg)
    ckpt = checkpoint_path(out, cfg)
    done = checkpoint_epochs(ckpt)
    if done > len(rows):  # the rows of some trained epochs are gone: train them again
        print(
            f"{artifacts.shown(ckpt)} is {done} epochs in, {out / CURVE} has {len(rows)} "
            "rows: training from the start again"
        )
        delete_checkpoint(ckpt)
        done = 0
    run = {
        "command": command,
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "rows_before": len(rows),
        "from_epoch": done,  # the checkpoint's epochs (a row may be there already)
        "threads": cfg.num_threads,
        "git": git_commit(),
        "environment": artifacts.environment_record(),  # versions, CPU, device
    }
    prov = {
        "question": "how long must a source net train with the authors' recipe to reach the "
        "sparse regime of their released banks?",
        "settings": settings(cfg),
        "config": _config.to_dict(cfg),
        "data": data.provenance,
        "checkpoint": artifacts.shown(ckpt),
        "columns": list(COLUMNS),
        "runs": [*(prov or {}).get("runs", []), run],
    }
    out.mkdir(parents=True, exist_ok=True)
    artifacts.atomic_write_json(out / PROVENANCE, prov)

    quiet = {} if show_progress else {"disable": True}  # else DWP_PROGRESS decides
    bar = progress(total=cfg.epochs, initial=len(rows), desc="epochs", unit="epoch", **quiet)
    clock = {"seconds": float(rows[-1]["seconds"]) if rows else 0.0, "mark": time.perf_counter()}

    def on_epoch(epoch: int, step: int, net: FConv, train_loss: float) -> None:
        clock["seconds"] += time.perf_counter() - clock["mark"]
        if epoch < len(rows) and rows[epoch]["step"] != str(step):
            raise ExperimentError(
                f"{out / CURVE}: epoch {epoch + 1} ended at step {rows[epoch]['step']} there, at "
                f"{step} now: the data differ from the folder's; choose another --out"
            )
        if epoch >= len(rows):  # a resumed run retrains at most the epoch after its checkpoint
            row = {"epoch": epoch + 1, "step": step, "train_loss": train_loss}
            row["test_accuracy"] = accuracy(net, data.x_test, data.y_test, cfg.eval_batch_size)
            row |= slice_measures(net, cfg) | {"seconds": round(clock["seconds"], 3)}
            rows.append({k: "" if v is None else str(v) for k, v in row.items()})
            write_rows(out, rows)
            bar.update()
            live = {layer: float(row[f"{layer}_live_fraction"]) for layer in LAYERS}
            bar.set_postfix(live=" ".join(f"{v:.1%}" for v in live.values()))
        clock["mark"] = time.perf_counter()

    try:
        train_one_net(cfg, NET, data, None, show_progress, on_epoch=on_epoch, checkpoint=ckpt)
    finally:
        bar.close()
    return rows


def cli(args) -> int:
    """``python -m studies.sparse_regime curve``."""
    cfg = source_config(args.widths, args.epochs, args.notmnist, args.threads)
    command = "python -m studies.sparse_regime " + shlex.join(args.argv)
    rows = run_curve(args.out, cfg, command)
    last = rows[-1]
    live = ", ".join(f"{layer} {float(last[f'{layer}_live_fraction']):.2%}" for layer in LAYERS)
    print(f"{args.out}/{CURVE}: {len(rows)} epochs, {last['step']} steps; live slices {live}")
    return 0
