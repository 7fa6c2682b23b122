"""What a kernel bank looks like: the statistics by which our bank and the authors' differ.

A kernel VAE can only learn what its bank shows it, so before asking which source factor
(width, epochs, number of nets, the letters) closes the gap to the released prior, this module
measures the banks themselves, per layer, slice by slice (a slice is one ``k x k`` kernel):

- **norm**: the Frobenius norm ``||w||`` (quantiles 10/50/90 %, and the smallest, which shows the
  pruning threshold a bank was cut with);
- **DC share**: ``k^2 mean(w)^2 / ||w||^2``, the part of a slice's energy in its mean (1 for a
  constant slice, ``1 / k^2`` on average for white noise);
- **neighbour correlation**: the lag-1 spatial autocorrelation of the slice minus its mean,
  horizontal and vertical neighbours pooled (near 1: smooth, 0: white noise, < 0: edge-like);
- **low-frequency share**: the part of a slice's energy (its 2-D DFT) at spatial frequencies of
  radius <= 1 cycle per slice (DC and the first ring), and the **radial power spectrum**
  (energy share per DFT bin at each radius, averaged over slices) that the figure draws.

Each statistic is the mean over slices (the norm: quantiles). As a reference the same numbers
are computed for Xavier-normal slices of the target network (white noise at its init scale).

``python -m studies.bank_stats --preset book --out results/bank-stats`` writes ``stats.csv``,
``stats.md``, ``figures/bank_stats.png`` and ``provenance.json``; ``--also CONFIG`` adds the bank
of another source-net config. The released banks are the authors' (GPL-3.0,
:mod:`dwp_lib.release`): their 7x7 file pair (train and test) and their 5x5 test file.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import torch

from dwp_lib import artifacts
from studies import command_line

COLUMNS = (
    "bank",
    "layer",
    "slices",
    "norm_min",
    "norm_q10",
    "norm_median",
    "norm_q90",
    "dc_share",
    "neighbour_corr",
    "low_freq_share",
    "kept_fraction",
)
#: c_in, c_out, k of the target network FConv(32, 128): the Xavier reference's fan-in and out
TARGET = {"conv1": (1, 32, 7), "conv2": (32, 128, 5)}


def radial_radius(k: int) -> torch.Tensor:
    """The radius ``sqrt(fx^2 + fy^2)`` (cycles per slice) of each bin of a ``k x k`` DFT."""
    f = torch.fft.fftfreq(k, d=1.0 / k).abs()
    return torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2)


def power_shares(w: torch.Tensor) -> torch.Tensor:
    """Each slice's DFT power as a share of its energy: ``(N, k, k)``, each slice summing to 1
    (Parseval); an all-zero slice gets zeros."""
    p = torch.fft.fft2(w.double()).abs() ** 2
    total = p.flatten(1).sum(1).clamp_min(1e-300)
    return (p / total[:, None, None]).float()


def radial_spectrum(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(radii, share)``: at each distinct DFT radius, the share of a slice's energy in one
    DFT bin of that radius, averaged over the bins and the slices (white noise: ``1 / k^2`` at
    every radius; a smooth slice: high at small radii)."""
    k = w.shape[-1]
    r = radial_radius(k).flatten()
    shares = power_shares(w).flatten(1).mean(0)
    radii = torch.unique(torch.round(r, decimals=6))
    out = torch.stack([shares[torch.isclose(r, x, atol=1e-5)].mean() for x in radii])
    return radii, out


def neighbour_correlation(w: torch.Tensor) -> torch.Tensor:
    """Per slice, the lag-1 autocorrelation of ``w - mean(w)`` over horizontal and vertical
    neighbour pairs pooled: ``sum(a * b) / sqrt(sum(a^2) sum(b^2))``; 0 for a constant slice."""
    c = w.double() - w.double().mean(dim=(-2, -1), keepdim=True)
    pairs = [(c[:, :, :-1], c[:, :, 1:]), (c[:, :-1, :], c[:, 1:, :])]
    num = sum((a * b).flatten(1).sum(1) for a, b in pairs)
    den = torch.sqrt(
        sum((a * a).flatten(1).sum(1) for a, _ in pairs)
        * sum((b * b).flatten(1).sum(1) for _, b in pairs)
    )
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(num)).float()


