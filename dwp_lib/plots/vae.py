"""Chapter 3: VAE training curves, reconstructions, samples, latent spaces, manifolds, IW bounds."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from .common import finish, slice_grid

__all__ = ["plot_image_samples", "plot_iw_bounds", "plot_kernel_vae_samples"]
__all__ += ["plot_latent_manifold", "plot_reconstructions", "plot_vae_latent_space"]
__all__ += ["plot_vae_training"]


def plot_vae_training(history, test_elbo: float | None = None, smooth: int = 50, ax=None):
    """Per-example training ELBO (minus each minibatch's loss, smoothed), the test ELBO dashed."""
    fig, ax = plt.subplots(figsize=(6, 3.4)) if ax is None else (ax.figure, ax)
    elbo = -np.asarray(history.loss, dtype=float)
    y = np.convolve(elbo, np.ones(smooth) / smooth, "valid") if 1 < smooth <= len(elbo) else elbo
    x = np.arange(len(y)) + (len(elbo) - len(y))
    ax.plot(x, y, label=f"training minibatches (mean of {smooth})")
    if test_elbo is not None:
        ax.axhline(test_elbo, color="k", ls="--", lw=1, label=f"test ELBO {test_elbo:.1f}")
    lo = np.percentile(y, 2) if len(y) else 0.0
    ax.set(ylim=(lo - 0.1 * abs(lo), None), xlabel="step", ylabel="ELBO (nats per example)")
    ax.legend(fontsize=8)
    return finish(fig)


def _image_rows(rows: list, titles: list[str], figsize_per: float = 0.55):
    n = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), 1, figsize=(figsize_per * n + 0.8, 0.75 * len(rows) + 0.3))
    axes = np.atleast_1d(axes)
    for ax, row, title in zip(axes, rows, titles, strict=True):
        imgs = torch.as_tensor(row).detach().float().cpu().reshape(len(row), 28, -1).numpy()
        ax.imshow(np.concatenate(list(imgs), axis=1), cmap="gray", vmin=0, vmax=1)
        ax.set(xticks=[], yticks=[])
        ax.set_ylabel(title, rotation=0, ha="right", va="center", fontsize=9)
    return finish(fig)


def plot_reconstructions(images, reconstructions, n: int = 12):
    """Test images (top row) and the VAE's reconstructions, decoder means at z = mu(x)."""
    return _image_rows([images[:n], reconstructions[:n]], ["data", "reconstruction"])


def plot_image_samples(samples, ncols: int = 12, title: str = "samples", row_titles=None):
    """Images ``(n, 28, 28)`` in rows of ``ncols`` (pixel probabilities in [0, 1]), ``title``
    beside the first row, or one of ``row_titles`` beside each row."""
    rows = [samples[i : i + ncols] for i in range(0, len(samples), ncols)]
    titles = [title] + [""] * (len(rows) - 1) if row_titles is None else list(row_titles)
    if len(titles) != len(rows):
        raise ValueError(f"{len(rows)} rows of {ncols} images but {len(titles)} row_titles")
    return _image_rows(rows, titles)


def plot_vae_latent_space(z, values, labels=None, title: str = "", ax=None, cmap: str = "tab10"):
    """Codes ``(N, 2)`` as points coloured by ``values``: integers (classes) get a legend with
    ``labels`` their names, floats a colour bar named ``labels``."""
    z = torch.as_tensor(z).detach().cpu().numpy()
    v = torch.as_tensor(values).detach().cpu().numpy()
    if z.ndim != 2 or z.shape[1] != 2:
        raise ValueError(f"plot_vae_latent_space draws 2-D codes, got shape {z.shape}")
    fig, ax = plt.subplots(figsize=(5.2, 4.4)) if ax is None else (ax.figure, ax)
    if np.issubdtype(v.dtype, np.integer):
        colours = plt.get_cmap(cmap)
        # one scatter in a random order, so no class is painted over by the ones drawn after it
        order = np.random.default_rng(0).permutation(len(v))
        ax.scatter(z[order, 0], z[order, 1], s=4, alpha=0.6, color=colours(v[order] % 10))
        names = {c: str(c) if labels is None else labels[c] for c in np.unique(v)}
        handles = [
            plt.Line2D([], [], ls="", marker="o", color=colours(int(c) % 10), label=name)
            for c, name in names.items()
        ]
        ax.legend(handles=handles, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    else:
        sc = ax.scatter(z[:, 0], z[:, 1], s=4, alpha=0.7, c=v, cmap=cmap)
        fig.colorbar(sc, ax=ax, label=labels or "")
    ax.set(xlabel="$z_1$", ylabel="$z_2$")
    ax.set_title(title, fontsize=10)
    return finish(fig)


def plot_latent_manifold(images, extent: float):
    """Decoder means ``(n, n, H, W)`` on a code grid over [-extent, extent]^2, z_2 upwards."""
    imgs = torch.as_tensor(images).detach().float().cpu().numpy()
    n, _, h, w = imgs.shape
    canvas = np.concatenate([np.concatenate(list(row), axis=1) for row in imgs], axis=0)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, extent=(-extent, extent, -extent, extent))
    ax.set(xlabel="$z_1$", ylabel="$z_2$")
    ax.set_title(f"decoder means on a {n}x{n} grid of z", fontsize=10)
    return finish(fig)


def plot_iw_bounds(bounds: dict, elbo: float, ax=None):
    """The IW estimate of log p(x) against K (log axis), and the ELBO dashed: the one-sample gap."""
    fig, ax = plt.subplots(figsize=(5.2, 3.4)) if ax is None else (ax.figure, ax)
    ks = sorted(bounds)
    ax.plot(ks, [bounds[k] for k in ks], "o-", label="importance-weighted estimate")
    ax.axhline(elbo, color="k", ls="--", lw=1, label=f"ELBO {elbo:.2f}")
    ax.set(xscale="log", xlabel="number of importance samples K", ylabel="nats per example")
    ax.legend(fontsize=8)
    return finish(fig)


def plot_kernel_vae_samples(real, samples, ncols: int = 8, scale: str = "shared"):
    """Training slices beside kernel-VAE samples (means at z ~ N(0, I)), one red-blue scale."""
    grids = [slice_grid(x, ncols=ncols, scale=scale) for x in (real, samples)]
    vmax = max(float(np.nanmax(np.abs(g))) for g in grids) or 1.0
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="0.85")
    height, width = grids[0].shape
    fig, axes = plt.subplots(1, 2, figsize=(8, 4 * height / width + 0.5))
    k = torch.as_tensor(real).shape[-1]
    titles = [f"training slices ({k}x{k})", "kernel-VAE samples"]
    for ax, g, t in zip(axes, grids, titles, strict=True):
        ax.imshow(g, cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.set_title(t, fontsize=10)
        ax.axis("off")
    return finish(fig)
