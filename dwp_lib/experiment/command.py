"""The command line: ``python -m dwp_lib reproduce --preset P --out DIR [--set PATH=VALUE ...]``."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from .. import __version__
from . import stages
from .config import ExperimentConfig, config_differences
from .names import ExperimentError
from .overrides import config_from, with_notmnist
from .results import results_table
from .runner import Experiment
from .stages import DEVICE_COUNTS, quick_estimate, stage_work, wall_on_devices

#: a run that asks for more than this many times its preset's work is timed before it starts
FAR_BEYOND = 10.0
#: a run estimated at more than this is refused unless ``long_run=true`` (a year)
LONG_RUN_SECONDS = 365.25 * 24 * 3600


def _device_counts(text: str | None) -> tuple[int, ...]:
    if not text:
        return DEVICE_COUNTS
    try:
        counts = tuple(int(k) for k in text.split(","))
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise ExperimentError(f"--devices {text!r}: give device counts >= 1, e.g. 1,2,4,8")
    return counts


def wall_from_saved_estimate(
    path: str | os.PathLike, cfg: ExperimentConfig, devices: Sequence[int] = DEVICE_COUNTS
) -> dict:
    """A printed ``reproduce --estimate`` of ``cfg``, its wall times recomputed for ``devices``."""
    if not Path(path).exists():
        raise ExperimentError(f"--estimate-from {path}: no such file")
    try:  # the JSON object that opens the printed estimate (a sentence may follow it)
        est, _ = json.JSONDecoder().raw_decode(Path(path).read_text().lstrip())
        steps = est["grid_step_seconds"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ExperimentError(
            f"--estimate-from {path}: not the output of reproduce --estimate (it opens with a "
            "JSON object holding grid_step_seconds)"
        ) from None
    g = cfg.grid
    missing = [f"{m} n={n}" for m in g.methods for n in g.sizes if str(n) not in steps.get(m, {})]
    if missing or est.get("grid_cells") != len(g.methods) * len(g.sizes) * len(g.split_seeds):
        raise ExperimentError(
            f"--estimate-from {path} was made for another grid ({est.get('grid_cells')} cells; "
            f"no step time for {', '.join(missing[:3]) or 'the same cells'}): pass the preset "
            "and settings it was made with"
        )
    cells = stages.grid_cell_seconds(steps, cfg)
    net = est["source_seconds"] / cfg.source.n_nets
    est["source_net_seconds"] = net
    est["wall_seconds_on"] = {
        str(k): wall_on_devices(net, cfg.source.n_nets, cells, k, cfg.executor, est["device"])
        for k in devices
    }
    est["estimate_from"] = str(path)
    return est


def wall_table(est: dict) -> str:
    """The ``wall_seconds_on`` part of :func:`estimate_cost` as lines of text, in hours."""
    on_gpu = est["device"] != "cpu"
    what = "GPUs" if on_gpu else f"processes of {est['threads']} thread(s)"
    lines = [
        f"Wall time on K {what} like this one ({est['device']}), e.g. as Ray tasks "
        "(executor.kind=ray), units scheduled longest first:",
        "    K  source nets  grid, 1 cell/device  grid, shared  total",
    ]
    for k, w in est["wall_seconds_on"].items():
        shared = f"{w['grid_seconds_shared'] / 3600:8.2f} h" if on_gpu else "       -  "
        lines.append(
            f"  {int(k):3d}  {w['source_seconds'] / 3600:9.2f} h  {w['grid_seconds'] / 3600:17.2f} h"
            f"  {shared}  {w['total_seconds'] / 3600:5.2f} h"
        )
    if on_gpu:
        lines.append(
            "  shared: cells_at_once cells per K GPUs (executor.gpus_per_cell), if cells sharing "
            "a GPU do not slow each other; kernel VAEs and evaluation not counted"
        )
    return "\n".join(lines)


def human_time(seconds: float) -> str:
    """``seconds`` in the unit that reads best: 40 s, 12 min, 5.3 h, 3.2 days."""
    for unit, size in (("years", 365.25 * 86400), ("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            n = seconds / size
            return f"{n:.3g} {unit}" if n < 1e6 else f"{n:.2e} {unit}"
    return f"{seconds:.0f} s"


def check_run_time(cfg: ExperimentConfig, device=None) -> str | None:
    """``None``, or a note with a quick estimate when a stage asks for far more work than its
    preset's; raises when that is over a year and ``long_run`` is not set."""
    preset = ExperimentConfig.preset(cfg.from_preset)
    base, work = stage_work(preset), stage_work(cfg)
    far = {k: w / base[k] for k, w in work.items() if k in base and w > FAR_BEYOND * base[k]}
    if not far:
        return None
    est = quick_estimate(cfg, device)
    total = sum(est["seconds"].values())
    parts = ", ".join(f"{k} {human_time(v)}" for k, v in est["seconds"].items() if v >= 1)
    changed = [d for d in config_differences(preset.to_dict(), cfg.to_dict()) if d[:5] != "name:"]
    what = ", ".join(f"{k}: {r:.3g} times" for k, r in far.items())
    note = (
        f"These settings ask for far more work than the {cfg.from_preset} preset ({what}; "
        f"settings changed: {'; '.join(changed[:4])}{' ...' if len(changed) > 4 else ''}). "
        f"Estimated on this machine ({est['device']}, {est['threads']} thread(s)): about "
        f"{human_time(total)} ({parts or 'under a second a stage'}), from one timed step "
        "per stage (reproduce --estimate times it more closely)."
    )
    if total > LONG_RUN_SECONDS and not cfg.long_run:
        raise ExperimentError(
            f"{note} That is more than a year: not started. Lower the settings above, or add "
            "--set long_run=true to run it anyway"
        )
    return f"note: {note}"


def cli(args: argparse.Namespace) -> int:
    """``python -m dwp_lib reproduce``: run (or resume) the pipeline into ``--out``."""
    config_file = getattr(args, "config", None)
    try:
        overrides = with_notmnist(getattr(args, "notmnist", None), getattr(args, "set", None) or [])
        cfg = config_from(args.preset, config_file, overrides, getattr(args, "name", None))
    except (ExperimentError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if getattr(args, "print_config", False):
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    if getattr(args, "estimate", False):
        counts = _device_counts(getattr(args, "devices", None))
        if saved := getattr(args, "estimate_from", None):
            est = wall_from_saved_estimate(saved, cfg, counts)
        else:
            est = stages.estimate_cost(cfg, devices=counts)
        print(json.dumps(est, indent=2))
        print(
            f"About {est['source_seconds'] / 3600:.1f} h for the source nets and "
            f"{est['grid_seconds'] / 3600:.1f} h for the {est['grid_cells']} grid cells on "
            f"{est['device']} with {est['threads']} thread(s) (kernel VAEs, the init experiment "
            "and evaluation not included)"
        )
        print(wall_table(est))
        return 0
    if not args.out:
        print("error: reproduce needs --out DIR (the run's folder)", file=sys.stderr)
        return 2
    command = "python -m dwp_lib " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    # the library's errors below are printed by the command line's one boundary (run_guarded)
    if note := check_run_time(cfg):
        print(note, flush=True)
    exp = Experiment(cfg, args.out, command=command, overrides=overrides, config_file=config_file)
    print(f"Experiment {cfg.name!r} (preset {cfg.from_preset}, dwp_lib {__version__}) -> {exp.out}")
    out = exp.run()
    if rows := out["rows"]:
        print(results_table(rows))
    print(f"Results: {exp.results_path}\nProvenance: {out['provenance']}")
    return 0
