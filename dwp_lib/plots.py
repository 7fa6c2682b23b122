"""The figures of the book, one function per figure, each returning a matplotlib Figure.

Functions take plain tensors or result records (never train anything), so the HTML book, the
CLI and the tests draw the same pictures. Sections follow the chapters.
"""

from __future__ import annotations

import matplotlib.pyplot as plt  # noqa: F401  (used by the sections below)
import numpy as np  # noqa: F401
import torch  # noqa: F401

# --- data (contact sheets) -------------------------------------------------------------------


def dataset_title(ds) -> str:
    """What a figure of ``ds`` is called: "notMNIST-style (synthetic)" for the rendered set,
    never plain "notMNIST"; the real sets are named with their variant."""
    p = ds.provenance
    if p.get("variant") == "synthetic":
        name = "notMNIST-style (synthetic)"
    elif p.get("dataset") == "notMNIST":
        name = f"notMNIST ({p.get('variant', 'real')})"
    else:
        name = str(p.get("dataset", "images"))
    return f"{name}, {p.get('split', '')} split: {len(ds):,} images".replace(",  split", "")


def contact_sheet(ds, per_class: int = 10, seed: int = 0, title: str | None = None, ax=None):
    """A grid of samples of an :class:`~dwp_lib.data.ImageSet`: one row per class.

    Images are drawn as stored (0 = black background, 255 = white ink). The title names the data
    set from its provenance (see :func:`dataset_title`). Returns the Figure.
    """
    labels = ds.labels.numpy()
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(ds.num_classes):
        idx = np.flatnonzero(labels == c)
        pick = rng.choice(idx, size=min(per_class, len(idx)), replace=False)
        row = np.zeros((28, 28 * per_class), np.uint8)
        for j, i in enumerate(pick):
            row[:, 28 * j : 28 * (j + 1)] = ds.images[i].numpy()
        rows.append(row)
    grid = np.concatenate(rows, 0)
    if ax is None:
        fig, ax = plt.subplots(figsize=(0.45 * per_class + 0.6, 0.45 * ds.num_classes + 0.6))
    else:
        fig = ax.figure
    ax.imshow(grid, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_yticks(14 + 28 * np.arange(ds.num_classes), ds.classes)
    ax.set_xticks([])
    ax.tick_params(length=0)
    ax.set_title(title if title is not None else dataset_title(ds), fontsize=10)
    return fig


# --- chapter 1: variational inference --------------------------------------------------------

# --- chapter 2: the reparametrisation trick --------------------------------------------------

# --- chapter 3: the VAE and the kernel VAE ---------------------------------------------------

# --- source nets and the kernel bank ---------------------------------------------------------


def slice_grid(slices, ncols: int = 8, pad: int = 1, scale: str = "each") -> np.ndarray:
    """Tile ``slices`` ``(N, k, k)`` into one image with a NaN gutter (drawn as background).

    ``scale="each"`` divides every slice by its own largest |weight| (shows shapes);
    ``"shared"`` keeps the weights as they are (shows sizes too).
    """
    s = torch.as_tensor(slices).detach().float().cpu()
    if scale == "each":
        s = s / s.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, 1, 1)
    elif scale != "shared":
        raise ValueError(f"scale must be 'each' or 'shared', not {scale!r}")
    n, k = s.shape[0], s.shape[-1]
    nrows = max(1, -(-n // ncols))
    grid = np.full((nrows * (k + pad) - pad, ncols * (k + pad) - pad), np.nan, np.float32)
    for i in range(n):
        r, c = divmod(i, ncols)
        grid[r * (k + pad) : r * (k + pad) + k, c * (k + pad) : c * (k + pad) + k] = s[i].numpy()
    return grid


def plot_bank_slices(
    bank,
    split: str = "train",
    n: int = 48,
    ncols: int = 12,
    order: str = "random",
    scale: str = "each",
    seed: int = 0,
):
    """Slices of each layer of a :class:`~dwp_lib.source_nets.KernelBank`, one panel per layer.

    ``order``: ``"random"`` (a seeded draw) or ``"norm"`` (the largest slices first). Colours:
    red positive, blue negative, white zero. Returns the Figure.
    """
    layers = list(bank.layers)
    fig, axes = plt.subplots(1, len(layers), figsize=(5.2 * len(layers), 2.6), squeeze=False)
    g = torch.Generator().manual_seed(seed)
    for ax, layer in zip(axes[0], layers, strict=True):
        s = bank.slices(layer, split)
        if order == "norm":
            idx = s.flatten(1).norm(dim=1).argsort(descending=True)[:n]
        elif order == "random":
            idx = torch.randperm(len(s), generator=g)[:n]
        else:
            raise ValueError(f"order must be 'random' or 'norm', not {order!r}")
        grid = slice_grid(s[idx], ncols=ncols, scale=scale)
        vmax = 1.0 if scale == "each" else float(np.nanmax(np.abs(grid))) or 1.0
        cmap = plt.get_cmap("RdBu_r").with_extremes(bad="0.85")
        ax.imshow(grid, cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest")
        k = s.shape[-1]
        ax.set_title(f"{layer}: {len(idx)} of {len(s):,} {k}x{k} slices ({split})", fontsize=10)
        ax.axis("off")
    label = bank.provenance.get("data", {}).get("label", "")
    fig.suptitle(f"Source kernels, {label}" if label else "Source kernels", fontsize=11)
    fig.tight_layout()
    return fig


def plot_slice_norms(bank, bins: int = 60):
    """Histogram of slice L2 norms per layer: kept vs pruned, the pruning threshold, and the
    typical norm of a Xavier-normal slice at initialisation (how far training moved the kernels).
    Returns the Figure."""
    layers = list(bank.layers)
    fig, axes = plt.subplots(1, len(layers), figsize=(5.2 * len(layers), 3.0), squeeze=False)
    for ax, layer in zip(axes[0], layers, strict=True):
        st = bank.provenance["norms"][layer]
        kept = bank.norms(layer, "all").numpy()
        pruned = bank.norms(layer, "pruned").numpy() if bank.has_unpruned else np.array([])
        both = np.concatenate([kept, pruned]) if len(pruned) else kept
        edges = np.linspace(0, float(both.max()) * 1.02 if len(both) else 1.0, bins + 1)
        ax.hist(kept, edges, color="C0", label=f"kept ({len(kept):,})")
        if len(pruned):
            ax.hist(pruned, edges, color="C7", label=f"pruned ({len(pruned):,})")
        ax.axvline(st["xavier_init"], color="C3", ls="--", label="Xavier init (typical)")
        if st["threshold"] > 0:
            ax.axvline(st["threshold"], color="k", ls=":", label=f"threshold {st['threshold']:g}")
        k = st["kernel_size"]
        ax.set_title(f"{layer} ({k}x{k}): median {np.median(both):.3f}", fontsize=10)
        ax.set_xlabel("slice L2 norm")
        ax.set_ylabel("slices")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_source_accuracy(bank):
    """Test accuracy of each source net (from the bank's provenance), with the mean. Returns the
    Figure."""
    nets = bank.provenance["nets"]
    acc = np.array([r["test_accuracy"] for r in nets])
    fig, ax = plt.subplots(figsize=(max(3.0, 0.25 * len(acc) + 1.5), 2.6))
    ax.bar(np.arange(len(acc)), acc, color="C0")
    ax.axhline(acc.mean(), color="C3", ls="--", label=f"mean {acc.mean():.3f}")
    ax.set_ylim(max(0.0, acc.min() - 0.05), 1.0)
    ax.set_xlabel("source net")
    ax.set_ylabel("test accuracy")
    ax.set_title(bank.provenance.get("data", {}).get("label", "source task"), fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


# --- Bayesian CNN and priors -----------------------------------------------------------------

# --- chapters 4 and 5: the implicit prior and the experiment ---------------------------------
