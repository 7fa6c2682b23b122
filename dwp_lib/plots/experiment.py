"""Chapter 5: kernel examples beside kernel-VAE samples, and the filters' latent space."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from .common import finish, slice_grid

__all__ = ["plot_kernel_examples", "plot_latent_space", "plot_paired_effects", "real_and_sampled"]
__all__ += ["slice_panel"]


def plot_kernel_examples(bank, kernel_vaes: dict, n: int = 24, ncols: int = 8, seed: int = 0):
    """Per layer, source slices beside kernel-VAE samples (the dwp init), each at its own scale."""
    layers = [layer for layer in bank.layers if layer in kernel_vaes]
    fig, axes = plt.subplots(len(layers), 2, figsize=(8.4, 1.5 + 1.35 * len(layers)), squeeze=False)
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="0.85")
    g = torch.Generator().manual_seed(seed)
    for row, layer in zip(axes, layers, strict=True):
        real, fake = real_and_sampled(bank.slices(layer, "train"), kernel_vaes[layer], n, g)
        k = real.shape[-1]
        for ax, sl, what in ((row[0], real, "source slices"), (row[1], fake, "kernel VAE samples")):
            slice_panel(ax, sl, f"{layer} ({k}x{k}): {what}", cmap, ncols, 10)
    return finish(fig)


def real_and_sampled(bank_slices, vae, n: int, g: torch.Generator):
    """n random slices of a bank and n samples of a kernel VAE (decoder means at z ~ N(0, I))."""
    real = bank_slices[torch.randperm(len(bank_slices), generator=g)[:n]]
    return real, vae.sample(n, generator=g).cpu()


def slice_panel(ax, slices, title: str, cmap, ncols: int, fontsize: int) -> None:
    """Slices tiled on ``ax``, each scaled to its own largest |weight|."""
    ax.imshow(slice_grid(slices, ncols=ncols), cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=fontsize)
    ax.axis("off")


@torch.no_grad()
def plot_latent_space(bank, kernel_vaes: dict, max_points: int = 3000, seed: int = 0):
    """Encoder means E[z | w] of the bank's slices per layer, coloured by norm (2 widest dims)."""
    layers = [layer for layer in bank.layers if layer in kernel_vaes]
    fig, axes = plt.subplots(1, len(layers), figsize=(4.6 * len(layers), 3.8), squeeze=False)
    g = torch.Generator().manual_seed(seed)
    for ax, layer in zip(axes[0], layers, strict=True):
        vae = kernel_vaes[layer]
        s = bank.slices(layer, "train")
        s = s[torch.randperm(len(s), generator=g)[:max_points]]
        device = next(vae.parameters()).device
        mu = torch.cat([vae.encode(c.to(device))[0].cpu() for c in s.split(1024)])
        dims = mu.std(0).argsort(descending=True)[:2].sort().values.tolist()
        if len(dims) == 1:
            dims = dims * 2
        norms = s.flatten(1).norm(dim=1).numpy()
        sc = ax.scatter(mu[:, dims[0]], mu[:, dims[1]], c=norms, s=4, cmap="viridis", alpha=0.7)
        fig.colorbar(sc, ax=ax, label="slice L2 norm")
        ax.set(xlabel=f"z{dims[0] + 1}", ylabel=f"z{dims[1] + 1}")
        ax.set_title(f"{layer}: {len(s):,} slices, latent dim {vae.latent_dim}", fontsize=10)
    return finish(fig)


def plot_paired_effects(effects, title: str = "", ax=None):
    """Paired differences in accuracy points, one row per comparison, top to bottom (``effects``:
    :func:`dwp_lib.conclusions.paired_effect` dicts): the mean, 2 SE bars, the seeds as dots."""
    n = len(effects)
    fig, ax = plt.subplots(figsize=(7.0, 0.6 * n + 1.2)) if ax is None else (ax.figure, ax)
    y = np.arange(n)[::-1]
    for yi, e in zip(y, effects, strict=True):
        color = "C2" if e["mean"] > 0 else "C3"
        se = 0.0 if np.isnan(e["se"]) else e["se"]
        ax.errorbar(e["mean"], yi, xerr=2 * se, fmt="o", color=color, capsize=4, ms=6)
        ax.scatter(e["diffs"], [yi] * len(e["diffs"]), s=14, color=color, alpha=0.4, lw=0)
        ax.annotate(f"{e['mean']:+.1f}", (e["mean"], yi), xytext=(0, 7),
                    textcoords="offset points", ha="center", fontsize=8)  # fmt: skip
    ax.axvline(0, color="0.3", lw=1)
    ax.set_yticks(y, [f"{e['label']} ({len(e['diffs'])} seeds)" for e in effects], fontsize=8)
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlabel("accuracy difference (points), paired by split seed; bar: 2 SE")
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    return finish(fig)
