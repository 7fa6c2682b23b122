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

# --- Bayesian CNN and priors -----------------------------------------------------------------

# --- chapters 4 and 5: the implicit prior and the experiment ---------------------------------
