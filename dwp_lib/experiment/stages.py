"""Pieces of the stages as functions: the init experiment, its costs, what a run would take."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..bayes import BayesConfig, BayesianCNN, det_cnn, negative_elbo
from ..device import default_device, seed_everything
from ..inits import DWPInit, FiltersInit, initialise
from ..kernel_bank import KernelBank
from ..kernel_layers import KernelVAEConfig
from ..kernel_vae import KernelVAE, nats_above_baseline, train_kernel_vae
from ..nets import LAYERS, FConv, accuracy, conv_l2, fconv_macs
from ..source_nets import memory_format, training_step
from ..train import fit, take_step
from .config import ExperimentConfig, InitExperimentConfig, LayerVAEConfig
from .executor import ExecutorConfig
from .methods import make_init, make_priors
from .names import parse_method


def test_subset(x: torch.Tensor, y: torch.Tensor, k: int | None, seed: int):
    """A seeded random subset of ``k`` test images (all of them for ``None``)."""
    if k is None or k >= len(y):
        return x, y
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(y), generator=g)[:k].sort().values
    return x[idx], y[idx]


def train_plain_cnn_curve(
    init_name: str,
    seed: int,
    cfg: InitExperimentConfig,
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    bank: KernelBank | None,
    vaes: Mapping[str, KernelVAE] | None,
    device: torch.device,
    released: Mapping[str, KernelVAE] | None = None,
) -> list[dict]:
    """Rows ``{init, seed, step, test_acc, train_loss, seconds}`` of a plain FConv from one init."""
    x, y, xt, yt = data
    seed_everything(seed)
    net = FConv(*cfg.channels)
    initialise(net, make_init(init_name, bank, vaes, released), seed)
    net.to(device)
    order = torch.Generator().manual_seed(10_000 + seed)
    rows = [dict(init=init_name, seed=seed, step=0, test_acc=accuracy(net, xt, yt))]
    rows[0].update(train_loss=None, seconds=0.0)
    losses: list[float] = []
    t0 = time.perf_counter()

    def loss_at(step: int) -> torch.Tensor:
        idx = torch.randint(len(y), (cfg.batch_size,), generator=order)
        return F.cross_entropy(net(x[idx].to(device)), y[idx].to(device))

    def after_step(step: int, loss: float) -> None:
        losses.append(loss)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            acc, loss = accuracy(net, xt, yt), statistics.fmean(losses[-cfg.eval_every :])
            rows.append(dict(init=init_name, seed=seed, step=step, test_acc=acc, train_loss=loss))
            rows[-1]["seconds"] = time.perf_counter() - t0

    what = f"init experiment ({init_name})"
    fit(net.parameters(), loss_at, cfg.steps, cfg.lr, what, after_step=after_step, first_step=1)
    return rows


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def fit_layer_vae(
    lc: LayerVAEConfig, slices: torch.Tensor, test: torch.Tensor, device: torch.device
) -> tuple[KernelVAE, dict]:
    """A kernel VAE of ``lc`` fitted to ``slices`` and scored on ``test``; its training record."""
    seed_everything(lc.seed)  # the initial weights too: a retrain gives the same VAE
    vae = KernelVAE(lc.arch)
    hist = train_kernel_vae(vae, slices, lc.train, lc.seed, device)
    score = None
    if len(test):
        if lc.eval_slices is not None and len(test) > lc.eval_slices:
            g = torch.Generator().manual_seed(lc.seed)
            test = test[torch.randperm(len(test), generator=g)[: lc.eval_slices]]
        score = nats_above_baseline(
            vae, slices, test, num_samples=lc.eval_samples, seed=lc.seed
        ).as_dict()
    tail = hist.loss[-max(1, len(hist.loss) // 10) :]
    training = {
        "steps": hist.steps,
        "seconds": hist.seconds,
        "final_loss": statistics.fmean(tail),
        "train_slices": len(slices),
        "held_out": score,
        # float sums depend on the thread count: another count gives another VAE (rounding)
        "device": str(device),
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "torch": torch.__version__,
    }
    return vae, training


def init_costs(
    bank: KernelBank,
    vaes: Mapping[str, KernelVAE],
    channels: tuple[int, int],
    repeats: int = 5,
) -> dict:
    """Bytes and seconds per layer of FConv(``channels``): the dwp init vs the filters init."""
    c1, c2 = channels
    shapes = {"conv1": (c1, 1, 7, 7), "conv2": (c2, c1, 5, 5)}
    dwp, filters = DWPInit(vaes), FiltersInit(bank)
    out: dict[str, Any] = {"channels": list(channels), "layers": {}}
    for layer, shape in shapes.items():
        g = torch.Generator().manual_seed(0)
        vae_bytes = sum(p.numel() * p.element_size() for p in vaes[layer].parameters())
        bank_slices = bank.slices(layer, "train")
        out["layers"][layer] = {
            "kernels_drawn": shape[0] * shape[1],
            "vae_parameters": sum(p.numel() for p in vaes[layer].parameters()),
            "vae_bytes": vae_bytes,
            "bank_slices": len(bank_slices),
            "bank_bytes": bank_slices.numel() * bank_slices.element_size(),
            "seconds_dwp": _median_seconds(partial(dwp.conv_weight, layer, shape, g), repeats),
            "seconds_filters": _median_seconds(
                partial(filters.conv_weight, layer, shape, g), repeats
            ),
        }
    out["source_nets"] = len(bank.provenance.get("nets", []))
    return out


#: Training images of the source task, per notMNIST variant (about).
SOURCE_IMAGES = {"small": 18_724, "large": 529_114, "sample": 8_500}


def _step_seconds(step, repeats: int) -> float:
    step()  # warm-up (allocations, oneDNN kernels)
    return _median_seconds(step, repeats)


#: The device counts ``reproduce --estimate`` prints wall times for (``--devices`` sets others).
DEVICE_COUNTS = (1, 2, 4, 8)


def estimate_cost(
    cfg: ExperimentConfig,
    device: torch.device | str | None = None,
    repeats: int = 2,
    source_images: int | None = None,
    devices: Sequence[int] = DEVICE_COUNTS,
    max_probe: int | None = None,
) -> dict:
    """What running ``cfg`` would take on ``device``, from a few timed steps (grid steps at two
    sizes, linear in n), without the kernel VAEs, the init experiment and evaluation."""
    device = torch.device(device) if device is not None else default_device()
    s, b, g = cfg.source, cfg.bayes, cfg.grid
    if source_images is None:
        source_images = SOURCE_IMAGES.get(s.data_variant)
        if source_images is None:
            from ..data import load_notmnist
            from ..data.synthetic import SyntheticConfig

            cfg_syn = SyntheticConfig.preset(s.data_preset)
            source_images = len(load_notmnist("train", "synthetic", cfg_syn))
        if s.train_images is not None:
            source_images = min(source_images, s.train_images)
    fmt = memory_format(s)
    net = FConv(*s.widths).to(device, memory_format=fmt)
    opt = torch.optim.Adam(net.parameters())
    timed_batch = min(s.batch_size, 32)  # timed on 32 images, scaled to the batch (linear)
    xb = torch.rand(timed_batch, 1, 28, 28, device=device).contiguous(memory_format=fmt)
    yb = torch.arange(timed_batch, device=device) % 10
    source_step = partial(training_step, net, opt, xb, yb, s)  # the source stage's step
    per_source_step = _step_seconds(source_step, repeats) * s.batch_size / timed_batch
    source_steps = s.n_nets * s.epochs * math.ceil(source_images / s.batch_size)
    vaes = {k: KernelVAE(lc.arch).to(device) for k, lc in cfg.vae.layers().items()}
    released = {k: KernelVAE(KernelVAEConfig.authors(LAYERS[k])).to(device) for k in LAYERS}
    probe = sorted(g.sizes)[:2] if len(g.sizes) > 1 else [g.sizes[0], 2 * g.sizes[0]]
    if max_probe is not None:  # small sizes, extrapolated (the cost is about linear in n)
        probe = sorted({min(n, max_probe) for n in probe})
        probe = probe if len(probe) == 2 else [probe[0] // 2, probe[0]]
    step_seconds: dict[str, dict[int, float]] = {}
    grid_seconds = 0.0
    for method in g.methods:
        prior, _ = parse_method(method)
        measured = {}
        for n in probe:
            measured[n] = _step_seconds(_elbo_step(prior, n, b, vaes, device, released), repeats)
        (n0, t0), (n1, t1) = sorted(measured.items())
        slope = max(0.0, (t1 - t0) / (n1 - n0))
        per_n = {n: t0 + slope * (n - n0) for n in g.sizes}
        step_seconds[method] = per_n
        one_seed = sum(per_n[n] * g.steps_for(n, b.steps) for n in g.sizes)
        grid_seconds += one_seed * len(g.split_seeds)
    cell_seconds = grid_cell_seconds(step_seconds, cfg)
    net_seconds = per_source_step * source_steps / s.n_nets
    return {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "source_net_seconds": net_seconds,
        "grid_cell_seconds": {"min": min(cell_seconds), "max": max(cell_seconds)},
        "wall_seconds_on": {
            str(k): wall_on_devices(net_seconds, s.n_nets, cell_seconds, k, cfg.executor, device)
            for k in devices
        },
        "source_step_seconds": per_source_step,
        "source_steps": source_steps,
        "source_images": source_images,
        "source_seconds": per_source_step * source_steps,
        "bank_bytes_unpruned": 4 * s.n_nets * s.widths[0] * (49 + 25 * s.widths[1]),
        "grid_step_seconds": step_seconds,
        "grid_cells": len(g.methods) * len(g.sizes) * len(g.split_seeds),
        "grid_seconds": grid_seconds,
        "total_seconds": per_source_step * source_steps + grid_seconds,
    }


def grid_cell_seconds(step_seconds: Mapping, cfg: ExperimentConfig) -> list[float]:
    """The time of every grid cell of ``cfg`` from ``{method: {n: seconds per step}}``."""
    g, b = cfg.grid, cfg.bayes
    return [
        step_seconds[m][n if n in step_seconds[m] else str(n)] * g.steps_for(n, b.steps)
        for m in g.methods
        for n in g.sizes
        for _ in g.split_seeds
    ]


def wall_on_devices(
    net_seconds: float,
    n_nets: int,
    cell_seconds: Sequence[float],
    devices: int,
    executor: ExecutorConfig,
    device: torch.device | str,
) -> dict[str, float]:
    """The wall time of the source nets and the grid on ``devices`` devices like ``device``
    (``grid_seconds_shared``: cells sharing a GPU, assumed not to slow each other)."""
    from .executor import estimate_wall

    on_gpu = torch.device(device).type != "cpu"
    net_share = executor.share("net", has_gpus=True) if on_gpu else 0.0
    cell_share = executor.share("cell", has_gpus=True) if on_gpu else 0.0
    net_slots = executor.slots(devices, net_share) if net_share > 0 else devices
    cell_slots = executor.slots(devices, cell_share) if cell_share > 0 else devices
    source = estimate_wall([net_seconds] * n_nets, net_slots)
    grid = estimate_wall(list(cell_seconds), devices)
    shared = estimate_wall(list(cell_seconds), cell_slots)
    return {
        "source_seconds": source,
        "grid_seconds": grid,
        "grid_seconds_shared": shared,
        "cells_at_once": cell_slots,
        "total_seconds": source + min(grid, shared),
    }


#: fonts the default font packages gave the committed synthetic sets (a guess of its size)
SYNTHETIC_FONTS = 758


def source_images_guess(s) -> int:
    """The source nets' training images from the settings alone (nothing read or rendered)."""
    n = SOURCE_IMAGES.get(s.data_variant)
    if n is None:
        from ..data.synthetic import SyntheticConfig

        syn = SyntheticConfig.preset(s.data_preset)
        fonts = syn.max_fonts or len(syn.font_files) or SYNTHETIC_FONTS
        n = int(fonts * 10 * syn.copies * (1 - syn.test_fraction))
    return min(n, s.train_images or n)


