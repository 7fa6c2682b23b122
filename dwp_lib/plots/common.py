"""Shared by many chapters' figures: arrays, tiled slices, contact sheets (no library import)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = ["contact_sheet", "dataset_title", "finish", "slice_grid", "to_numpy"]


def to_numpy(t) -> np.ndarray:
    """A tensor (detached, on the CPU) or anything array-like as a NumPy array."""
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def finish(fig):
    """``fig`` laid out tight: the last step of most figures."""
    fig.tight_layout()
    return fig


def slice_grid(slices, ncols: int = 8, pad: int = 1, scale: str = "each") -> np.ndarray:
    """Tile ``slices`` ``(N, k, k)`` into one image with a NaN gutter. ``scale="each"`` divides
    each slice by its largest |weight| (shapes); ``"shared"`` keeps the weights (sizes too)."""
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


def dataset_title(ds) -> str:
    """A figure's name for ``ds``: "notMNIST-style (synthetic)", not "notMNIST"; or its variant."""
    p = ds.provenance
    if p.get("variant") == "synthetic":
        name = "notMNIST-style (synthetic)"
    elif p.get("dataset") == "notMNIST":
        name = f"notMNIST ({p.get('variant', 'real')})"
    else:
        name = str(p.get("dataset", "images"))
    return f"{name}, {p.get('split', '')} split: {len(ds):,} images".replace(",  split", "")


def contact_sheet(ds, per_class: int = 10, seed: int = 0, title: str | None = None, ax=None):
    """Samples of an :class:`~dwp_lib.data.ImageSet`, a row per class, as stored (ink: 255)."""
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
    size = (0.45 * per_class + 0.6, 0.45 * ds.num_classes + 0.6)
    fig, ax = plt.subplots(figsize=size) if ax is None else (ax.figure, ax)
    ax.imshow(grid, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_yticks(14 + 28 * np.arange(ds.num_classes), ds.classes)
    ax.set_xticks([])
    ax.tick_params(length=0)
    ax.set_title(title if title is not None else dataset_title(ds), fontsize=10)
    return fig
