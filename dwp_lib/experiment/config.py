"""Every knob of the experiment: one config dataclass per stage, the presets, the config key."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..bayes import BayesConfig
from ..config import MAX_SEED, ConfigValueError, Presets, check_fields, check_preset, to_dict
from ..inits import HEAD_SEED_OFFSET
from ..kernel_layers import KernelVAEConfig
from ..kernel_vae import KernelVAETrainConfig
from ..nets import LAYERS, xavier_slice_norm
from ..source_nets import SourceNetsConfig
from .executor import ExecutorConfig
from .names import INITS, PIPELINE_INITS, parse_method

#: where a kernel VAE's training slices come from (``LayerVAEConfig.bank``)
VAE_BANKS = ("pipeline", "released")

#: the largest class-balanced subset of MNIST's training digits: 10 x 5,421 (digit 5's count)
MNIST_BALANCED_MAX = 54_210
#: times a layer's Xavier slice norm that no trained slice reaches (the banks' largest: ~6)
PRUNE_NORM_LIMIT = 100.0

#: settings added after runs were committed, at their old behaviour's value: at that value they
#: are left out of every key, so old runs and caches keep theirs
ADDED_AT_DEFAULT = {"vae.conv1.bank": "pipeline", "vae.conv2.bank": "pipeline"}
ADDED_AT_DEFAULT.update({"vae.conv1.slice_scale": 1.0, "vae.conv2.slice_scale": 1.0})


@dataclass
class LayerVAEConfig:
    """The kernel VAE of one layer; ``bank``: whose slices (``slice_scale`` times) it fits."""

    arch: KernelVAEConfig
    train: KernelVAETrainConfig
    seed: int = 0
    split: str = "train"
    eval_slices: int | None = 2000
    eval_samples: int = 100
    bank: str = "pipeline"
    slice_scale: float = 1.0

    def __post_init__(self) -> None:
        check_fields(self)
        if self.split not in ("train", "all"):
            raise ValueError(f"split={self.split!r} must be 'train' or 'all'")
        if self.bank not in VAE_BANKS:
            raise ValueError(f"bank={self.bank!r}: use one of {', '.join(VAE_BANKS)}")
        if not self.slice_scale > 0:
            raise ValueError(f"slice_scale={self.slice_scale} must be > 0")


@dataclass
class KernelVAEStageConfig(Presets):
    """One kernel VAE per conv layer (``conv1``: 7x7 slices, ``conv2``: 5x5)."""

    conv1: LayerVAEConfig
    conv2: LayerVAEConfig

    def layers(self) -> dict[str, LayerVAEConfig]:
        return {"conv1": self.conv1, "conv2": self.conv2}

    @staticmethod
    def layer(name: str, k: int, arch: dict | None = None, **train) -> LayerVAEConfig:
        """A layer's VAE for k x k slices at preset ``name``, with overrides."""
        return LayerVAEConfig(
            arch=KernelVAEConfig.for_kernel(k, **(arch or {})),
            train=KernelVAETrainConfig.preset(name, **train),
            eval_slices={"tiny": 100, "book": 1000, "paper": None}[name],
            eval_samples={"tiny": 10, "book": 100, "paper": 1000}[name],
        )

    @classmethod
    def tiny(cls) -> KernelVAEStageConfig:
        small = {"hidden": 16}
        return cls(
            conv1=cls.layer("tiny", 7, small, steps=100, batch_size=64),
            conv2=cls.layer("tiny", 5, small, steps=100, batch_size=64),
        )

    @classmethod
    def book(cls) -> KernelVAEStageConfig:
        return cls(
            conv1=cls.layer("book", 7, steps=1000),
            conv2=cls.layer("book", 5, steps=1000, batch_size=256),
        )

    @classmethod
    def paper(cls) -> KernelVAEStageConfig:
        # the authors' 300 epochs, batch 128
        return cls(conv1=cls.layer("paper", 7), conv2=cls.layer("paper", 5))


@dataclass
class InitExperimentConfig(Presets):
    """Convergence of a plain CNN on MNIST from each initialisation of its conv kernels."""

    enabled: bool = True
    inits: tuple[str, ...] = PIPELINE_INITS
    seeds: tuple[int, ...] = (0, 1)
    channels: tuple[int, int] = (32, 128)
    steps: int = 200
    batch_size: int = 64
    lr: float = 1e-3
    eval_every: int = 20
    test_images: int | None = 1000
    draw_repeats: int = 5

    def __post_init__(self) -> None:
        check_fields(self)
        self.inits = tuple(self.inits)
        self.seeds = tuple(int(s) for s in self.seeds)
        self.channels = tuple(int(c) for c in self.channels)
        if bad := [i for i in self.inits if i not in INITS]:
            raise ValueError(f"unknown init(s) {bad}; valid inits are {', '.join(INITS)}")

    @classmethod
    def tiny(cls) -> InitExperimentConfig:
        return cls(
            seeds=(0,), channels=(8, 16), steps=20, batch_size=32, eval_every=10, test_images=200
        )

    @classmethod
    def book(cls) -> InitExperimentConfig:
        return cls(steps=150, eval_every=15, test_images=500)

    @classmethod
    def paper(cls) -> InitExperimentConfig:
        return cls(seeds=(0, 1, 2, 3, 4), steps=500, eval_every=10, test_images=None)


