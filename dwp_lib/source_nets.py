"""Source networks: the FConv nets trained on notMNIST whose kernels make the kernel bank."""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from . import artifacts as _artifacts
from . import config as _config
from .config import Presets
from .device import default_device, seed_everything
from .nets import FConv, accuracy, conv_l2, xavier_normal_init
from .progress import progress
from .train import check_finite, linear_decay, take_step

DATA_LABELS = {
    "synthetic": "notMNIST-style (synthetic)",
    "small": "notMNIST (small, real)",
    "large": "notMNIST (large, real)",
    "sample": "real notMNIST sample (10,000 images of notMNIST_small, not split by font)",
}
NET_FILE = "net_{:03d}.pt"
#: the bank's file in the nets' folder: banks cut differently from the same nets live side by side
BANK_FILE = "kernel_bank-{}.pt"


@dataclass(frozen=True)
class SourceNetsConfig(Presets):
    """Every knob of the source-net stage; the training fields name the checkpoint folder. Net
    ``i`` is seeded with ``seed + i``; ``workers``: CPU processes (None: one per core, none on a
    GPU; 0: this process), each with ``num_threads`` threads (results depend on the count)."""

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
        _config.check_fields(self)  # every count, rate and threshold; the text fields here
        problems = []
        if self.precision not in ("fp32", "bf16"):
            problems.append(f"precision={self.precision!r} must be 'fp32' or 'bf16'")
        if self.split_by not in ("slice", "net"):
            problems.append(f"split_by={self.split_by!r} must be 'slice' or 'net'")
        if self.data_variant not in DATA_LABELS:
            problems.append(f"data_variant={self.data_variant!r} must be in {list(DATA_LABELS)}")
        if problems:
            raise ValueError("SourceNetsConfig: " + "; ".join(problems))
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "prune_norms", tuple(float(t) for t in self.prune_norms))

    @classmethod
    def tiny(cls) -> SourceNetsConfig:
        """Seconds: four narrow nets on 1,000 images, in this process, one thread."""
        return cls(
            n_nets=4,
            widths=(8, 16),
            epochs=2,
            batch_size=32,
            data_preset="tiny",
            train_images=1000,
            workers=0,  # processes take seconds to start; these nets train in less
            num_threads=1,  # too small to gain from threads
        )

    @classmethod
    def book(cls) -> SourceNetsConfig:
        """About 3 minutes on 2 CPU cores: 8 x FConv(32, 64), 3 epochs of batch 64 at lr 3e-3
        (at 1e-3 the kernels stay near their init; at 1e-2 the L2 term kills most 7x7 channels)."""
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
            store_unpruned=False,
        )

    # fields that change a trained net; the checkpoint folder is named after them
    _TRAINING_FIELDS = ("widths", "epochs", "batch_size", "lr", "l2", "seed", "data_variant")
    _TRAINING_FIELDS += ("data_preset", "train_images", "precision")

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
        blob = json.dumps(self.bank_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def bank_file(self) -> str:
        """``kernel_bank-<bank_key>.pt``."""
        return BANK_FILE.format(self.bank_key())

    def default_dir(self) -> Path:
        """``$DWP_CACHE/source_nets/<variant>-<training_key>``."""
        return _artifacts.cache_dir("source_nets", f"{self.data_variant}-{self.training_key()}")


@dataclass
class SourceData:
    """Training and test tensors of the source task, and where they came from."""

    x_train: torch.Tensor  # float32 (N, 1, 28, 28) in [0, 1]
    y_train: torch.Tensor  # int64 (N,)
    x_test: torch.Tensor
    y_test: torch.Tensor
    provenance: dict


def load_source_data(cfg: SourceNetsConfig) -> SourceData:
    """notMNIST (``cfg.data_variant``) through :func:`dwp_lib.data.load_notmnist`."""
    from .data import load_notmnist

    kwargs = {}
    if cfg.data_variant == "synthetic":
        from .data.synthetic import SyntheticConfig

        kwargs["config"] = SyntheticConfig.preset(cfg.data_preset)
    train = load_notmnist("train", variant=cfg.data_variant, **kwargs)
    test = load_notmnist("test", variant=cfg.data_variant, **kwargs)
    label = DATA_LABELS[cfg.data_variant]
    prov = {"label": label, "train": dict(train.provenance), "test": dict(test.provenance)}
    return SourceData(train.float_images(), train.labels, test.float_images(), test.labels, prov)


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
    """One Adam step on ``mean cross-entropy + l2 * conv_l2(net)``; returns (data loss, logits)."""
    with torch.autocast(xb.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
        logits = net(xb)
    data_loss = F.cross_entropy(logits.float(), yb)
    take_step(opt, data_loss + cfg.l2 * conv_l2(net))
    return data_loss.detach(), logits.detach()


def memory_format(cfg: SourceNetsConfig) -> torch.memory_format:
    return torch.channels_last if cfg.channels_last else torch.contiguous_format


def train_one_net(
    cfg: SourceNetsConfig,
    index: int,
    data: SourceData,
    device: torch.device | str | None = None,
    show_progress: bool = True,
    on_epoch: Callable[[int, int, FConv, float], object] | None = None,
    checkpoint: str | Path | None = None,
) -> tuple[FConv, dict]:
    """Train net ``index``; return it (on the CPU) and its record. After each epoch
    ``on_epoch(epoch, steps, net, mean train loss)`` may measure the net, then the whole training
    state goes to the file ``checkpoint``, from which a later call resumes (to the same bits)."""
    device = torch.device(device) if device is not None else default_device()
    seed = cfg.seed + index
    seed_everything(seed)
    net = new_source_net(cfg, index)
    init = {k: v.clone() for k, v in net.kernels().items()}
    memory = memory_format(cfg)
    net = net.to(device, memory_format=memory)
    x, y = data.x_train, data.y_train
    if cfg.train_images is not None and cfg.train_images < len(y):  # a seeded subset
        idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(cfg.seed))
        x, y = x[idx[: cfg.train_images]], y[idx[: cfg.train_images]]
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
    state, done = {"net": net, "adam": opt, "schedule": sched}, 0
    saved, slot = latest_checkpoint(checkpoint, cfg, index) if checkpoint else (None, None)
    if saved is not None:
        for key, part in state.items():
            part.load_state_dict(saved[key])
        order.set_state(saved["order"])
        done, lrs, run_loss, run_correct = (saved[k] for k in ("epochs", "lrs", "loss", "correct"))
        t0, cpu0 = t0 - saved["clock"][0], cpu0 - saved["clock"][1]
    try:
        bar = progress(total=total, desc=f"net {index}", position=1, disable=not show_progress)
        bar.update(len(lrs))  # the steps of a resumed run
        for epoch in range(done, cfg.epochs):
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
            check_finite(run_loss.item(), f"source net {index}, epoch {epoch}", len(lrs))
            bar.set_postfix(loss=f"{run_loss.item() / n:.3f}")
            if on_epoch is not None:
                on_epoch(epoch, len(lrs), net, run_loss.item() / n)
            if checkpoint is not None:
                clock = (time.perf_counter() - t0, time.process_time() - cpu0)
                saved = {key: part.state_dict() for key, part in state.items()} | {"clock": clock}
                saved |= {"order": order.get_state(), "epochs": epoch + 1, "lrs": lrs}
                saved |= {"loss": run_loss, "correct": run_correct}
                prov = {"training": cfg.training_dict(), "index": index, "epochs_done": epoch + 1}
                a, b = checkpoint_slots(checkpoint)
                slot = b if slot == a else a  # never the newest: a kill while writing keeps it
                _artifacts.save_artifact(slot, saved, prov)
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


def checkpoint_slots(path: str | Path) -> tuple[Path, Path]:
    """The two files a checkpoint alternates between: ``path`` and ``NAME.b.pt`` beside it."""
    path = Path(path)
    return path, path.with_name(f"{path.stem}.b{path.suffix}")


def latest_checkpoint(
    path: str | Path, cfg: SourceNetsConfig, index: int
) -> tuple[dict | None, Path | None]:
    """The newest intact training state of ``path``'s slots and its slot, or ``(None, None)``.
    A slot left incomplete by a run killed while writing it is named and passed over."""
    best: tuple[int, dict, Path] | None = None
    for slot in checkpoint_slots(path):
        if not slot.exists() and not _artifacts.sidecar_path(slot).exists():
            continue
        if not _artifacts.is_valid_artifact(slot):
            print(f"{_artifacts.shown(slot)}: incomplete (a run was stopped while writing it); "
                  "passed over")  # fmt: skip
            continue
        saved = read_checkpoint(slot, cfg, index)
        if best is None or saved["epochs"] > best[0]:
            best = (saved["epochs"], saved, slot)
    return (None, None) if best is None else (best[1], best[2])


def checkpoint_epochs(path: str | Path) -> int:
    """Epochs done in the newest intact slot of the checkpoint ``path`` (0 if none)."""
    done = [
        _artifacts.read_record(slot)["provenance"]["epochs_done"]
        for slot in checkpoint_slots(path)
        if _artifacts.is_valid_artifact(slot)
    ]
    return max(done, default=0)


def delete_checkpoint(path: str | Path) -> None:
    """Remove both slots of the checkpoint ``path`` and their records."""
    for slot in checkpoint_slots(path):
        for f in (slot, _artifacts.sidecar_path(slot)):
            f.unlink(missing_ok=True)


def read_checkpoint(path: str | Path, cfg: SourceNetsConfig, index: int) -> dict:
    """The training state :func:`train_one_net` saved at ``path``, if it trains net ``index`` of
    ``cfg`` (else an :class:`~dwp_lib.artifacts.ArtifactError`)."""
    state, record = _artifacts.load_artifact(path)
    prov = record.get("provenance", {})
    if (prov.get("training"), prov.get("index")) != (cfg.training_dict(), index):
        raise _artifacts.ArtifactError(
            f"{_artifacts.shown(path)} trains net {prov.get('index')} with {prov.get('training')}, "
            f"not net {index} with {cfg.training_dict()}; delete it, or name another checkpoint"
        )
    return state


def net_provenance(cfg: SourceNetsConfig, record: dict, data: SourceData) -> dict:
    return {
        "stage": "source_nets",
        "training": cfg.training_dict(),
        "training_key": cfg.training_key(),
        "record": record,
        "data": data.provenance,
    }


def read_net_record(path: Path, cfg: SourceNetsConfig) -> dict:
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


def train_and_save_net(
    cfg: SourceNetsConfig, index: int, data: SourceData, device: torch.device, out: Path
) -> dict:
    """Train net ``index`` into ``out``, checkpointed after every epoch (a stopped stage resumes
    the net where it was, to the same bits); the checkpoint goes once the net is saved."""
    path, ckpt = out / NET_FILE.format(index), out / f"training-{NET_FILE.format(index)}"
    net, record = train_one_net(cfg, index, data, device, show_progress=False, checkpoint=ckpt)
    state = {"state_dict": net.state_dict(), "widths": cfg.widths}
    _artifacts.save_artifact(path, state, net_provenance(cfg, record, data))
    delete_checkpoint(ckpt)
    return dict(record, path=str(path), resumed=False)


def load_source_nets(
    out_dir: str | Path, cfg: SourceNetsConfig | None = None
) -> tuple[list[FConv], list[dict]]:
    """The saved nets of ``out_dir`` (each verified) and their records, by index: with ``cfg``,
    nets ``0 .. cfg.n_nets - 1`` trained with its settings; without, every ``net_*.pt``."""
    out = Path(out_dir)
    if cfg is not None:
        paths = [out / NET_FILE.format(i) for i in range(cfg.n_nets)]
        if missing := [p.name for p in paths if not p.exists()]:
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
            read_net_record(path, cfg)  # raises with the explanation
        net = FConv(*obj["widths"])
        net.load_state_dict(obj["state_dict"])
        nets.append(net)
        records.append(dict(rec["provenance"]["record"], path=str(path)))
    return nets, records
