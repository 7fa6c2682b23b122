"""One grid cell: the same function here, in a worker process, or as a Ray task."""

from __future__ import annotations

import dataclasses
import io
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import artifacts, bayes
from ..device import default_device
from ..inits import initialise
from ..kernel_bank import KernelBank
from ..kernel_vae import KernelVAE
from .config import ExperimentConfig
from .methods import make_init, make_priors
from .names import ExperimentError, parse_method, vae_sources
from .stages import mean_log_var


@dataclass
class CellContext:
    """Everything a grid cell reads besides its ``(method, n, seed)``; no paths."""

    cfg: ExperimentConfig
    train: Any
    test_xy: tuple[torch.Tensor, torch.Tensor] | None
    bank: KernelBank
    vaes: dict[str, KernelVAE] | None
    released: dict[str, KernelVAE] | None
    bank_sha256: str
    vae_sha256: dict[str, list[str]]


def cell_network(cfg: ExperimentConfig, prior: str, n: int) -> tuple[torch.nn.Module, Any]:
    """The untrained network of a cell of ``prior`` at size ``n``, and its Bayes config."""
    bc = dataclasses.replace(cfg.bayes, steps=cfg.grid.steps_for(n, cfg.bayes.steps))
    if prior == "det":
        return bayes.det_cnn(bc), bc
    return bayes.BayesianCNN(bc, alpha_parametrised=prior == "log-uniform"), bc