def _vae_steps(cfg: ExperimentConfig, layer: str, lc: LayerVAEConfig) -> int:
    s = cfg.source  # the bank's training slices before pruning (an upper bound)
    slices = s.n_nets * s.widths[0] * (1 if layer == "conv1" else s.widths[1])
    return lc.train.num_steps(max(1, int(slices * (1 - s.test_fraction))))


def stage_work(cfg: ExperimentConfig) -> dict[str, float]:
    """A number proportional to each stage's compute, from the settings alone."""
    s, b, g, i = cfg.source, cfg.bayes, cfg.grid, cfg.init
    work = {"source nets": s.n_nets * s.epochs * source_images_guess(s) * fconv_macs(s.widths)}
    for layer, lc in cfg.vae.layers().items():
        size = sum(p.numel() for p in KernelVAE(lc.arch).parameters())
        work[f"kernel VAE {layer}"] = _vae_steps(cfg, layer, lc) * lc.train.batch_size * size
    if i.enabled:
        runs = len(i.inits) * len(i.seeds) * i.steps
        work["init experiment"] = runs * i.batch_size * fconv_macs(i.channels)
    if g.enabled:
        cells = len(g.methods) * len(g.split_seeds) * fconv_macs(b.channels)
        steps = sum(g.steps_for(n, b.steps) * min(n, b.batch_size or n) for n in g.sizes)
        work["prior grid"] = cells * steps
    return work


