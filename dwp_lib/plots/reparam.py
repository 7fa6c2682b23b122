"""Chapter 2: gradient estimators' histograms and variance, mini-batch VI, the pixel posterior."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .common import finish, to_numpy

__all__ = ["plot_estimator_histograms", "plot_estimator_variance"]
__all__ += ["plot_gradient_variance_vs_batch", "plot_pixel_posterior", "plot_vi_history"]


def plot_estimator_histograms(samples: dict, exact: float, bins: int = 80, ax=None):
    """Histograms of one-sample gradient estimates (one coordinate) with the exact gradient."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6)) if ax is None else (ax.figure, ax)
    all_v = np.concatenate([to_numpy(v) for v in samples.values()])
    lo, hi = np.quantile(all_v, [0.005, 0.995])
    for i, (label, v) in enumerate(samples.items()):
        v = to_numpy(v)
        style = {"alpha": 0.45, "color": f"C{i}", "label": f"{label}: sd {v.std():.3g}"}
        ax.hist(np.clip(v, lo, hi), bins=bins, range=(lo, hi), density=True, **style)
    ax.axvline(float(exact), color="k", ls="--", label=f"exact gradient {float(exact):.3g}")
    ax.set(xlabel="one-sample estimate (clipped to the 0.5-99.5% range)", ylabel="density")
    ax.legend(fontsize=8)
    return fig


def plot_estimator_variance(sample_counts, variances: dict, ax=None, ylabel: str = "variance"):
    """Variance of S-sample gradient estimators against S (log-log), one line per estimator."""
    fig, ax = plt.subplots(figsize=(5.6, 3.8)) if ax is None else (ax.figure, ax)
    s = np.asarray(sample_counts, dtype=float)
    for i, (label, v) in enumerate(variances.items()):
        v = to_numpy(v)
        ax.loglog(s, v, "o-", color=f"C{i}", label=label)
        ax.loglog(s, v[0] * s[0] / s, color=f"C{i}", ls=":", lw=0.8)
    ax.set_xticks(s, [str(int(k)) for k in s])
    ax.minorticks_off()
    ax.set(xlabel="samples S per estimate", ylabel=ylabel, title="dotted: the 1/S law")
    ax.legend(fontsize=8)
    return fig


def plot_vi_history(history, n_data: int, smooth: int = 20):
    """Per-example VLB, data term and KL during mini-batch VI (running means)."""
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.4))
    kernel = np.ones(smooth) / smooth

    def run(v):
        v = np.asarray(v, dtype=float) / n_data
        return np.convolve(v, kernel, "valid") if len(v) >= smooth else v

    axes[0].plot(run(history.elbo), label="VLB / N")
    axes[0].plot(run(history.data_term), label="data term / N")
    axes[0].set(xlabel="step", ylabel="nats per example")
    axes[0].legend(fontsize=8)
    axes[0].set_title(f"mini-batch VLB estimates (running mean of {smooth})")
    axes[1].plot(np.asarray(history.kl, dtype=float) / n_data, "C3")
    axes[1].set(xlabel="step", ylabel="KL(q || p) / N", title="the KL term")
    return finish(fig)


def plot_pixel_posterior(mu, logvar, classes=(0, 1, 3, 7)):
    """Softmax regression's q (``mu``, ``logvar``: (784, 10)) as per-class weight and sd images."""
    mu, sd = to_numpy(mu), np.exp(0.5 * to_numpy(logvar))
    fig, axes = plt.subplots(2, len(classes) + 1, figsize=(2.2 * (len(classes) + 1), 4.6))
    for j, c in enumerate(classes):
        m = mu[:, c].reshape(28, 28)
        lim = np.abs(m).max()
        axes[0][j].imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim)
        axes[0][j].set_title(f"mean weights, digit {c}", fontsize=8)
        im = axes[1][j].imshow(sd[:, c].reshape(28, 28), cmap="viridis", vmin=0, vmax=1)
        axes[1][j].set_title(f"posterior sd, digit {c}", fontsize=8)
    axes[0][-1].imshow(sd.mean(1).reshape(28, 28), cmap="viridis", vmin=0, vmax=1)
    axes[0][-1].set_title("posterior sd, mean over digits", fontsize=8)
    axes[1][-1].hist(sd.ravel(), bins=50, color="C2")
    axes[1][-1].set_title("all posterior sds", fontsize=8)
    for ax in list(axes[0]) + list(axes[1][:-1]):
        ax.set(xticks=[], yticks=[])
    fig.colorbar(im, ax=list(axes[1][:-1]), shrink=0.8, label="sd")
    return fig


def plot_gradient_variance_vs_batch(batch_sizes, variances: dict, ax=None):
    """Mini-batch gradient variance (weight noise only) against the batch size, per sampler."""
    fig, ax = plt.subplots(figsize=(5.6, 3.8)) if ax is None else (ax.figure, ax)
    b = np.asarray(batch_sizes, dtype=float)
    for i, (label, v) in enumerate(variances.items()):
        ax.loglog(b, to_numpy(v), "o-", color=f"C{i}", label=label)
    ax.set(xlabel="batch size B", ylabel="gradient variance (mean over weights)")
    ax.set_title("noise from sampling W, for a fixed batch")
    ax.legend(fontsize=8)
    return fig
