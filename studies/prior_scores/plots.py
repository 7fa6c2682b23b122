"""Figures of the prior scores: each prior's samples beside its bank, and log p(w) per kind of slice."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch

from dwp_lib.plots.experiment import real_and_sampled, slice_panel


@torch.no_grad()
def plot_prior_samples(priors: dict, banks: dict, n: int = 16, ncols: int = 8, seed: int = 0):
    """Per layer (rows) and prior (column pairs): slices of the prior's own bank next to samples
    of its kernel VAE (decoder means at z ~ N(0, I)). ``priors``: ``{name: {layer: KernelVAE}}``;
    ``banks``: ``{name: {layer: slices (N, k, k)}}``. Each slice is scaled to its own largest
    |weight|. Returns the Figure."""
    names = list(priors)
    layers = list(next(iter(priors.values())))
    fig, axes = plt.subplots(
        len(layers), 2 * len(names), figsize=(4.2 * len(names), 0.9 + 1.1 * len(layers)),
        squeeze=False,
    )  # fmt: skip
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="0.85")
    for i, layer in enumerate(layers):
        for j, name in enumerate(names):
            g = torch.Generator().manual_seed(seed)
            real, fake = real_and_sampled(banks[name][layer], priors[name][layer], n, g)
            k = real.shape[-1]
            for ax, sl, what in ((axes[i, 2 * j], real, "bank"), (axes[i, 2 * j + 1], fake, "VAE")):
                slice_panel(ax, sl, f"{name} {what}, {layer} ({k}x{k})", cmap, ncols, 9)
    fig.tight_layout()
    return fig


def plot_prior_scores(rows, value: str = "log_p_iw"):
    """Mean log p(w) per slice (importance-weighted) of each kind of slice under each prior, one
    panel per layer (``rows`` of :func:`studies.prior_scores.prior_scores.score_priors`). The x-axis is
    symmetric-log: noise scores thousands of nats below real kernels. Returns the Figure."""
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    priors = list(dict.fromkeys(r["prior"] for r in rows))
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    fig, axes = plt.subplots(1, len(layers), figsize=(5.2 * len(layers), 0.8 + 0.55 * len(kinds)),
                             squeeze=False, sharey=True)  # fmt: skip
    height = 0.8 / len(priors)
    by = {(r["prior"], r["layer"], r["kind"]): float(r[value]) for r in rows}
    for ax, layer in zip(axes[0], layers, strict=True):
        for j, prior in enumerate(priors):
            vals = [by.get((prior, layer, k), float("nan")) for k in kinds]
            pos = [i + (j - (len(priors) - 1) / 2) * height for i in range(len(kinds))]
            ax.barh(pos, vals, height=height * 0.95, label=f"{prior} prior")
        ax.set_xscale("symlog", linthresh=10)
        ax.axvline(0, color="0.3", lw=0.8)
        ax.set_yticks(range(len(kinds)), kinds)
        ax.invert_yaxis()
        ax.set_title(f"{layer}: mean log p(w) per slice (nats)", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[0, -1].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig
