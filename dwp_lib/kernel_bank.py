"""The kernel bank: source nets' kernels cut into k x k slices, pruned by norm, split train/test."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from . import __version__
from . import artifacts as _artifacts
from . import config as _config
from .nets import LAYERS, FConv, xavier_slice_norm
from .source_nets import NET_FILE, SourceNetsConfig, load_source_nets

#: What :meth:`KernelBank.slices` can return.
SPLITS: tuple[str, ...] = ("train", "test", "all", "all_unpruned", "pruned")
_SPLIT_CODE = {"train": 0, "test": 1, "pruned": 2}


def norm_stats(norms: torch.Tensor) -> dict[str, float]:
    """Count, mean, quantiles (1, 10, 50, 90, 99 %) of slice norms, as plain floats."""
    if norms.numel() == 0:
        return {"count": 0}
    levels = torch.tensor([0.01, 0.1, 0.5, 0.9, 0.99], dtype=torch.float64)
    q = torch.quantile(norms.double(), levels)
    stats = {"count": int(norms.numel()), "mean": float(norms.mean())}
    stats.update(zip(("q01", "q10", "median", "q90", "q99"), map(float, q), strict=True))
    return {**stats, "max": float(norms.max())}


#: provenance entries of a bank that differ between two builds of the same bank
_VOLATILE = ("seconds_training_this_run", "sha256", "file")


class KernelBank:
    """Per layer: ``slices`` float32 ``(M, k, k)`` (the kept ones unless ``store_unpruned``),
    ``split`` int8 ``(M,)`` (0 train, 1 test, 2 pruned), ``net``, ``out_channel``, ``in_channel``
    (where each came from); ``provenance`` says how the bank was made."""

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
        """Slices of ``layer`` in ``split`` (see :data:`SPLITS`) as float32 ``(N, k, k)``."""
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
        """A conv weight of slices drawn with replacement from the bank: the "filters" init."""
        pool = self.slices(layer, split)
        if len(pool) == 0:
            raise ValueError(f"the bank has no {layer} slices in split {split!r}")
        idx = torch.randint(len(pool), (c_out * c_in,), generator=generator)
        return pool[idx].reshape(c_out, c_in, *pool.shape[-2:]).clone()

    def counts(self) -> dict[str, dict[str, int]]:
        splits = [s for s in SPLITS if self.has_unpruned or s not in ("all_unpruned", "pruned")]
        return {
            layer: {s: int(self._mask(layer, s).sum()) for s in splits} for layer in self.layers
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
            b, a, c = st["before_pruning"], st["after_pruning"], self.counts()[layer]
            lines.append(
                f"  {layer} {k}x{k}: {a.get('count', 0):,} kept of {b.get('count', 0):,} "
                f"(threshold {st['threshold']}); train {c['train']:,}, test {c['test']:,}; "
                f"median norm {b.get('median', 0):.3f} before / {a.get('median', 0):.3f} after "
                f"pruning (Xavier init ~{st['xavier_init']:.3f})"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        c = self.counts()
        parts = ", ".join(f"{k}: {c[k]['train']} train / {c[k]['test']} test" for k in c)
        return f"KernelBank({parts})"

    def save(self, path: str | Path) -> str:
        """Write the bank; return its SHA-256 (timings go in the sidecar, not in the file)."""
        content = {k: v for k, v in self.provenance.items() if k not in _VOLATILE}
        return _artifacts.save_artifact(
            path, {"layers": self.layers, "provenance": content}, self.provenance
        )

    @classmethod
    def load(cls, path: str | Path) -> KernelBank:
        """Read a bank written by :meth:`save` (a changed file raises ``CorruptArtifactError``)."""
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
        n_test = max(round(cfg.test_fraction * n), int(cfg.test_fraction > 0))  # >= 1 if asked
        if n_test >= n:
            raise ValueError(
                f"split_by='net' with {n} nets cannot hold out {n_test}; train more nets or "
                "use split_by='slice'"
            )
        test_nets = torch.randperm(n, generator=g)[:n_test]
        is_test = torch.isin(net_of, test_nets)
        train, test = kept & ~is_test, kept & is_test
    else:
        idx = torch.nonzero(kept).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_test = round(cfg.test_fraction * len(idx))
        train, test = idx[n_test:], idx[:n_test]
    code[train] = _SPLIT_CODE["train"]
    code[test] = _SPLIT_CODE["test"]
    return code


def build_kernel_bank(
    source: Sequence[FConv] | str | Path,
    cfg: SourceNetsConfig,
    records: Sequence[dict] | None = None,
) -> KernelBank:
    """The bank of the kernels of ``source`` (nets, or their folder); ``records`` go in it."""
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
            parts.append(w.detach().reshape(-1, k, k).float().cpu())  # slice o * c_in + i
            net_of.append(torch.full((c_out * c_in,), n_i, dtype=torch.int32))
            outs.append(torch.arange(c_out, dtype=torch.int32).repeat_interleave(c_in))
            ins.append(torch.arange(c_in, dtype=torch.int32).repeat(c_out))
        slices, net_idx = torch.cat(parts), torch.cat(net_of)
        norms = slices.flatten(1).norm(dim=1)
        threshold = cfg.prune_norms[li]
        kept = norms >= threshold
        if not kept.any():
            raise _config.ConfigValueError(
                f"{layer}: no slice has an L2 norm >= the pruning threshold {threshold} (the "
                f"largest is {norms.max():.3g}); lower cfg.prune_norms or train the nets longer"
            )
        tensors = {
            "slices": slices,
            "split": _split_codes(kept, net_idx, cfg, li),
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
            "rms_per_weight_after": float(slices[kept].pow(2).mean().sqrt()),
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