def quick_estimate(cfg: ExperimentConfig, device: torch.device | str | None = None) -> dict:
    """Seconds of each stage of :func:`stage_work` on ``device``, from one timed step each."""
    device = torch.device(device) if device is not None else default_device()
    images = source_images_guess(cfg.source)
    est = estimate_cost(cfg, device, 1, images, devices=(1,), max_probe=500)
    out = {"source nets": est["source_seconds"]}
    gen = torch.Generator().manual_seed(0)
    for layer, lc in cfg.vae.layers().items():
        vae, k, batch = KernelVAE(lc.arch).to(device), lc.arch.kernel_size, lc.train.batch_size
        w = torch.randn(min(batch, 1024), k, k, device=device)
        opt = torch.optim.Adam(vae.parameters())
        step = partial(lambda v, o, x: take_step(o, v.loss(x, gen)), vae, opt, w)
        out[f"kernel VAE {layer}"] = (
            _step_seconds(step, 1) * batch / len(w) * _vae_steps(cfg, layer, lc)
        )
    i = cfg.init
    if i.enabled:
        net = FConv(*i.channels).to(device)
        opt = torch.optim.Adam(net.parameters())
        x = torch.rand(min(i.batch_size, 1024), 1, 28, 28, device=device)
        y = torch.arange(len(x), device=device) % 10
        one = _step_seconds(lambda: take_step(opt, F.cross_entropy(net(x), y)), 1)
        out["init experiment"] = one * i.batch_size / len(x) * i.steps * len(i.inits) * len(i.seeds)
    if cfg.grid.enabled:
        out["prior grid"] = est["grid_seconds"]
    return {"device": str(device), "threads": torch.get_num_threads(), "seconds": out}


def _elbo_step(prior: str, n: int, b: BayesConfig, vaes, device, released=None):
    """One training step of the grid's network for ``prior`` on random data of size ``n``."""
    x = torch.rand(n if b.batch_size is None else min(n, b.batch_size), 1, 28, 28, device=device)
    y = torch.arange(len(x), device=device) % 10
    if prior == "det":
        net = det_cnn(b).to(device)
        opt = torch.optim.Adam(net.parameters())

        def step():
            take_step(opt, F.cross_entropy(net(x), y) + b.det_weight_decay * conv_l2(net))

        return step
    model = BayesianCNN(b, alpha_parametrised=prior == "log-uniform").to(device)
    priors = make_priors(prior, vaes, b, released)
    for p in priors.values():
        p.to(device)
    opt = torch.optim.Adam(model.parameters())

    def step():
        model.train()
        take_step(opt, negative_elbo(model, x, y, n, priors, b.kl_weight).loss)

    return step


def mean_log_var(model: nn.Module, layer: str) -> float | None:
    if not isinstance(model, BayesianCNN):
        return None
    return float(model.bayes_layers()[layer].log_var().detach().mean())