def run_grid_cell(
    ctx: CellContext, method: str, n: int, seed: int, device: torch.device | None = None
) -> dict:
    """Train and evaluate one network of ``method`` on subset ``(n, seed)``: a results row."""
    from ..data import balanced_subset

    device = torch.device(device) if device is not None else default_device()
    prior, init_name = parse_method(method)
    sub = balanced_subset(ctx.train, n, seed)
    x, y = sub.float_images(), sub.labels
    xt, yt = ctx.test_xy
    init = make_init(init_name, ctx.bank, ctx.vaes, ctx.released)
    t0 = time.perf_counter()
    model, bc = cell_network(ctx.cfg, prior, n)
    initialise(model, init, seed)
    if prior == "det":
        hist = bayes.train_det_cnn(model, x, y, bc, seed, device)
    else:
        priors = make_priors(prior, ctx.vaes, bc, ctx.released)
        hist = bayes.train_bayesian_cnn(model, priors, x, y, bc, seed, device)
    torch.manual_seed(seed)  # the evaluation's weight samples
    samples = bc.eval_samples if prior != "det" else 1
    acc_ens = bayes.ensemble_accuracy(model, xt, yt, samples, bc.eval_batch_size)
    acc_mean = bayes.mean_accuracy(model, xt, yt, bc.eval_batch_size)
    train_acc = bayes.mean_accuracy(model, x, y, bc.eval_batch_size)
    seconds = time.perf_counter() - t0
    tail = max(1, len(hist.loss) // 10)
    used = vae_sources(method)
    vae_sha = [h for k in ("trained", "released") if k in used for h in ctx.vae_sha256[k]]
    row = {
        "experiment": ctx.cfg.name,
        "prior": prior,
        "init": init_name,
        "n": n,
        "seed": seed,
        "acc_ensemble": round(acc_ens, 6),
        "acc_mean": round(acc_mean, 6),
        "train_acc": round(train_acc, 6),
        "loss": round(statistics.fmean(hist.loss[-tail:]), 6),
        "nll": round(statistics.fmean(hist.nll[-tail:]), 6),
        # the regulariser: the KL (bound) of a Bayesian CNN, the L2 sum of the det baseline
        "kl": round(statistics.fmean(hist.terms.get("kl", hist.terms.get("l2"))[-tail:]), 6),
        "log_sigma2_conv1": mean_log_var(model, "conv1"),
        "log_sigma2_conv2": mean_log_var(model, "conv2"),
        **{k: getattr(bc, k) for k in ("steps", "lr", "log_sigma2_init", "kl_weight")},
        "channels": "x".join(str(c) for c in bc.channels),
        **{k: getattr(bc, k) for k in ("dwp_slices_per_step", "dwp_train_reverse")},
        "eval_samples": samples,
        "test_images": len(yt),
        "seconds": round(seconds, 3),
        "device": str(device),
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "config_key": ctx.cfg.key(),
        "bank_sha256": ctx.bank_sha256,
        "vae_sha256": "/".join(vae_sha),
    }
    if ctx.cfg.grid.save_models:  # the runner writes it to the run folder and drops it
        row[MODEL_KEY] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return row


MODEL_KEY = "_state_dict"  # a row's trained network, while it travels to the runner


def cell_model_path(out: str | os.PathLike, prior: str, init: str, n: int, seed: int) -> Path:
    """Where a run folder keeps the trained network of one cell (``grid.save_models``)."""
    return Path(out) / "models" / f"{prior.replace('/', '+')}--{init}--n{n}--seed{seed}.pt"


def save_cell_model(out: str | os.PathLike, row: dict, state: dict, cfg: ExperimentConfig) -> Path:
    """Write a cell's trained network with its row, cell and config (atomically)."""
    n, seed = int(row["n"]), int(row["seed"])
    path = cell_model_path(out, row["prior"], row["init"], n, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    saved = {
        "cell": {"method": f"{row['prior']}:{row['init']}", "n": n, "seed": seed},
        "config_key": cfg.key(),
        "state_dict": state,
        "row": dict(row),
        "config": cfg.to_dict(),
    }
    buf = io.BytesIO()  # torch writing to a full disk fails with its own error: bytes first
    torch.save(saved, buf)
    artifacts.atomic_write_bytes(path, buf.getvalue())
    return path


def load_cell_model(
    cfg: ExperimentConfig, out: str | os.PathLike, method: str, n: int, seed: int
) -> tuple[torch.nn.Module, dict]:
    """The trained network and the row of cell ``(method, n, seed)`` of the run in ``out``."""
    prior, init = parse_method(method)
    path = cell_model_path(out, prior, init, n, seed)
    redo = (
        f"delete it and its row in {Path(out) / 'results.csv'}, then rerun the run's command "
        "with --set grid.save_models=true (that cell alone is trained again)"
    )
    if not path.exists():
        raise ExperimentError(
            f"no saved network of {method}, n = {n}, split seed {seed} at {path}: run the grid "
            "with --set grid.save_models=true (cells already in results.csv are not rerun; "
            "use a new --out folder)"
        )
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        row = saved["row"]
        cell = saved.get("cell") or {  # files written before the cell was recorded
            "method": f"{row['prior']}:{row['init']}",
            "n": row["n"],
            "seed": row["seed"],
        }
        key = saved.get("config_key", row["config_key"])
        state = saved["state_dict"]
        theirs = (*parse_method(str(cell["method"])), int(cell["n"]), int(cell["seed"]))
    except Exception as err:  # noqa: BLE001  (a damaged file raises zip, pickle or key errors)
        raise ExperimentError(
            f"{path} is damaged or not a saved cell network ({type(err).__name__}: "
            f"{str(err)[:120]}); {redo}"
        ) from None
    if theirs != (prior, init, n, seed):
        raise ExperimentError(
            f"{path} holds the network of {cell['method']}, n = {cell['n']}, split seed "
            f"{cell['seed']}, not of {prior}:{init}, n = {n}, split seed {seed} (a file copied "
            f"or renamed over it); {redo}"
        )
    if key != cfg.key():
        raise ExperimentError(
            f"{path} was trained under config key {key}, not this config's {cfg.key()}: pass "
            "the run's own config (its config.json, or the file itself: "
            "torch.load(path)['config'])"
        )
    model, _ = cell_network(cfg, prior, n)
    model.load_state_dict(state)
    return model, row


def ray_grid_cell(ctx: CellContext, method: str, n: int, seed: int, threads: int) -> dict:
    """One grid cell as a Ray task, with ``threads`` torch threads."""
    torch.set_num_threads(threads)
    return run_grid_cell(ctx, method, n, seed)
