"""Source networks and the kernel bank: where the deep weight prior's training data come from.

The deep weight prior is learned from the kernels of many CNNs trained on a *source* task
(notMNIST letters for the MNIST task; see ``book/04_implicit_prior.md``). This module

1. trains ``n_nets`` independent CNNs of the authors' "FConv" shape (:class:`FConv`), each from
   its own seed, with a real Xavier-normal init (:func:`xavier_normal_init`), Adam with a linear
   decay that never reaches 0 on a step that is taken (:func:`linear_decay`), and an L2 penalty
   on the conv parameters (:func:`train_source_nets`, resumable: each finished net is saved);
2. cuts every conv weight of shape ``(c_out, c_in, k, k)`` into ``c_out * c_in`` two-dimensional
   *slices* of ``k x k``, per layer (7x7 from ``conv1``, 5x5 from ``conv2``), drops near-zero
   slices by a per-layer norm threshold, splits the rest into train and test, and records how far
   the kernels moved from their initialisation (:func:`build_kernel_bank`, :class:`KernelBank`).

>>> cfg = SourceNetsConfig.tiny()
>>> bank = get_kernel_bank(cfg)                  # trains, or loads from the cache  # doctest: +SKIP
>>> bank.slices("conv1", "train").shape          # (N, 7, 7)                         # doctest: +SKIP

Everything is sized by one :class:`SourceNetsConfig` with ``tiny``/``book``/``paper`` presets.
The command line is ``python -m dwp_lib source-nets --preset book``.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import __version__
from . import artifacts as _artifacts
from . import config as _config
from .device import default_device, exit_with_parent, seed_everything
from .executor import ExecutorConfig, run_on_ray
from .progress import progress
from .train import check_finite

#: The conv layers whose kernels make the bank, and their kernel sizes.
LAYERS: dict[str, int] = {"conv1": 7, "conv2": 5}
#: What :meth:`KernelBank.slices` can return.
SPLITS: tuple[str, ...] = ("train", "test", "all", "all_unpruned", "pruned")
_SPLIT_CODE = {"train": 0, "test": 1, "pruned": 2}
DATA_LABELS = {
    "synthetic": "notMNIST-style (synthetic)",
    "small": "notMNIST (small, real)",
    "large": "notMNIST (large, real)",
}
NET_FILE = "net_{:03d}.pt"
#: the bank's file in the nets' folder, named after :meth:`SourceNetsConfig.bank_key`: banks cut
#: differently from the same nets (other pruning, split or count) live side by side
BANK_FILE = "kernel_bank-{}.pt"


# --- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceNetsConfig:
    """Every knob of the source-net stage.

    Training (these fields name the checkpoint folder; see :meth:`training_key`):
        widths:        ``(c1, c2)``: output channels of ``conv1`` (7x7) and ``conv2`` (5x5).
        epochs:        passes over the training images, per net.
        batch_size:    images per Adam step.
        lr:            Adam's initial learning rate, decayed linearly over all steps
                       (:func:`linear_decay`; the last step uses ``lr / total_steps``, never 0).
        l2:            weight of ``sum of squares of the conv parameters`` added to the mean
                       cross-entropy (the authors' 1e-3).
        seed:          net ``i`` is seeded with ``seed + i`` (init and mini-batch order).
        data_variant:  notMNIST variant, ``"synthetic"``, ``"small"`` or ``"large"``.
        data_preset:   preset of the synthetic renderer (``SyntheticConfig``); unused otherwise.
        train_images:  use a seeded random subset of this many training images (None: all).
        precision:     ``"fp32"``, or ``"bf16"`` (autocast: bfloat16 matmuls, fp32 weights).

    The bank:
        n_nets:        how many nets. Net ``i`` does not depend on ``n_nets``, so raising it
                       reuses the nets already trained.
        prune_norms:   per-layer L2-norm threshold ``(conv1, conv2)``; a slice with a smaller norm
                       is dropped. The authors' released banks imply about ``(0.39, 0.13)``.
        test_fraction: share of the kept slices (or of the nets) held out as the bank's test split.
        split_by:      ``"slice"`` (a random split of slices, as the authors) or ``"net"`` (whole
                       nets held out: test slices come from nets the VAE never saw).
        store_unpruned: keep every slice in the bank file (``"all_unpruned"``, ``"pruned"``);
                       off for the paper preset, whose 13M 5x5 slices would take 1.3 GB.

    Speed (they do not change the maths beyond rounding):
        channels_last: NHWC memory layout, which oneDNN's CPU convolutions and pooling prefer.
        workers:       processes that train nets side by side on a CPU, each with ``num_threads``
                       threads (default 1). ``None``: one per CPU core (and none on a GPU);
                       0: train in this process, one net after the other.
        num_threads:   torch intra-op threads per training process (None: 1 in a worker,
                       torch's setting in this process). Results are reproducible for a fixed
                       thread count; a different count changes them at rounding level.
        eval_batch_size: images per forward pass when measuring test accuracy.
    """

    n_nets: int = 8
    widths: tuple[int, int] = (32, 64)
    epochs: int = 3
    batch_size: int = 64
    lr: float = 3e-3
    l2: float = 1e-3
    seed: int = 0
    data_variant: str = "synthetic"
    data_preset: str = "book"
    train_images: int | None = None
    precision: str = "fp32"
    prune_norms: tuple[float, float] = (0.39, 0.13)
    test_fraction: float = 0.2
    split_by: str = "slice"
    store_unpruned: bool = True
    channels_last: bool = True
    workers: int | None = None
    num_threads: int | None = None
    eval_batch_size: int = 1000

    def __post_init__(self) -> None:
        _config.check_fields(self)
        problems = []
        if self.n_nets < 1:
            problems.append(f"n_nets={self.n_nets} must be >= 1")
        if len(self.widths) != 2 or min(self.widths) < 1:
            problems.append(f"widths={self.widths} must be two positive channel counts (c1, c2)")
        if self.epochs < 1 or self.batch_size < 1:
            problems.append("epochs and batch_size must be >= 1")
        if not self.lr > 0 or self.l2 < 0:
            problems.append(f"lr={self.lr} must be > 0 and l2={self.l2} >= 0")
        if self.precision not in ("fp32", "bf16"):
            problems.append(f"precision={self.precision!r} must be 'fp32' or 'bf16'")
        if len(self.prune_norms) != 2 or min(self.prune_norms) < 0:
            problems.append(f"prune_norms={self.prune_norms} must be two thresholds >= 0")
        if not 0 <= self.test_fraction < 1:
            problems.append(f"test_fraction={self.test_fraction} must be in [0, 1)")
        if self.split_by not in ("slice", "net"):
            problems.append(f"split_by={self.split_by!r} must be 'slice' or 'net'")
        if self.train_images is not None and self.train_images < 1:
            problems.append(f"train_images={self.train_images} must be None or >= 1")
        if problems:
            raise ValueError("SourceNetsConfig: " + "; ".join(problems))
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "prune_norms", tuple(float(t) for t in self.prune_norms))

    @classmethod
    def tiny(cls) -> SourceNetsConfig:
        """Seconds: four narrow nets on 1,000 images (tests, ``DWP_PRESET=tiny``)."""
        return cls(
            n_nets=4,
            widths=(8, 16),
            epochs=2,
            batch_size=32,
            lr=3e-3,
            data_preset="tiny",
            train_images=1000,
            workers=0,  # processes take seconds to start; these nets train in less
            num_threads=1,  # too small to gain from threads
        )

    @classmethod
    def book(cls) -> SourceNetsConfig:
        """About 3 minutes on 2 CPU cores: the default of the book build.

        8 x FConv(32, 64), 3 epochs of batch 64 (about 1,800 Adam steps per net) at lr 3e-3.
        Why these: with 3 epochs at lr 1e-3 the kernels stay near their initialisation (the
        7x7 slices end ~2x the norm of a Xavier draw); at 3e-3 they end ~2.7x, at no cost in
        accuracy; at 1e-2 the L2 term kills most 7x7 channels (too few slices left for a VAE).
        The pruning thresholds are the authors' (0.39, 0.13), applied as they are: on these nets
        they drop the dead slices (that the L2 term shrank to ~0) and the smallest live ones.
        """
        return cls()

    @classmethod
    def paper(cls) -> SourceNetsConfig:
        """The authors' setting (for a GPU): 100 x FConv(256, 512), 100 epochs, batch 256."""
        return cls(
            n_nets=100,
            widths=(256, 512),
            epochs=100,
            batch_size=256,
            lr=1e-3,
            data_variant="small",
            data_preset="paper",
            prune_norms=(0.39, 0.13),
            store_unpruned=False,
        )

    @classmethod
    def preset(cls, name: str, **overrides) -> SourceNetsConfig:
        return _config.preset_of(cls, name, **overrides)

    # fields that change a trained net; the checkpoint folder is named after them
    _TRAINING_FIELDS = (
        "widths",
        "epochs",
        "batch_size",
        "lr",
        "l2",
        "seed",
        "data_variant",
        "data_preset",
        "train_images",
        "precision",
    )

    def training_dict(self) -> dict[str, Any]:
        d = _config.to_dict(self)
        out = {k: d[k] for k in self._TRAINING_FIELDS}
        out["widths"] = list(out["widths"])
        if self.data_variant != "synthetic":
            out["data_preset"] = None
        return out

    def training_key(self) -> str:
        """A short hash of the fields that change a trained net (names the checkpoint folder)."""
        blob = json.dumps(self.training_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    # fields that change how the bank is cut from the trained nets (not the nets themselves)
    _BANK_FIELDS = ("n_nets", "prune_norms", "test_fraction", "split_by", "store_unpruned")

    def bank_dict(self) -> dict[str, Any]:
        """Every field that changes the bank: the nets' training and how the bank is cut."""
        d = _config.to_dict(self)
        return {**self.training_dict(), **{k: d[k] for k in self._BANK_FIELDS}}

    def bank_key(self) -> str:
        """A short hash of :meth:`bank_dict` (names the bank's file in the nets' folder)."""
        return hashlib.sha256(json.dumps(self.bank_dict(), sort_keys=True).encode()).hexdigest()[
            :12
        ]

    def bank_file(self) -> str:
        """``kernel_bank-<bank_key>.pt``."""
        return BANK_FILE.format(self.bank_key())

    def default_dir(self) -> Path:
        """``$DWP_CACHE/source_nets/<variant>-<training_key>``."""
        return _artifacts.cache_dir("source_nets", f"{self.data_variant}-{self.training_key()}")


# --- the network -----------------------------------------------------------------------------


class FConv(nn.Module):
    """The authors' CNN for 28x28 greyscale images, used for the source nets *and* the target.

    ``x (B, 1, 28, 28)`` -> ``conv1`` 1->c1, 7x7 -> LeakyReLU -> max-pool 2 (11x11)
    -> ``conv2`` c1->c2, 5x5 -> LeakyReLU -> max-pool 2 (3x3) -> flatten -> ``fc`` c2*3*3 -> 10.

    No batch norm, as in the paper. The forward pass only calls ``self.conv1``, ``self.conv2`` and
    ``self.fc``, so a subclass may replace them (e.g. with Bayesian conv layers) and keep it.
    """

    def __init__(
        self, c1: int = 32, c2: int = 64, n_classes: int = 10, negative_slope: float = 0.01
    ) -> None:
        super().__init__()
        self.widths = (c1, c2)
        self.negative_slope = negative_slope
        self.conv1 = nn.Conv2d(1, c1, LAYERS["conv1"])
        self.conv2 = nn.Conv2d(c1, c2, LAYERS["conv2"])
        self.fc = nn.Linear(c2 * 3 * 3, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The flattened conv features ``(B, c2 * 9)``."""
        x = F.max_pool2d(F.leaky_relu(self.conv1(x), self.negative_slope), 2)
        x = F.max_pool2d(F.leaky_relu(self.conv2(x), self.negative_slope), 2)
        return torch.flatten(x, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, n_classes)``."""
        return self.fc(self.features(x))

    def conv_layers(self) -> dict[str, nn.Module]:
        """``{"conv1": ..., "conv2": ...}``: the layers whose kernels go into the bank."""
        return {"conv1": self.conv1, "conv2": self.conv2}

    def kernels(self) -> dict[str, torch.Tensor]:
        """Each conv weight, detached: ``conv1`` ``(c1, 1, 7, 7)``, ``conv2`` ``(c2, c1, 5, 5)``."""
        return {name: layer.weight.detach() for name, layer in self.conv_layers().items()}


def xavier_normal_init(module: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Xavier-normal (Glorot) init of every conv and linear weight; biases set to zero.

    ``w ~ N(0, 2 / (fan_in + fan_out))`` with ``fan_in = c_in * k * k`` and
    ``fan_out = c_out * k * k`` (Glorot and Bengio, 2010). PyTorch's *default* init of ``Conv2d``
    is a Kaiming-uniform, not this; the authors' "Xavier" baseline means this one.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.xavier_normal_(m.weight, generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def xavier_slice_norm(layer: str, widths: Sequence[int]) -> float:
    """Typical L2 norm of one k x k slice at Xavier-normal init: ``std * k`` (a yardstick)."""
    c1, c2 = widths
    k = LAYERS[layer]
    c_in, c_out = (1, c1) if layer == "conv1" else (c1, c2)
    std = math.sqrt(2.0 / ((c_in + c_out) * k * k))
    return std * k


def linear_decay(step: int, total_steps: int) -> float:
    """Learning-rate factor of step ``step`` (0-based) of ``total_steps``: ``1 - step / total``.

    The first step uses the full rate, the last one ``1 / total_steps`` of it: the rate is never
    0 on a step that is taken (a known pitfall of public code is a last epoch at rate 0).
    """
    if not 0 <= step < total_steps:
        raise ValueError(f"step {step} outside 0..{total_steps - 1}")
    return 1.0 - step / total_steps


# --- data -------------------------------------------------------------------------------------


@dataclass
class SourceData:
    """Training and test tensors of the source task, and where they came from."""

    x_train: torch.Tensor  # float32 (N, 1, 28, 28) in [0, 1]
    y_train: torch.Tensor  # int64 (N,)
    x_test: torch.Tensor
    y_test: torch.Tensor
    provenance: dict

    @classmethod
    def from_imagesets(cls, train, test, label: str | None = None) -> SourceData:
        prov = {
            "label": label or DATA_LABELS.get(train.provenance.get("variant"), "notMNIST"),
            "train": dict(train.provenance),
            "test": dict(test.provenance),
        }
        return cls(train.float_images(), train.labels, test.float_images(), test.labels, prov)


def load_source_data(cfg: SourceNetsConfig) -> SourceData:
    """notMNIST (``cfg.data_variant``) through :func:`dwp_lib.data.load_notmnist`."""
    from .data import load_notmnist

    kwargs = {}
    if cfg.data_variant == "synthetic":
        from .data.synthetic import SyntheticConfig

        kwargs["config"] = SyntheticConfig.preset(cfg.data_preset)
    train = load_notmnist("train", variant=cfg.data_variant, **kwargs)
    test = load_notmnist("test", variant=cfg.data_variant, **kwargs)
    return SourceData.from_imagesets(train, test, DATA_LABELS[cfg.data_variant])


def _train_subset(data: SourceData, cfg: SourceNetsConfig) -> tuple[torch.Tensor, torch.Tensor]:
    n = len(data.y_train)
    if cfg.train_images is None or cfg.train_images >= n:
        return data.x_train, data.y_train
    g = torch.Generator().manual_seed(cfg.seed)
    idx = torch.randperm(n, generator=g)[: cfg.train_images]
    return data.x_train[idx], data.y_train[idx]


# --- training ---------------------------------------------------------------------------------


def conv_l2(net: FConv) -> torch.Tensor:
    """Sum of squares of the conv layers' parameters (weights and biases)."""
    return sum(p.pow(2).sum() for layer in net.conv_layers().values() for p in layer.parameters())


@torch.no_grad()
def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Share of ``x`` that ``net`` classifies as ``y`` (on the net's device)."""
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    correct = 0
    for i in range(0, len(y), batch_size):
        logits = net(x[i : i + batch_size].to(device))
        correct += (logits.argmax(1).cpu() == y[i : i + batch_size]).sum().item()
    net.train(was_training)
    return correct / max(len(y), 1)


def new_source_net(cfg: SourceNetsConfig, index: int) -> FConv:
    """Net ``index``: a fresh :class:`FConv` with its own Xavier-normal draw (seed ``seed + i``)."""
    g = torch.Generator().manual_seed(cfg.seed + index)
    return xavier_normal_init(FConv(*cfg.widths), generator=g)


def training_step(
    net: FConv,
    opt: torch.optim.Optimizer,
    xb: torch.Tensor,
    yb: torch.Tensor,
    cfg: SourceNetsConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One Adam step on ``mean cross-entropy + l2 * conv_l2(net)``; returns (data loss, logits).

    ``xb`` must already be on the net's device, in the net's memory format.
    """
    with torch.autocast(xb.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
        logits = net(xb)
    data_loss = F.cross_entropy(logits.float(), yb)
    loss = data_loss + cfg.l2 * conv_l2(net)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return data_loss.detach(), logits.detach()


def memory_format(cfg: SourceNetsConfig) -> torch.memory_format:
    return torch.channels_last if cfg.channels_last else torch.contiguous_format


def train_one_net(
    cfg: SourceNetsConfig,
    index: int,
    data: SourceData,
    device: torch.device | str | None = None,
    show_progress: bool = True,
) -> tuple[FConv, dict]:
    """Train net ``index`` from scratch; return it (on the CPU) and its record.

    Every step is :func:`training_step`; the rate follows :func:`linear_decay` over all steps.
    """
    device = torch.device(device) if device is not None else default_device()
    seed = cfg.seed + index
    seed_everything(seed)
    net = new_source_net(cfg, index)
    init = {k: v.clone() for k, v in net.kernels().items()}
    memory = memory_format(cfg)
    net = net.to(device, memory_format=memory)
    x, y = _train_subset(data, cfg)
    n = len(y)
    total = cfg.epochs * math.ceil(n / cfg.batch_size)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: linear_decay(min(s, total - 1), total))
    order = torch.Generator().manual_seed(seed)
    threads = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    used_threads = torch.get_num_threads()
    t0, cpu0 = time.perf_counter(), time.process_time()
    lrs: list[float] = []
    try:
        bar = progress(total=total, desc=f"net {index}", position=1, disable=not show_progress)
        for _epoch in range(cfg.epochs):
            perm = torch.randperm(n, generator=order)
            run_loss, run_correct = torch.zeros(()), torch.zeros((), dtype=torch.long)
            for i in range(0, n, cfg.batch_size):
                idx = perm[i : i + cfg.batch_size]
                xb = x[idx].to(device, non_blocking=True).contiguous(memory_format=memory)
                yb = y[idx].to(device, non_blocking=True)
                lrs.append(opt.param_groups[0]["lr"])
                data_loss, logits = training_step(net, opt, xb, yb, cfg)
                sched.step()
                run_loss += data_loss.cpu() * len(yb)
                run_correct += (logits.argmax(1) == yb).sum().cpu()
                bar.update()
            check_finite(run_loss.item(), f"source net {index}, epoch {_epoch}", len(lrs))
            bar.set_postfix(loss=f"{run_loss.item() / n:.3f}")
        bar.close()
    finally:
        torch.set_num_threads(threads)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
    net = net.cpu().to(memory_format=torch.contiguous_format)
    test_acc = accuracy(net, data.x_test, data.y_test, cfg.eval_batch_size)
    moved = {
        k: float((net.kernels()[k] - init[k]).norm() / init[k].norm().clamp_min(1e-12))
        for k in init
    }
    record = {
        "index": index,
        "seed": seed,
        "test_accuracy": test_acc,
        "train_accuracy_last_epoch": run_correct.item() / n,
        "train_loss_last_epoch": run_loss.item() / n,
        "steps": len(lrs),
        "train_images": n,
        "lr_first": lrs[0],
        "lr_last": lrs[-1],
        "relative_change_from_init": moved,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,  # this process, all threads; other programs inflate it less
        "images_per_second": n * cfg.epochs / seconds,
        "device": str(device),
        "threads": used_threads if device.type == "cpu" else None,
    }
    return net, record


def _net_provenance(cfg: SourceNetsConfig, record: dict, data: SourceData) -> dict:
    return {
        "stage": "source_nets",
        "training": cfg.training_dict(),
        "training_key": cfg.training_key(),
        "record": record,
        "data": data.provenance,
    }


def _read_net_record(path: Path, cfg: SourceNetsConfig) -> dict:
    """The record of a saved net, after checking its hash and that it was trained like ``cfg``."""
    record = _artifacts.verify_artifact(path)
    prov = record.get("provenance", {})
    if prov.get("training") != cfg.training_dict():
        raise _artifacts.ArtifactError(
            f"{path} was trained with {prov.get('training')}, not with this config's "
            f"{cfg.training_dict()}; use another out_dir (the default one is named after the "
            "training settings) or delete the folder"
        )
    return prov["record"]


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


def _train_and_save(
    cfg: SourceNetsConfig, index: int, data: SourceData, device: torch.device, out: Path
) -> dict:
    net, record = train_one_net(cfg, index, data, device, show_progress=False)
    path = out / NET_FILE.format(index)
    state = {"state_dict": net.state_dict(), "widths": cfg.widths}
    _artifacts.save_artifact(path, state, _net_provenance(cfg, record, data))
    return dict(record, path=str(path), resumed=False)


_WORKER_DATA: SourceData | None = None


def _init_worker(data: SourceData, threads: int) -> None:
    global _WORKER_DATA
    exit_with_parent()  # a killed run leaves no worker training on
    torch.set_num_threads(threads)
    _WORKER_DATA = data


def _worker_task(cfg: SourceNetsConfig, index: int, out: str) -> dict:
    return _train_and_save(cfg, index, _WORKER_DATA, torch.device("cpu"), Path(out))


def _ray_train_net(data: SourceData, cfg: SourceNetsConfig, index: int, threads: int):
    """One source net as a Ray task: trained where the task runs (its GPU share, or its CPUs
    with ``threads`` torch threads), returned to the caller, which saves it."""
    torch.set_num_threads(threads)
    net, record = train_one_net(cfg, index, data, default_device(), show_progress=False)
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
    """Train (or resume) ``cfg.n_nets`` source nets; each is saved to ``out_dir/net_XXX.pt``.

    A net whose checkpoint exists and verifies is not trained again (its record says
    ``"resumed": True``); a checkpoint made with other training settings raises. ``max_new``
    stops after that many newly trained nets (to split the work, or to test resuming);
    ``on_net_done(record)`` is called after each net is saved. ``data`` replaces notMNIST
    (tests pass small tensors). On a CPU the nets are trained ``cfg.workers`` at a time in
    separate processes (see :func:`resolve_workers`); with ``executor.kind = "ray"`` each net
    is a Ray task (:mod:`dwp_lib.executor`) and this process saves it as it arrives. Returns one
    record per net, by index (test accuracy, seed, steps, the last learning rate, the
    checkpoint ``path``...).
    """
    device = torch.device(device) if device is not None else default_device()
    out = Path(out_dir) if out_dir is not None else cfg.default_dir()
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    todo = []
    for i in range(cfg.n_nets):
        path = out / NET_FILE.format(i)
        if path.exists():
            records.append(dict(_read_net_record(path, cfg), path=str(path), resumed=True))
        else:
            todo.append(i)
    if max_new is not None:
        todo = todo[:max_new]
    if todo and data is None:
        data = load_source_data(cfg)
    on_ray = executor is not None and executor.kind == "ray"
    workers = 0 if on_ray else resolve_workers(cfg, device, len(todo))

    def done(record: dict) -> None:
        records.append(record)
        if on_net_done is not None:
            on_net_done(record)

    where = "as Ray tasks" if on_ray else f"{workers or 1} at a time"
    bar = progress(total=len(todo), desc=f"source nets ({where})", position=0)
    if on_ray:
        threads = cfg.num_threads or executor.threads
        calls = [(cfg, i, threads) for i in todo]
        for state, record in run_on_ray(executor, _ray_train_net, data, calls, unit="net"):
            path = out / NET_FILE.format(record["index"])
            _artifacts.save_artifact(path, state, _net_provenance(cfg, record, data))
            done(dict(record, path=str(path), resumed=False))
            bar.update()
    elif workers == 0:
        for i in todo:
            done(_train_and_save(cfg, i, data, device, out))
            bar.update()
    else:
        # spawn, not fork: a forked child of a process that already ran OpenMP threads can hang
        ctx = multiprocessing.get_context("spawn")
        threads = cfg.num_threads or 1
        with ProcessPoolExecutor(workers, ctx, _init_worker, (data, threads)) as pool:
            futures = [pool.submit(_worker_task, cfg, i, str(out)) for i in todo]
            try:
                for fut in as_completed(futures):
                    done(fut.result())
                    bar.update()
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise
    bar.close()
    return sorted(records, key=lambda r: r["index"])


def load_source_nets(
    out_dir: str | Path, cfg: SourceNetsConfig | None = None
) -> tuple[list[FConv], list[dict]]:
    """The saved nets of ``out_dir`` (each verified) and their records, by index.

    With ``cfg``: exactly nets ``0 .. cfg.n_nets - 1``, trained with ``cfg``'s settings (a missing
    one raises, saying to run :func:`train_source_nets`). Without: every ``net_*.pt`` found.
    """
    out = Path(out_dir)
    if cfg is not None:
        paths = [out / NET_FILE.format(i) for i in range(cfg.n_nets)]
        missing = [p.name for p in paths if not p.exists()]
        if missing:
            raise _artifacts.ArtifactError(
                f"{out}: {len(missing)} of {cfg.n_nets} source nets are missing ({missing[0]}...); "
                "run train_source_nets(cfg, out_dir) (or `python -m dwp_lib source-nets`) first"
            )
    else:
        paths = sorted(out.glob("net_*.pt"))
        if not paths:
            raise _artifacts.ArtifactError(f"{out}: no source nets (net_*.pt) found")
    nets, records = [], []
    for path in paths:
        obj, rec = _artifacts.load_artifact(path)
        if cfg is not None and rec["provenance"].get("training") != cfg.training_dict():
            _read_net_record(path, cfg)  # raises with the explanation
        net = FConv(*obj["widths"])
        net.load_state_dict(obj["state_dict"])
        nets.append(net)
        records.append(dict(rec["provenance"]["record"], path=str(path)))
    return nets, records


# --- the kernel bank --------------------------------------------------------------------------


def cut_slices(weight: torch.Tensor) -> torch.Tensor:
    """A conv weight ``(c_out, c_in, k, k)`` as ``c_out * c_in`` slices ``(c_out * c_in, k, k)``.

    Slice ``o * c_in + i`` is the kernel from input channel ``i`` to output channel ``o``.
    """
    if weight.dim() != 4 or weight.shape[-1] != weight.shape[-2]:
        raise ValueError(f"expected a conv weight (c_out, c_in, k, k); got {tuple(weight.shape)}")
    return weight.detach().reshape(-1, weight.shape[-2], weight.shape[-1]).float().cpu()


def norm_stats(norms: torch.Tensor) -> dict[str, float]:
    """Count, mean, quantiles (1, 10, 50, 90, 99 %) of slice norms, as plain floats."""
    if norms.numel() == 0:
        return {"count": 0}
    q = torch.quantile(
        norms.double(), torch.tensor([0.01, 0.1, 0.5, 0.9, 0.99], dtype=torch.float64)
    )
    return {
        "count": int(norms.numel()),
        "mean": float(norms.mean()),
        "q01": float(q[0]),
        "q10": float(q[1]),
        "median": float(q[2]),
        "q90": float(q[3]),
        "q99": float(q[4]),
        "max": float(norms.max()),
    }


#: provenance entries of a bank that differ between two builds of the same bank
_VOLATILE = ("seconds_training_this_run", "sha256", "file")


class KernelBank:
    """The slices of every source net's conv kernels, per layer, with their split and provenance.

    Per layer (``"conv1"``: 7x7, ``"conv2"``: 5x5) it stores

    - ``slices``: float32 ``(M, k, k)``; every slice if the bank was built with ``store_unpruned``,
      else only the kept ones;
    - ``split``: int8 ``(M,)``: 0 train, 1 test, 2 pruned (norm below the layer's threshold);
    - ``net``, ``out_channel``, ``in_channel``: int ``(M,)``, where each slice came from.

    ``bank.slices(layer, split)`` returns ``(N, k, k)``; ``bank.provenance`` says how the bank was
    made (data, config, seeds, per-net accuracy, slice-norm statistics before and after pruning,
    library version). ``save``/``load`` go through :mod:`dwp_lib.artifacts` (hash-checked).
    """

    def __init__(self, layers: dict[str, dict[str, torch.Tensor]], provenance: dict) -> None:
        for name, tensors in layers.items():
            if name not in LAYERS:
                raise ValueError(f"unknown layer {name!r}; layers are {', '.join(LAYERS)}")
            m = len(tensors["slices"])
            for key in ("split", "net", "out_channel", "in_channel"):
                if len(tensors[key]) != m:
                    raise ValueError(f"{name}: {key} has {len(tensors[key])} entries, not {m}")
        self.layers = layers
        self.provenance = provenance

    @property
    def has_unpruned(self) -> bool:
        return bool(self.provenance.get("config", {}).get("store_unpruned", True))

    def _check(self, layer: str, split: str) -> dict[str, torch.Tensor]:
        if layer not in self.layers:
            raise KeyError(f"unknown layer {layer!r}; the bank has {', '.join(self.layers)}")
        if split not in SPLITS:
            raise KeyError(f"unknown split {split!r}; splits are {', '.join(SPLITS)}")
        if split in ("all_unpruned", "pruned") and not self.has_unpruned:
            raise ValueError(
                f"this bank keeps only the kept slices (store_unpruned=False), so split {split!r} "
                "is not available; rebuild it with store_unpruned=True from the source nets"
            )
        return self.layers[layer]

    def _mask(self, layer: str, split: str) -> torch.Tensor:
        t = self._check(layer, split)
        code = t["split"]
        if split == "all_unpruned":
            return torch.ones_like(code, dtype=torch.bool)
        if split == "all":
            return code != _SPLIT_CODE["pruned"]
        return code == _SPLIT_CODE[split]

    def slices(self, layer: str, split: str = "train") -> torch.Tensor:
        """Slices of ``layer`` in ``split`` as float32 ``(N, k, k)``.

        ``split``: ``"train"``, ``"test"``, ``"all"`` (train + test: every kept slice),
        ``"all_unpruned"`` (every slice of every net, before pruning) or ``"pruned"`` (dropped).
        """
        return self.layers[layer]["slices"][self._mask(layer, split)]

    def origin(self, layer: str, split: str = "train") -> dict[str, torch.Tensor]:
        """``net``, ``out_channel`` and ``in_channel`` of each slice of ``slices(layer, split)``."""
        mask = self._mask(layer, split)
        return {k: self.layers[layer][k][mask] for k in ("net", "out_channel", "in_channel")}

    def norms(self, layer: str, split: str = "train") -> torch.Tensor:
        """L2 norm of each slice of ``slices(layer, split)``, ``(N,)``."""
        return self.slices(layer, split).flatten(1).norm(dim=1)

    def random_kernels(
        self,
        layer: str,
        c_out: int,
        c_in: int,
        split: str = "train",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """A conv weight ``(c_out, c_in, k, k)`` whose slices are drawn (with replacement) from
        ``slices(layer, split)``: the "filters" initialisation of the paper."""
        pool = self.slices(layer, split)
        if len(pool) == 0:
            raise ValueError(f"the bank has no {layer} slices in split {split!r}")
        idx = torch.randint(len(pool), (c_out * c_in,), generator=generator)
        return pool[idx].reshape(c_out, c_in, *pool.shape[-2:]).clone()

    def counts(self) -> dict[str, dict[str, int]]:
        return {
            layer: {
                s: int(self._mask(layer, s).sum())
                for s in SPLITS
                if self.has_unpruned or s not in ("all_unpruned", "pruned")
            }
            for layer in self.layers
        }

    def summary(self) -> str:
        """A few lines for a chapter or the CLI to print."""
        p = self.provenance
        acc = p.get("accuracy", {})
        lines = [
            f"Kernel bank from {p.get('n_nets')} source nets FConv{tuple(p['config']['widths'])} "
            f"trained on {p.get('data', {}).get('label', '?')}",
            f"  source-net test accuracy: {acc.get('mean', float('nan')):.4f} "
            f"± {acc.get('std', float('nan')):.4f} (min {acc.get('min', float('nan')):.4f})",
        ]
        for layer, k in LAYERS.items():
            if layer not in self.layers:
                continue
            st = p["norms"][layer]
            b, a = st["before_pruning"], st["after_pruning"]
            lines.append(
                f"  {layer} {k}x{k}: {a.get('count', 0):,} kept of {b.get('count', 0):,} "
                f"(threshold {st['threshold']}); train {self.counts()[layer]['train']:,}, "
                f"test {self.counts()[layer]['test']:,}; median norm {b.get('median', 0):.3f} "
                f"before / {a.get('median', 0):.3f} after pruning (Xavier init ~{st['xavier_init']:.3f})"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        c = self.counts()
        parts = ", ".join(f"{k}: {c[k]['train']} train / {c[k]['test']} test" for k in c)
        return f"KernelBank({parts})"

    def save(self, path: str | Path) -> str:
        """Write the bank (and its provenance sidecar); return its SHA-256.

        The file holds the slices and what made them; how long that took goes in the sidecar
        only, so the same nets always give a file with the same SHA-256 (a rebuild after a
        fault, another machine)."""
        content = {k: v for k, v in self.provenance.items() if k not in _VOLATILE}
        return _artifacts.save_artifact(
            path, {"layers": self.layers, "provenance": content}, self.provenance
        )

    @classmethod
    def load(cls, path: str | Path) -> KernelBank:
        """Read a bank written by :meth:`save`; a changed or truncated file raises
        :class:`~dwp_lib.artifacts.CorruptArtifactError`."""
        obj, record = _artifacts.load_artifact(path)
        bank = cls(obj["layers"], obj["provenance"])
        bank.provenance = dict(bank.provenance, sha256=record["sha256"], file=str(path))
        return bank


def _split_codes(
    kept: torch.Tensor, net_of: torch.Tensor, cfg: SourceNetsConfig, layer_index: int
) -> torch.Tensor:
    """0 train / 1 test / 2 pruned for each slice (seeded by ``cfg.seed`` and the layer)."""
    g = torch.Generator().manual_seed(cfg.seed * 1000 + 17 + layer_index)
    code = torch.full(kept.shape, _SPLIT_CODE["pruned"], dtype=torch.int8)
    if cfg.split_by == "net":
        n = int(net_of.max()) + 1
        n_test = round(cfg.test_fraction * n)
        if cfg.test_fraction > 0 and n_test == 0:
            n_test = 1
        if n_test >= n:
            raise ValueError(
                f"split_by='net' with {n} nets cannot hold out {n_test}; train more nets or "
                "use split_by='slice'"
            )
        test_nets = torch.randperm(n, generator=g)[:n_test]
        is_test = torch.isin(net_of, test_nets)
        code[kept & ~is_test] = _SPLIT_CODE["train"]
        code[kept & is_test] = _SPLIT_CODE["test"]
    else:
        idx = torch.nonzero(kept).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_test = round(cfg.test_fraction * len(idx))
        code[idx[n_test:]] = _SPLIT_CODE["train"]
        code[idx[:n_test]] = _SPLIT_CODE["test"]
    return code


def build_kernel_bank(
    source: Sequence[FConv] | str | Path,
    cfg: SourceNetsConfig,
    records: Sequence[dict] | None = None,
) -> KernelBank:
    """Cut the conv kernels of ``source`` (nets, or their checkpoint folder) into a bank.

    Before pruning, ``conv1`` gives ``n_nets * c1`` slices of 7x7 and ``conv2``
    ``n_nets * c1 * c2`` of 5x5. Slices with an L2 norm below ``cfg.prune_norms`` are marked
    pruned; the kept ones are split into train and test (``cfg.test_fraction``, ``cfg.split_by``).
    ``records`` (per-net accuracy, seeds) go into the provenance; they are read from the
    checkpoints when ``source`` is a folder.
    """
    data_prov: dict = {}
    if isinstance(source, str | Path):
        folder = Path(source)
        nets, records = load_source_nets(folder, cfg)
        first = _artifacts.read_record(folder / NET_FILE.format(0))
        data_prov = first["provenance"].get("data", {})
    else:
        nets = list(source)
    if len(nets) == 0:
        raise ValueError("build_kernel_bank: no nets given")
    if len({id(n) for n in nets}) != len(nets):
        raise ValueError("build_kernel_bank: the same module appears more than once in the nets")
    records = list(records or [])
    layers: dict[str, dict[str, torch.Tensor]] = {}
    norms_prov: dict[str, dict] = {}
    for li, (layer, k) in enumerate(LAYERS.items()):
        parts, net_of, outs, ins = [], [], [], []
        for n_i, net in enumerate(nets):
            w = net.kernels()[layer]
            if tuple(w.shape[-2:]) != (k, k):
                raise ValueError(f"net {n_i} {layer}: kernels {tuple(w.shape)}, expected {k}x{k}")
            c_out, c_in = w.shape[:2]
            parts.append(cut_slices(w))
            net_of.append(torch.full((c_out * c_in,), n_i, dtype=torch.int32))
            outs.append(torch.arange(c_out, dtype=torch.int32).repeat_interleave(c_in))
            ins.append(torch.arange(c_in, dtype=torch.int32).repeat(c_out))
        slices = torch.cat(parts)
        net_idx = torch.cat(net_of)
        norms = slices.flatten(1).norm(dim=1)
        threshold = cfg.prune_norms[li]
        kept = norms >= threshold
        if not kept.any():
            raise ValueError(
                f"{layer}: no slice has an L2 norm >= the pruning threshold {threshold} (the "
                f"largest is {norms.max():.3g}); lower cfg.prune_norms or train the nets longer"
            )
        code = _split_codes(kept, net_idx, cfg, li)
        tensors = {
            "slices": slices,
            "split": code,
            "net": net_idx,
            "out_channel": torch.cat(outs),
            "in_channel": torch.cat(ins),
        }
        if not cfg.store_unpruned:
            tensors = {key: t[kept] for key, t in tensors.items()}
        layers[layer] = tensors
        norms_prov[layer] = {
            "kernel_size": k,
            "threshold": threshold,
            "xavier_init": xavier_slice_norm(layer, cfg.widths),
            "before_pruning": norm_stats(norms),
            "after_pruning": norm_stats(norms[kept]),
            "kept_fraction": float(kept.float().mean()),
            "rms_per_weight_after": float(slices[kept].pow(2).mean().sqrt()) if kept.any() else 0.0,
        }
    accs = torch.tensor([r["test_accuracy"] for r in records], dtype=torch.float64)
    provenance = {
        "stage": "kernel_bank",
        "data": data_prov,
        "config": _config.to_dict(cfg),
        "training_key": cfg.training_key(),
        "n_nets": len(nets),
        "seeds": [r.get("seed") for r in records],
        "nets": [
            {k: r.get(k) for k in ("index", "seed", "test_accuracy", "steps", "lr_last")}
            for r in records
        ],
        "accuracy": {
            "mean": float(accs.mean()) if len(accs) else float("nan"),
            "std": float(accs.std()) if len(accs) > 1 else 0.0,
            "min": float(accs.min()) if len(accs) else float("nan"),
            "max": float(accs.max()) if len(accs) else float("nan"),
        },
        "norms": norms_prov,
        "dwp_lib": __version__,
    }
    return KernelBank(layers, provenance)


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
    """The bank of ``cfg``: loaded if ``out_dir/<cfg.bank_file()>`` was made with ``cfg``; else
    the nets are trained (or resumed, on ``executor``) and the bank is cut and saved. Prints
    which happened."""
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
    """``python -m dwp_lib source-nets --preset P [--out DIR]``: train, cut, save, summarise."""
    cfg = SourceNetsConfig.preset(args.preset)
    out = Path(args.out) if getattr(args, "out", None) else cfg.default_dir()
    t0 = time.perf_counter()
    bank = get_kernel_bank(cfg, out)
    print(bank.summary())
    print(f"Folder: {out}  ({time.perf_counter() - t0:.0f} s)")
    return 0