def slice_statistics(w: torch.Tensor) -> dict[str, float]:
    """The module's statistics of slices ``w`` ``(N, k, k)``, as plain floats."""
    if w.dim() != 3 or w.shape[-1] != w.shape[-2] or len(w) == 0:
        raise ValueError(f"expected slices (N, k, k) with N >= 1, got {tuple(w.shape)}")
    if not torch.isfinite(w).all():
        raise ValueError("the slices hold NaN or inf values")
    k = w.shape[-1]
    norms = w.double().flatten(1).norm(dim=1)
    q = torch.quantile(norms, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
    energy = (w.double() ** 2).flatten(1).sum(1)
    dc = k * k * w.double().mean(dim=(-2, -1)) ** 2 / energy.clamp_min(1e-300)
    low = (radial_radius(k) <= 1.0 + 1e-9).float()
    low_share = (power_shares(w) * low).flatten(1).sum(1)
    return {
        "slices": len(w),
        "norm_min": float(norms.min()),
        "norm_q10": float(q[0]),
        "norm_median": float(q[1]),
        "norm_q90": float(q[2]),
        "dc_share": float(dc.mean()),
        "neighbour_corr": float(neighbour_correlation(w).mean()),
        "low_freq_share": float(low_share.mean()),
    }


def xavier_reference(layer: str, n: int = 4096, seed: int = 0) -> torch.Tensor:
    """``n`` slices of a Xavier-normal init of the target network's ``layer`` (white noise)."""
    from dwp_lib.implicit_prior import xavier_slices

    c_in, c_out, k = TARGET[layer]
    return xavier_slices(n, k, c_in, c_out, seed)


def bank_rows(
    banks: Mapping[str, Mapping[str, torch.Tensor]],
    kept: Mapping[str, Mapping[str, float | None]] | None = None,
) -> list[dict]:
    """One row of statistics per bank and layer (``banks``: ``{bank: {layer: slices}}``;
    ``kept``: the share of each bank's slices its pruning kept, where known)."""
    rows = []
    for name, layers in banks.items():
        for layer, w in layers.items():
            stats = slice_statistics(w)
            share = (kept or {}).get(name, {}).get(layer)
            rows.append({"bank": name, "layer": layer, **stats, "kept_fraction": share})
    return rows


def percent(share: float) -> str:
    """A share as a percentage: whole percents, and two decimals below 1% (a sparse bank keeps
    a fraction of a percent of its 5x5 slices, which "0%" would hide)."""
    return f"{share:.0%}" if share >= 0.01 or share == 0 else f"{100 * share:.2f}%"


def stats_markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table, one line per layer and bank."""
    head = (
        "| layer | bank | slices | kept | norm min / q10 / median / q90 | DC share "
        "| neighbour corr. | low-freq. share |"
    )
    lines = [head, "|" + "---|" * 8]
    for r in sorted(rows, key=lambda r: (r["layer"], r["bank"] != "Xavier init", r["bank"])):
        kept = "" if r["kept_fraction"] in (None, "") else percent(float(r["kept_fraction"]))
        norms = " / ".join(
            f"{r[c]:.3f}" for c in ("norm_min", "norm_q10", "norm_median", "norm_q90")
        )
        lines.append(
            f"| {r['layer']} | {r['bank']} | {r['slices']:,} | {kept} | {norms} "
            f"| {r['dc_share']:.3f} | {r['neighbour_corr']:.3f} | {r['low_freq_share']:.3f} |"
        )
    return "\n".join(lines)


def plot_bank_stats(banks: Mapping[str, Mapping[str, torch.Tensor]]):
    """Per layer (rows): the distribution of slice norms, the radial power spectrum and the
    distribution of neighbour correlations of every bank (one colour each)."""
    import matplotlib.pyplot as plt

    layers = list(next(iter(banks.values())))
    fig, axes = plt.subplots(len(layers), 3, figsize=(12, 3.3 * len(layers)), squeeze=False)
    for row, layer in zip(axes, layers, strict=True):
        k = next(iter(banks.values()))[layer].shape[-1]
        for name, per_layer in banks.items():
            w = per_layer[layer]
            norms = w.flatten(1).norm(dim=1).numpy()
            top = max(float(v[layer].flatten(1).norm(dim=1).quantile(0.99)) for v in banks.values())
            row[0].hist(norms, bins=60, range=(0, top), density=True, histtype="step", label=name)
            radii, share = radial_spectrum(w)
            row[1].plot(radii.numpy(), share.numpy(), marker="o", ms=3, label=name)
            corr = neighbour_correlation(w).numpy()
            row[2].hist(corr, bins=50, range=(-1, 1), density=True, histtype="step", label=name)
        row[0].set(xlabel="slice norm ||w||", ylabel="density", title=f"{layer} ({k}x{k}): norms")
        row[1].set(
            xlabel="spatial frequency (cycles per slice)",
            ylabel=f"energy share per DFT bin (noise: 1/{k * k})",
            title=f"{layer}: radial power spectrum",
            yscale="log",
        )
        row[2].set(
            xlabel="lag-1 neighbour correlation",
            ylabel="density",
            title=f"{layer}: smoothness",
        )
        row[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def cli(args: argparse.Namespace) -> int:
    """``python -m studies.bank_stats``: our banks beside the released ones (see the module)."""
    from dwp_lib import release
    from dwp_lib.data import DataUnavailableError
    from dwp_lib.experiment import (
        Experiment,
        ExperimentError,
        append_row,
        config_from,
        with_notmnist,
    )

    out = Path(args.out)
    t0 = time.perf_counter()
    try:
        variant = getattr(args, "notmnist", None)
        settings = with_notmnist(variant, getattr(args, "set", None) or [])
        label = (
            args.preset if variant in (None, "synthetic") else f"{args.preset}, notMNIST {variant}"
        )
        configs = {f"ours ({label})": config_from(args.preset, overrides=settings)}
        for path in getattr(args, "also", None) or []:
            other = config_from(None, path, settings)
            configs[f"ours ({other.name})"] = other
        exps = {name: Experiment(c, None, verbose=True) for name, c in configs.items()}
        ours = {name: e.kernel_bank() for name, e in exps.items()}
        rbank = release.load_released_bank()
    except (
        ExperimentError,
        release.ReleaseUnavailableError,
        DataUnavailableError,
        artifacts.ArtifactError,
        ValueError,
    ) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    banks: dict[str, dict[str, torch.Tensor]] = {}
    kept: dict[str, dict[str, float | None]] = {}
    for name, bank in ours.items():
        banks[name] = {layer: bank.slices(layer, "all") for layer in TARGET}
        kept[name] = {layer: _kept_share(bank, layer) for layer in TARGET}
    banks["released"] = {layer: torch.cat(list(rbank[layer].values())) for layer in TARGET}
    banks["Xavier init"] = {layer: xavier_reference(layer, seed=args.seed) for layer in TARGET}
    rows = bank_rows(banks, kept)
    out.mkdir(parents=True, exist_ok=True)
    with artifacts.atomic_path(out / "stats.csv") as tmp:
        for r in rows:
            append_row(tmp, r, COLUMNS)
    table = stats_markdown(rows)
    artifacts.atomic_write_bytes(out / "stats.md", (table + "\n").encode())
    (out / "figures").mkdir(exist_ok=True)
    import matplotlib.pyplot as plt

    fig = plot_bank_stats(banks)
    with artifacts.atomic_path(out / "figures" / "bank_stats.png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    prov = {
        "command": command_line("studies.bank_stats"),
        "preset": args.preset,
        "seed": args.seed,
        "ours": {
            name: {
                "bank_sha256": exps[name].bank_sha(),
                "bank_data": bank.provenance.get("data", {}),
                "source": exps[name].cfg.to_dict()["source"],
            }
            for name, bank in ours.items()
        },
        "released": {
            "files": {layer: sorted(rbank[layer]) for layer in TARGET},
            **release.provenance(),
        },
        "xavier_reference": {
            layer: {"c_in_c_out_k": TARGET[layer], "slices": 4096} for layer in TARGET
        },
        "seconds": time.perf_counter() - t0,
        "environment": artifacts.environment_record(),
    }
    artifacts.atomic_write_json(out / "provenance.json", prov)
    print(table)
    print(release.AUTHORS_RELEASE.notice)
    print(f"Statistics: {out / 'stats.csv'}")
    return 0


def _kept_share(bank, layer: str) -> float | None:
    """The share of a layer's slices that the bank's pruning kept (None if not recorded)."""
    st = bank.provenance.get("norms", {}).get(layer, {})
    kept = st.get("after_pruning", {}).get("count")
    total = st.get("before_pruning", {}).get("count")
    return kept / total if kept is not None and total else None
