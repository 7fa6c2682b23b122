"""Chapter 1: q vs the exact posterior, VLB traces, what mean-field misses, Bayesian regression."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .common import finish, to_numpy

__all__ = ["gaussian_ellipse", "plot_blr_grid", "plot_blr_posterior", "plot_mean_field_failure"]
__all__ += ["plot_q_vs_posterior", "plot_vlb_traces"]


def _ellipse_points(mean, cov, n_std: float) -> np.ndarray:
    """``(2, 200)``: the n_std contour of N(mean, cov) (2-D)."""
    mean, cov = to_numpy(mean), to_numpy(cov)
    vals, vecs = np.linalg.eigh(cov)
    t = np.linspace(0.0, 2.0 * np.pi, 200)
    circle = np.stack([np.cos(t), np.sin(t)])
    return mean[:, None] + n_std * vecs @ (np.sqrt(np.maximum(vals, 0.0))[:, None] * circle)


def gaussian_ellipse(ax, mean, cov, n_std: float = 2.0, **kwargs):
    """Draw the n_std contour of N(mean, cov) (2-D) on ``ax`` as a closed line; returns the line."""
    (line,) = ax.plot(*_ellipse_points(mean, cov, n_std), **kwargs)
    return line


def _contours(ax, gaussians) -> None:
    """The 1 and 2 sd contours of each ``(mean, cov, style)``, 1 sd first; only 1 sd labelled."""
    for k in (1, 2):
        for mean, cov, style in gaussians:
            label = style.get("label") if k == 1 else None
            gaussian_ellipse(ax, mean, cov, k, **{**style, "label": label})


def plot_q_vs_posterior(post_mean, post_cov, qs: dict, prior_var: float | None = None, ax=None):
    """q against the exact posterior (1 and 2 sd); ``qs``: label -> ``(mean, cov)`` of a 2-D q."""
    fig, ax = plt.subplots(figsize=(5.2, 4.6)) if ax is None else (ax.figure, ax)
    for k, alpha in ((1, 0.35), (2, 0.2)):
        label = "exact posterior p(w|D)" if k == 1 else None
        pts = _ellipse_points(post_mean, post_cov, k)
        ax.fill(*pts, color="0.5", alpha=alpha, lw=0, label=label)
    styles = ["-", "--", ":", "-."]
    for i, (label, (mean, cov)) in enumerate(qs.items()):
        style = {"color": f"C{i}", "ls": styles[i % 4], "lw": 1.8, "label": label}
        _contours(ax, [(mean, cov, style)])
    if prior_var is not None:
        style = {"color": "k", "lw": 0.8, "alpha": 0.5, "label": "prior p(w), 1 sd"}
        gaussian_ellipse(ax, np.zeros(2), prior_var * np.eye(2), 1, **style)
    ax.plot(*to_numpy(post_mean), "k+", ms=10)
    ax.set(xlabel="$w_0$ (intercept)", ylabel="$w_1$ (slope)")
    ax.legend(fontsize=8, loc="best")
    ax.set_title("q against the exact posterior (1 and 2 sd)")
    return fig


def plot_vlb_traces(histories: dict, log_evidence: float, smooth: int = 25, ax=None):
    """Monte-Carlo VLB estimates during fitting, against log p(D) (a horizontal line)."""
    fig, ax = plt.subplots(figsize=(6.0, 3.6)) if ax is None else (ax.figure, ax)
    for i, (label, values) in enumerate(histories.items()):
        v = np.asarray(values, dtype=float)
        ax.plot(v, color=f"C{i}", alpha=0.2, lw=0.6)
        if len(v) >= smooth:
            mean = np.convolve(v, np.ones(smooth) / smooth, "valid")
            label = f"{label} (running mean of {smooth})"
            ax.plot(np.arange(smooth - 1, len(v)), mean, color=f"C{i}", label=label)
    ax.axhline(float(log_evidence), color="k", ls="--", label="log p(D) (exact)")
    ax.set_ylim(float(log_evidence) - 15.0, float(log_evidence) + 3.0)
    ax.set(xlabel="step", ylabel="VLB estimate (nats)")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("maximising the VLB: it approaches log p(D) from below")
    return fig


def plot_mean_field_failure(rhos, var_ratio, kl_gap, examples: list, ax=None):
    """What mean-field q gets wrong: ``examples`` ``(rho, cov, mf_var)`` as contours, and over
    ``rhos``, ``var_ratio`` (q's marginal variance / the true one) and ``kl_gap`` (best q's KL)."""
    n = len(examples)
    fig, axes = plt.subplots(1, n + 1, figsize=(3.3 * (n + 1), 3.3))
    for ax_, (rho, cov, mf_var) in zip(axes[:n], examples, strict=True):
        target = (np.zeros(2), cov, {"color": "0.3", "lw": 1.5, "label": "target p"})
        q_style = {"color": "C0", "ls": "--", "label": "best mean-field q"}
        _contours(ax_, [target, (np.zeros(2), np.diag(to_numpy(mf_var)), q_style)])
        ax_.set(aspect="equal", xlim=(-3, 3), ylim=(-3, 3), title=f"correlation {float(rho):.2f}")
        ax_.legend(fontsize=7, loc="upper left")
    ax_ = axes[-1]
    ax_.plot(to_numpy(rhos), to_numpy(var_ratio), "C0", label="var under q / true var")
    ax_.set_xlabel("posterior correlation")
    ax_.set_ylabel("variance ratio", color="C0")
    twin = ax_.twinx()
    twin.plot(to_numpy(rhos), to_numpy(kl_gap), "C3", ls=":", label="KL(q || p) at the optimum")
    twin.set_ylabel("KL (nats)", color="C3")
    ax_.set_title("mean-field shrinks the variance")
    return finish(fig)


def plot_blr_posterior(
    x,
    y,
    post_mean,
    post_cov,
    prior_var: float,
    noise_var: float,
    axes=None,
    x_grid=None,
    title: str | None = None,
):
    """Bayesian linear regression: weight space (prior, posterior), data space (fit, 2 sd band)."""
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.6)) if axes is None else (axes[0].figure, axes)
    ax_w, ax_d = axes
    prior = (np.zeros(2), prior_var * np.eye(2), {"color": "0.6", "ls": ":", "label": "prior"})
    _contours(ax_w, [prior, (post_mean, post_cov, {"color": "C0", "label": "posterior"})])
    lim = max(2.2 * float(np.sqrt(prior_var)), 1.5)
    ax_w.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xlabel="$w_0$", ylabel="$w_1$")
    ax_w.legend(fontsize=8, loc="upper right")
    x_grid = np.linspace(-0.5, 2.5, 100) if x_grid is None else to_numpy(x_grid)
    feats = np.stack([np.ones_like(x_grid), x_grid], 1)
    m, c = to_numpy(post_mean), to_numpy(post_cov)
    mean_line = feats @ m
    sd_line = np.sqrt(np.einsum("ni,ij,nj->n", feats, c, feats))
    band = (mean_line - 2 * sd_line, mean_line + 2 * sd_line)
    ax_d.fill_between(x_grid, *band, color="C0", alpha=0.25, label="posterior over the line, 2 sd")
    ax_d.plot(x_grid, mean_line, "C0", label="posterior mean")
    ax_d.plot(to_numpy(x), to_numpy(y), "k.", ms=5, label=f"data (N={len(to_numpy(x))})")
    ax_d.set(ylim=(-4, 3), xlabel="x", ylabel="y")
    ax_d.legend(fontsize=8, loc="lower left")
    if title:
        ax_w.set_title(title)
    return fig


def plot_blr_grid(cases: list, prior_vars: list, n_points: list, noise_var: float, truth=None):
    """Posteriors in weight space (chapter 1's widget, static): ``cases[i][j]`` is ``(post_mean,
    post_cov)`` for ``prior_vars[i]`` and ``n_points[j]``; ``truth`` marks the true weights."""
    rows, cols = len(prior_vars), len(n_points)
    fig, axes = plt.subplots(rows, cols, figsize=(2.7 * cols, 2.7 * rows), squeeze=False)
    for i, pv in enumerate(prior_vars):
        lim = max(2.0, 2.2 * float(np.sqrt(pv)))
        for j, n in enumerate(n_points):
            ax = axes[i][j]
            mean, cov = cases[i][j]
            prior = (np.zeros(2), pv * np.eye(2), {"color": "0.6", "ls": ":"})
            _contours(ax, [prior, (mean, cov, {"color": "C0"})])
            if truth is not None:
                ax.plot(*to_numpy(truth), "k+", ms=9)
            ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal")
            ax.tick_params(labelsize=7)
            ax.set_title(f"prior sd {np.sqrt(pv):.2g}, N={n}", fontsize=9)
    title = "posterior (blue) and prior (grey) over $(w_0, w_1)$, 1 and 2 sd; + true weights"
    fig.suptitle(title, fontsize=10)
    return finish(fig)
