"""The source stage: the nets (here, in workers or as Ray tasks) and their bank, cached."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch

from .. import artifacts as _artifacts
from .. import source_nets
from ..device import default_device, exit_with_parent
from ..kernel_bank import KernelBank, build_kernel_bank
from ..progress import progress
from ..source_nets import NET_FILE, SourceData, SourceNetsConfig, load_source_data, read_net_record
from .executor import ExecutorConfig, run_on_ray


def resolve_workers(cfg: SourceNetsConfig, device: torch.device, n_todo: int) -> int:
    """How many worker processes train nets (0: this process does, one net after the other)."""
    if device.type != "cpu" or n_todo < 2:
        return 0
    if cfg.workers is not None:
        return min(cfg.workers, n_todo)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return min(cores, n_todo) if cores > 1 else 0


_WORKER_DATA: SourceData | None = None


def _init_worker(data: SourceData, threads: int) -> None:
    global _WORKER_DATA
    exit_with_parent()  # a killed run leaves no worker training on
    torch.set_num_threads(threads)
    _WORKER_DATA = data


def _worker_task(cfg: SourceNetsConfig, index: int, out: str) -> dict:
    return source_nets.train_and_save_net(cfg, index, _WORKER_DATA, torch.device("cpu"), Path(out))


def _ray_train_net(data: SourceData, cfg: SourceNetsConfig, index: int, threads: int):
    """One source net as a Ray task, returned to the caller, which saves it."""
    torch.set_num_threads(threads)
    net, record = source_nets.train_one_net(cfg, index, data, default_device(), show_progress=False)
    return {"state_dict": net.state_dict(), "widths": cfg.widths}, record


def train_source_nets(
    cfg: SourceNetsConfig,
    out_dir: str | Path | None = None,
    device: torch.device | str | None = None,
    *,
    data: SourceData | None = None,
    max_new: int | None = None,
    on_net_done: Callable[[dict], None] | None = None,
    executor: ExecutorConfig | None = None,
) -> list[dict]:
    """Train (or resume) the source nets into ``out_dir``: their records by index. ``max_new``:
    stop after that many new nets; ``data`` replaces notMNIST."""
    device = torch.device(device) if device is not None else default_device()
    out = Path(out_dir) if out_dir is not None else cfg.default_dir()
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    todo = []
    for i in range(cfg.n_nets):
        path = out / NET_FILE.format(i)
        if path.exists():
            records.append(dict(read_net_record(path, cfg), path=str(path), resumed=True))
        else:
            todo.append(i)
    if max_new is not None:
        todo = todo[:max_new]
    if todo and data is None:
        data = load_source_data(cfg)
    on_ray = executor is not None and executor.kind == "ray"
    workers = 0 if on_ray else resolve_workers(cfg, device, len(todo))

    where = "as Ray tasks" if on_ray else f"{workers or 1} at a time"
    bar = progress(total=len(todo), desc=f"source nets ({where})", position=0)

    def done(record: dict) -> None:
        records.append(record)
        if on_net_done is not None:
            on_net_done(record)
        bar.update()

    if on_ray:
        threads = cfg.num_threads or executor.threads
        calls = [(cfg, i, threads) for i in todo]
        for state, record in run_on_ray(executor, _ray_train_net, data, calls, unit="net"):
            path = out / NET_FILE.format(record["index"])
            _artifacts.save_artifact(path, state, source_nets.net_provenance(cfg, record, data))
            done(dict(record, path=str(path), resumed=False))
    elif workers == 0:
        for i in todo:
            done(source_nets.train_and_save_net(cfg, i, data, device, out))
    else:
        # spawn, not fork: a forked child of a process that already ran OpenMP threads can hang
        ctx = multiprocessing.get_context("spawn")
        threads = cfg.num_threads or 1
        with ProcessPoolExecutor(workers, ctx, _init_worker, (data, threads)) as pool:
            futures = [pool.submit(_worker_task, cfg, i, str(out)) for i in todo]
            try:
                for fut in as_completed(futures):
                    done(fut.result())
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise
    bar.close()
    return sorted(records, key=lambda r: r["index"])


def _bank_matches(bank_path: Path, cfg: SourceNetsConfig) -> bool:
    try:
        rec = _artifacts.read_record(bank_path)
    except _artifacts.ArtifactError:
        return False
    made_with = rec.get("provenance", {}).get("config")
    if not isinstance(made_with, dict):
        return False
    try:  # the settings that change the bank; workers and threads do not
        return SourceNetsConfig(**made_with).bank_dict() == cfg.bank_dict()
    except (TypeError, ValueError):
        return False


def get_kernel_bank(
    cfg: SourceNetsConfig,
    out_dir: str | Path | None = None,
    device: torch.device | str | None = None,
    *,
    data: SourceData | None = None,
    verbose: bool = True,
    executor: ExecutorConfig | None = None,
) -> KernelBank:
    """The bank of ``cfg``, loaded or made (nets trained, bank cut and saved); says which."""
    out = Path(out_dir) if out_dir is not None else cfg.default_dir()
    path = out / cfg.bank_file()
    if path.exists() and _bank_matches(path, cfg):
        bank = KernelBank.load(path)  # a corrupted file raises here
        if verbose:
            print(
                f"Loaded the kernel bank from {_artifacts.shown(path)} "
                f"(sha256 {bank.provenance['sha256'][:12]}...)"
            )
        return bank
    t0 = time.perf_counter()
    records = train_source_nets(cfg, out, device, data=data, executor=executor)
    trained = sum(not r["resumed"] for r in records)
    bank = build_kernel_bank(out, cfg)
    bank.provenance["seconds_training_this_run"] = time.perf_counter() - t0
    bank.save(path)
    if verbose:
        print(
            f"Trained {trained} source net(s) ({len(records) - trained} found in "
            f"{_artifacts.shown(out)}) "
            f"in {time.perf_counter() - t0:.0f} s; saved the kernel bank to {_artifacts.shown(path)}"
        )
    return bank


def cli(args) -> int:
    """``python -m dwp_lib source-nets``: train, cut, save, summarise."""
    from ..data import DataUnavailableError

    cfg = SourceNetsConfig.preset(args.preset)
    if getattr(args, "notmnist", None):
        cfg = dataclasses.replace(cfg, data_variant=args.notmnist)
    out = Path(args.out) if getattr(args, "out", None) else cfg.default_dir()
    t0 = time.perf_counter()
    try:
        bank = get_kernel_bank(cfg, out)
    except (DataUnavailableError, _artifacts.ArtifactError) as err:  # they say what to do
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(bank.summary())
    print(f"Folder: {out}  ({time.perf_counter() - t0:.0f} s)")
    return 0