@dataclass
class GridConfig(Presets):
    """The prior comparison: a Bayesian CNN per method (``"prior:init"``, ``"dwp/normal:dwp"``
    per layer), size n and split seed. ``workers`` and ``save_models`` change no result."""

    enabled: bool = True
    sizes: tuple[int, ...] = (50, 100)
    methods: tuple[str, ...] = ("dwp:dwp", "log-uniform:xavier", "normal:xavier", "det:xavier")
    split_seeds: tuple[int, ...] = (0, 1, 2)
    steps_by_size: dict[str, int] = field(default_factory=dict)
    test_images: int | None = 2000
    test_seed: int = 0
    workers: int = 0
    save_models: bool = False

    def __post_init__(self) -> None:
        check_fields(self)
        bad = [k for k in self.steps_by_size if not str(k).isdigit() or int(k) % 10 or not int(k)]
        if bad:
            raise ConfigValueError(
                f"steps_by_size: {', '.join(map(repr, bad))} is not a size (a positive multiple "
                "of 10, e.g. steps_by_size.50=10000)"
            )
        self.sizes = tuple(int(n) for n in self.sizes)
        self.split_seeds = tuple(int(s) for s in self.split_seeds)
        self.methods = tuple(self.methods)
        self.steps_by_size = {str(k): int(v) for k, v in self.steps_by_size.items()}
        for m in self.methods:
            parse_method(m)
        if bad := [n for n in self.sizes if n < 10 or n % 10]:
            raise ValueError(f"sizes {bad}: each n must be a positive multiple of 10 (classes)")
        if max(self.sizes, default=0) > MNIST_BALANCED_MAX:
            raise ConfigValueError(
                f"sizes={list(self.sizes)}: n = {max(self.sizes):,} is more than the largest "
                f"class-balanced subset of MNIST's 60,000 training digits ({MNIST_BALANCED_MAX:,}"
                f" = 10 x 5,421 of digit 5, its smallest class); use sizes up to that"
            )

    def steps_for(self, n: int, default: int) -> int:
        return int(self.steps_by_size.get(str(n), default))

    @classmethod
    def tiny(cls) -> GridConfig:
        return cls(sizes=(50,), split_seeds=(0, 1), test_images=500)

    @classmethod
    def book(cls) -> GridConfig:
        # two processes of one thread: the build machine and Colab's free runtime have 2 cores
        return cls(test_images=1000, workers=2)

    @classmethod
    def paper(cls) -> GridConfig:
        return cls(sizes=(50, 100, 200, 500, 1000), split_seeds=tuple(range(10)), test_images=None)


#: Fields that may change between runs in one folder: they add cells, never change a cell.
EXTENDABLE = ("name", "grid.enabled", "grid.sizes", "grid.methods", "grid.split_seeds")
EXTENDABLE += ("init.enabled", "init.inits", "init.seeds", "num_threads", "grid.workers")
EXTENDABLE += ("grid.save_models", "executor")  # where units run never changes what they compute
EXTENDABLE += ("long_run",)  # a confirmation, not a result


@dataclass
class ExperimentConfig:
    """Every knob of the experiment, one dataclass per stage (``executor`` and ``long_run``, run
    even when estimated at over a year, are not in the key)."""

    name: str
    from_preset: str
    source: SourceNetsConfig
    vae: KernelVAEStageConfig
    init: InitExperimentConfig
    bayes: BayesConfig
    grid: GridConfig
    num_threads: int | None = None
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    long_run: bool = False

    def __post_init__(self) -> None:
        check_preset(self.from_preset)
        check_fields(self)
        check_prune_norms(self.source)
        check_derived_seeds(self)

    @classmethod
    def preset_config(cls, name: str) -> ExperimentConfig:
        """The ``tiny``/``book``/``paper`` preset."""
        check_preset(name)
        return cls(
            name=name,
            from_preset=name,
            source=SourceNetsConfig.preset(name),
            vae=KernelVAEStageConfig.preset(name),
            init=InitExperimentConfig.preset(name),
            bayes=BayesConfig.preset(name),
            grid=GridConfig.preset(name),
        )

    preset = preset_config

    @classmethod
    def tiny(cls) -> ExperimentConfig:
        return cls.preset_config("tiny")

    @classmethod
    def book(cls) -> ExperimentConfig:
        return cls.preset_config("book")

    @classmethod
    def paper(cls) -> ExperimentConfig:
        return cls.preset_config("paper")

    def to_dict(self) -> dict:
        return json.loads(json.dumps(to_dict(self)))

    def key(self) -> str:
        """A short hash of every field that changes a result (not the extendable ones)."""
        return key_of(self.to_dict())


def check_prune_norms(source: SourceNetsConfig) -> None:
    """Refuse, before training, a pruning threshold that no trained slice reaches."""
    for i, layer in enumerate(LAYERS):
        xavier = xavier_slice_norm(layer, source.widths)
        if source.prune_norms[i] > PRUNE_NORM_LIMIT * xavier:
            raise ConfigValueError(
                f"source.prune_norms[{i}]={source.prune_norms[i]:g}: the {layer} slices of "
                f"trained FConv{tuple(source.widths)} nets have L2 norms of a few times "
                f"{xavier:.3g} (their Xavier init), so none would pass it and the bank would be "
                f"empty; use a threshold below {PRUNE_NORM_LIMIT * xavier:.3g} (the authors' "
                "banks imply 0.39 for conv1, 0.13 for conv2)"
            )


def check_derived_seeds(cfg: ExperimentConfig) -> None:
    """Refuse a seed whose derived seeds (net ``i``: ``seed + i``, the bank splits: up to
    ``seed * 1000 + 18``, an init's head: ``seed + HEAD_SEED_OFFSET``) leave torch's range."""
    s, top = cfg.source, MAX_SEED - HEAD_SEED_OFFSET
    for path, seed, most in [
        ("source.seed", s.seed, min(MAX_SEED - s.n_nets + 1, (MAX_SEED - 18) // 1000)),
        ("grid.split_seeds", max(cfg.grid.split_seeds, default=0), top),
        ("init.seeds", max(cfg.init.seeds, default=0), top),
    ]:
        if seed > most:
            raise ConfigValueError(
                f"{path}: seed {seed} derives seeds beyond torch's range (2**63 - 1); "
                f"use seeds up to {most}"
            )


def at_default(config: dict, prefix: str = "") -> list[str]:
    """The paths of :data:`ADDED_AT_DEFAULT` that ``config`` holds at their default."""
    out = []
    for path, default in ADDED_AT_DEFAULT.items():
        if not path.startswith(prefix):
            continue
        node: Any = config
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node == default:
            out.append(path[len(prefix) :])
    return out


def key_of(config: dict) -> str:
    """:meth:`ExperimentConfig.key` of a config dict (as stored in a run's ``config.json``)."""
    d = drop_paths(config, EXTENDABLE + tuple(at_default(config)))
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def drop_paths(d: dict, paths: Iterable[str]) -> dict:
    d = copy.deepcopy(d)
    for p in paths:
        *parents, last = p.split(".")
        node = d
        for part in parents:
            node = node.get(part, {})
        node.pop(last, None)
    return d


def with_added_fields(before: dict, now: dict, preset: dict) -> dict:
    """``before`` with each field it lacks taken from ``now`` where that is the preset's value."""
    out = dict(before)
    for k, v in now.items():
        p = preset.get(k) if isinstance(preset, dict) else None
        if k not in before:
            if v == p:
                out[k] = v
        elif isinstance(v, dict) and isinstance(before[k], dict):
            out[k] = with_added_fields(before[k], v, p if isinstance(p, dict) else {})
    return out


def config_differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted paths where two config dicts differ."""
    out = []
    for k in sorted(set(a) | set(b)):
        p = f"{prefix}{k}"
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict) and not p.endswith("steps_by_size"):
            out += config_differences(va, vb, p + ".")
        elif va != vb:
            out.append(f"{p}: {va!r} -> {vb!r}")
    return out


def config_summary(cfg: ExperimentConfig) -> str:
    """A Markdown table of the settings that size each stage (for a chapter to show)."""
    s, b, g, i = cfg.source, cfg.bayes, cfg.grid, cfg.init
    v1, v2 = cfg.vae.conv1, cfg.vae.conv2

    def vae(lc: LayerVAEConfig) -> str:
        t = lc.train
        length = f"{t.steps} steps" if t.steps is not None else f"{t.epochs} epochs"
        return f"{lc.arch.describe()}; {length}, batch {t.batch_size}"

    steps = ", ".join(str(g.steps_for(n, b.steps)) for n in g.sizes)
    sizes = ", ".join(map(str, g.sizes))
    rows = {
        "source nets": f"{s.n_nets} x FConv{tuple(s.widths)}, {s.epochs} epochs, "
        f"notMNIST variant '{s.data_variant}', prune norms {tuple(s.prune_norms)}",
        "kernel VAE conv1 (7x7)": vae(v1),
        "kernel VAE conv2 (5x5)": vae(v2),
        "init experiment": f"FConv{tuple(i.channels)}, inits {', '.join(i.inits)}, "
        f"{len(i.seeds)} seed(s), {i.steps} steps of batch {i.batch_size}, Adam lr {i.lr:g}",
        "Bayesian CNN": f"FConv{tuple(b.channels)}, steps {steps} (n = {sizes}), lr {b.lr:g}, "
        f"log sigma^2 init {b.log_sigma2_init:g}, DWP slices per step {b.dwp_slices_per_step}, "
        f"{b.eval_samples}-sample ensemble",
        "prior grid": f"methods {', '.join(g.methods)}; n = {sizes}; "
        f"split seeds {', '.join(map(str, g.split_seeds))}; "
        f"{'all 10,000' if g.test_images is None else f'{g.test_images:,}'} test images",
    }
    lines = ["| stage | settings |", "|---|---|"] + [f"| {a} | {b_} |" for a, b_ in rows.items()]
    return "\n".join(lines)
