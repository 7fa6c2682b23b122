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


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def gaussian_ellipse(ax, mean, cov, n_std: float = 2.0, **kwargs):
    """Draw the n_std contour of N(mean, cov) (2-D) on ``ax`` as a closed line; returns the line."""
    mean, cov = _np(mean), _np(cov)
    vals, vecs = np.linalg.eigh(cov)
    t = np.linspace(0.0, 2.0 * np.pi, 200)
    circle = np.stack([np.cos(t), np.sin(t)])
    pts = mean[:, None] + n_std * vecs @ (np.sqrt(np.maximum(vals, 0.0))[:, None] * circle)
    (line,) = ax.plot(pts[0], pts[1], **kwargs)
    return line


def plot_q_vs_posterior(post_mean, post_cov, qs: dict, prior_var: float | None = None, ax=None):
    """q against the exact posterior in weight space (1 and 2 sd contours).

    ``qs`` maps a label to ``(mean, cov)`` of a Gaussian q (2-D). See book/01.
    """
    fig, ax = plt.subplots(figsize=(5.2, 4.6)) if ax is None else (ax.figure, ax)
    for k, alpha in ((1, 0.35), (2, 0.2)):
        mean, cov = _np(post_mean), _np(post_cov)
        vals, vecs = np.linalg.eigh(cov)
        t = np.linspace(0.0, 2.0 * np.pi, 200)
        pts = mean[:, None] + k * vecs @ (np.sqrt(vals)[:, None] * np.stack([np.cos(t), np.sin(t)]))
        ax.fill(
            pts[0],
            pts[1],
            color="0.5",
            alpha=alpha,
            lw=0,
            label="exact posterior p(w|D)" if k == 1 else None,
        )
    styles = ["-", "--", ":", "-."]
    for i, (label, (mean, cov)) in enumerate(qs.items()):
        for k in (1, 2):
            gaussian_ellipse(
                ax,
                mean,
                cov,
                k,
                color=f"C{i}",
                ls=styles[i % 4],
                lw=1.8,
                label=label if k == 1 else None,
            )
    if prior_var is not None:
        gaussian_ellipse(
            ax,
            np.zeros(2),
            prior_var * np.eye(2),
            1,
            color="k",
            lw=0.8,
            alpha=0.5,
            label="prior p(w), 1 sd",
        )
    ax.plot(*_np(post_mean), "k+", ms=10)
    ax.set_xlabel("$w_0$ (intercept)")
    ax.set_ylabel("$w_1$ (slope)")
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
            kernel = np.ones(smooth) / smooth
            ax.plot(
                np.arange(smooth - 1, len(v)),
                np.convolve(v, kernel, "valid"),
                color=f"C{i}",
                label=f"{label} (running mean of {smooth})",
            )
    ax.axhline(float(log_evidence), color="k", ls="--", label="log p(D) (exact)")
    lo = float(log_evidence) - 15.0
    ax.set_ylim(lo, float(log_evidence) + 3.0)
    ax.set_xlabel("step")
    ax.set_ylabel("VLB estimate (nats)")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("maximising the VLB: it approaches log p(D) from below")
    return fig


def plot_mean_field_failure(rhos, var_ratio, kl_gap, examples: list, ax=None):
    """What mean-field q gets wrong: contours at a few correlations, and the variance ratio.

    ``rhos``, ``var_ratio`` (q's marginal variance / the true one) and ``kl_gap`` (KL of the best
    mean-field q to the target) are arrays over correlations; ``examples`` is a list of
    ``(rho, cov, mf_var)`` for the contour panels (unit-variance 2-D Gaussians, zero mean).
    """
    n = len(examples)
    fig, axes = plt.subplots(1, n + 1, figsize=(3.3 * (n + 1), 3.3))
    for ax_, (rho, cov, mf_var) in zip(axes[:n], examples, strict=True):
        for k in (1, 2):
            gaussian_ellipse(
                ax_, np.zeros(2), cov, k, color="0.3", lw=1.5, label="target p" if k == 1 else None
            )
            gaussian_ellipse(
                ax_,
                np.zeros(2),
                np.diag(_np(mf_var)),
                k,
                color="C0",
                ls="--",
                label="best mean-field q" if k == 1 else None,
            )
        ax_.set_aspect("equal")
        ax_.set_xlim(-3, 3)
        ax_.set_ylim(-3, 3)
        ax_.set_title(f"correlation {float(rho):.2f}")
        ax_.legend(fontsize=7, loc="upper left")
    ax_ = axes[-1]
    ax_.plot(_np(rhos), _np(var_ratio), "C0", label="var under q / true var")
    ax_.set_xlabel("posterior correlation")
    ax_.set_ylabel("variance ratio", color="C0")
    twin = ax_.twinx()
    twin.plot(_np(rhos), _np(kl_gap), "C3", ls=":", label="KL(q || p) at the optimum")
    twin.set_ylabel("KL (nats)", color="C3")
    ax_.set_title("mean-field shrinks the variance")
    fig.tight_layout()
    return fig


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
    """Bayesian linear regression: weight space (prior and posterior) and data space (the fit
    with a 2 sd band of the posterior over the line)."""
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.6))
    else:
        fig = axes[0].figure
    ax_w, ax_d = axes
    s = float(np.sqrt(prior_var))
    for k in (1, 2):
        gaussian_ellipse(
            ax_w,
            np.zeros(2),
            prior_var * np.eye(2),
            k,
            color="0.6",
            ls=":",
            label="prior" if k == 1 else None,
        )
        gaussian_ellipse(
            ax_w, post_mean, post_cov, k, color="C0", label="posterior" if k == 1 else None
        )
    lim = max(2.2 * s, 1.5)
    ax_w.set_xlim(-lim, lim)
    ax_w.set_ylim(-lim, lim)
    ax_w.set_aspect("equal")
    ax_w.set_xlabel("$w_0$")
    ax_w.set_ylabel("$w_1$")
    ax_w.legend(fontsize=8, loc="upper right")
    x_grid = np.linspace(-0.5, 2.5, 100) if x_grid is None else _np(x_grid)
    feats = np.stack([np.ones_like(x_grid), x_grid], 1)
    m, c = _np(post_mean), _np(post_cov)
    mean_line = feats @ m
    sd_line = np.sqrt(np.einsum("ni,ij,nj->n", feats, c, feats))
    ax_d.fill_between(
        x_grid,
        mean_line - 2 * sd_line,
        mean_line + 2 * sd_line,
        color="C0",
        alpha=0.25,
        label="posterior over the line, 2 sd",
    )
    ax_d.plot(x_grid, mean_line, "C0", label="posterior mean")
    ax_d.plot(_np(x), _np(y), "k.", ms=5, label=f"data (N={len(_np(x))})")
    ax_d.set_ylim(-4, 3)
    ax_d.set_xlabel("x")
    ax_d.set_ylabel("y")
    ax_d.legend(fontsize=8, loc="lower left")
    if title:
        ax_w.set_title(title)
    return fig


def plot_blr_grid(cases: list, prior_vars: list, n_points: list, noise_var: float, truth=None):
    """A static grid of posteriors (weight space): rows are prior variances, columns data sizes.

    ``cases[i][j]`` is ``(post_mean, post_cov)`` for ``prior_vars[i]`` and ``n_points[j]``;
    ``truth`` (optional) marks the weights that generated the data. This is the HTML fallback of
    chapter 1's widget.
    """
    fig, axes = plt.subplots(
        len(prior_vars),
        len(n_points),
        figsize=(2.7 * len(n_points), 2.7 * len(prior_vars)),
        squeeze=False,
    )
    for i, pv in enumerate(prior_vars):
        lim = max(2.0, 2.2 * float(np.sqrt(pv)))
        for j, n in enumerate(n_points):
            ax = axes[i][j]
            mean, cov = cases[i][j]
            for k in (1, 2):
                gaussian_ellipse(ax, np.zeros(2), pv * np.eye(2), k, color="0.6", ls=":")
                gaussian_ellipse(ax, mean, cov, k, color="C0")
            if truth is not None:
                ax.plot(*_np(truth), "k+", ms=9)
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
            ax.tick_params(labelsize=7)
            ax.set_title(f"prior sd {np.sqrt(pv):.2g}, N={n}", fontsize=9)
    fig.suptitle(
        "posterior (blue) and prior (grey) over $(w_0, w_1)$, 1 and 2 sd; + true weights",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


# --- chapter 2: the reparametrisation trick --------------------------------------------------


def plot_estimator_histograms(samples: dict, exact: float, bins: int = 80, ax=None):
    """Histograms of one-sample gradient estimates (one coordinate) with the exact gradient."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6)) if ax is None else (ax.figure, ax)
    all_v = np.concatenate([_np(v) for v in samples.values()])
    lo, hi = np.quantile(all_v, [0.005, 0.995])
    for i, (label, v) in enumerate(samples.items()):
        v = _np(v)
        ax.hist(
            np.clip(v, lo, hi),
            bins=bins,
            range=(lo, hi),
            density=True,
            alpha=0.45,
            color=f"C{i}",
            label=f"{label}: sd {v.std():.3g}",
        )
    ax.axvline(float(exact), color="k", ls="--", label=f"exact gradient {float(exact):.3g}")
    ax.set_xlabel("one-sample estimate (clipped to the 0.5-99.5% range)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    return fig


def plot_estimator_variance(sample_counts, variances: dict, ax=None, ylabel: str = "variance"):
    """Variance of S-sample gradient estimators against S (log-log), one line per estimator."""
    fig, ax = plt.subplots(figsize=(5.6, 3.8)) if ax is None else (ax.figure, ax)
    s = np.asarray(sample_counts, dtype=float)
    for i, (label, v) in enumerate(variances.items()):
        v = _np(v)
        ax.loglog(s, v, "o-", color=f"C{i}", label=label)
        ax.loglog(s, v[0] * s[0] / s, color=f"C{i}", ls=":", lw=0.8)
    ax.set_xticks(s, [str(int(k)) for k in s])
    ax.minorticks_off()
    ax.set_xlabel("samples S per estimate")
    ax.set_ylabel(ylabel)
    ax.set_title("dotted: the 1/S law")
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
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("nats per example")
    axes[0].legend(fontsize=8)
    axes[0].set_title(f"mini-batch VLB estimates (running mean of {smooth})")
    axes[1].plot(np.asarray(history.kl, dtype=float) / n_data, "C3")
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("KL(q || p) / N")
    axes[1].set_title("the KL term")
    fig.tight_layout()
    return fig


def plot_pixel_posterior(mu, logvar, classes=(0, 1, 3, 7)):
    """Softmax-regression q on MNIST: per-class mean weights and posterior sd as 28x28 images.

    ``mu`` and ``logvar`` have shape (784, 10).
    """
    mu, sd = _np(mu), np.exp(0.5 * _np(logvar))
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
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=list(axes[1][:-1]), shrink=0.8, label="sd")
    return fig


def plot_gradient_variance_vs_batch(batch_sizes, variances: dict, ax=None):
    """Mini-batch gradient variance (weight noise only) against the batch size, per sampler."""
    fig, ax = plt.subplots(figsize=(5.6, 3.8)) if ax is None else (ax.figure, ax)
    b = np.asarray(batch_sizes, dtype=float)
    for i, (label, v) in enumerate(variances.items()):
        ax.loglog(b, _np(v), "o-", color=f"C{i}", label=label)
    ax.set_xlabel("batch size B")
    ax.set_ylabel("gradient variance (mean over weights)")
    ax.set_title("noise from sampling W, for a fixed batch")
    ax.legend(fontsize=8)
    return fig


# --- chapter 3: the VAE and the kernel VAE ---------------------------------------------------


def _smooth(values, window: int) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    if window <= 1 or len(v) < window:
        return v
    return np.convolve(v, np.ones(window) / window, mode="valid")


def plot_vae_training(history, test_elbo: float | None = None, smooth: int = 50, ax=None):
    """The ELBO per example during training (minus the loss of each minibatch, smoothed), and
    the test-set ELBO of the final model as a dashed line. Returns the Figure."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 3.4))
    else:
        fig = ax.figure
    elbo = -np.asarray(history.loss)
    y = _smooth(elbo, smooth)
    ax.plot(
        np.arange(len(y)) + (len(elbo) - len(y)),
        y,
        label=f"training minibatches (mean of {smooth})",
    )
    if test_elbo is not None:
        ax.axhline(test_elbo, color="k", ls="--", lw=1, label=f"test ELBO {test_elbo:.1f}")
    lo = np.percentile(y, 2) if len(y) else 0.0
    ax.set_ylim(lo - 0.1 * abs(lo), None)
    ax.set_xlabel("step")
    ax.set_ylabel("ELBO (nats per example)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _image_rows(rows: list, titles: list[str], figsize_per: float = 0.55):
    n = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), 1, figsize=(figsize_per * n + 0.8, 0.75 * len(rows) + 0.3))
    axes = np.atleast_1d(axes)
    for ax, row, title in zip(axes, rows, titles, strict=True):
        imgs = torch.as_tensor(row).detach().float().cpu().reshape(len(row), 28, -1).numpy()
        ax.imshow(np.concatenate(list(imgs), axis=1), cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(title, rotation=0, ha="right", va="center", fontsize=9)
    fig.tight_layout()
    return fig


def plot_reconstructions(images, reconstructions, n: int = 12):
    """Test images (top row) and the VAE's reconstructions, decoder means at z = mu(x)."""
    return _image_rows([images[:n], reconstructions[:n]], ["data", "reconstruction"])


def plot_image_samples(samples, ncols: int = 12, title: str = "samples"):
    """Images ``(n, 28, 28)`` in rows of ``ncols`` (pixel probabilities in [0, 1])."""
    rows = [samples[i : i + ncols] for i in range(0, len(samples), ncols)]
    return _image_rows(rows, [title] + [""] * (len(rows) - 1))


def plot_vae_latent_space(z, values, labels=None, title: str = "", ax=None, cmap: str = "tab10"):
    """Codes ``(N, 2)`` (the encoder means) as points coloured by ``values``.

    Integer ``values`` (digit classes) get a legend, with ``labels`` their names; float
    ``values`` (e.g. a filter's orientation) get a colour bar named by ``labels`` (a string).
    """
    z = torch.as_tensor(z).detach().cpu().numpy()
    v = torch.as_tensor(values).detach().cpu().numpy()
    if z.ndim != 2 or z.shape[1] != 2:
        raise ValueError(f"plot_vae_latent_space draws 2-D codes, got shape {z.shape}")
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.2, 4.4))
    else:
        fig = ax.figure
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
    ax.set_xlabel("$z_1$")
    ax.set_ylabel("$z_2$")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_latent_manifold(images, extent: float):
    """A grid of decoder means ``(n, n, H, W)`` at codes on a regular grid over
    [-extent, extent]^2 (row 0 at the top is the largest z_2)."""
    imgs = torch.as_tensor(images).detach().float().cpu().numpy()
    n, _, h, w = imgs.shape
    canvas = np.concatenate([np.concatenate(list(row), axis=1) for row in imgs], axis=0)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, extent=(-extent, extent, -extent, extent))
    ax.set_xlabel("$z_1$")
    ax.set_ylabel("$z_2$")
    ax.set_title(f"decoder means on a {n}x{n} grid of z", fontsize=10)
    fig.tight_layout()
    return fig


def plot_iw_bounds(bounds: dict, elbo: float, ax=None):
    """The importance-weighted estimate of log p(x) against the number of samples K (log axis),
    with the ELBO as a dashed line: the gap is what the single-sample bound leaves."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.2, 3.4))
    else:
        fig = ax.figure
    ks = sorted(bounds)
    ax.plot(ks, [bounds[k] for k in ks], "o-", label="importance-weighted estimate")
    ax.axhline(elbo, color="k", ls="--", lw=1, label=f"ELBO {elbo:.2f}")
    ax.set_xscale("log")
    ax.set_xlabel("number of importance samples K")
    ax.set_ylabel("nats per example")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_kernel_vae_samples(real, samples, ncols: int = 8, scale: str = "shared"):
    """Training slices beside kernel-VAE samples (decoder means at z ~ N(0, I)), same colour
    scale: red positive, blue negative."""
    grids = [
        slice_grid(real, ncols=ncols, scale=scale),
        slice_grid(samples, ncols=ncols, scale=scale),
    ]
    vmax = max(float(np.nanmax(np.abs(g))) for g in grids) or 1.0
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="0.85")
    height, width = grids[0].shape
    fig, axes = plt.subplots(1, 2, figsize=(8, 4 * height / width + 0.5))
    k = torch.as_tensor(real).shape[-1]
    for ax, g, t in zip(
        axes, grids, [f"training slices ({k}x{k})", "kernel-VAE samples"], strict=True
    ):
        ax.imshow(g, cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.set_title(t, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    return fig


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


# chapter 4: the implicit prior (the auxiliary bound, its gap, the penalty)

KIND_COLOURS = ("C0", "C1", "C2", "C3", "C4", "C5", "C6")


def plot_slice_kinds(kinds: dict, n: int = 8):
    """``n`` slices of each kind (``{name: (N, k, k)}``), one row per kind, all on one colour
    scale so that sizes compare as well as shapes; each row is labelled with the kind's rms
    weight. Returns the Figure."""
    names = list(kinds)
    vmax = max(float(torch.as_tensor(kinds[k][:n]).abs().max()) for k in names) or 1.0
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="0.85")
    fig, axes = plt.subplots(len(names), 1, figsize=(0.62 * n + 2.4, 0.78 * len(names) + 0.5))
    axes = np.atleast_1d(axes)
    for ax, name in zip(axes, names, strict=True):
        s = torch.as_tensor(kinds[name]).detach().float().cpu()
        grid = slice_grid(s[:n], ncols=n, scale="shared")
        ax.imshow(grid, cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(
            f"{name}\nrms {s.pow(2).mean().sqrt():.3f}",
            rotation=0,
            ha="right",
            va="center",
            fontsize=8,
        )
    axes[0].set_title(f"shared colour scale: ±{vmax:.2f}", fontsize=9)
    fig.tight_layout()
    return fig


def _ellipse(mean, var, n_sd: float, n: int = 100) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n)
    sd = np.sqrt(np.asarray(var, dtype=float))
    return np.stack([mean[0] + n_sd * sd[0] * np.cos(t), mean[1] + n_sd * sd[1] * np.sin(t)], 1)


@torch.no_grad()
def plot_posterior_vs_reverse(grid, slices: dict, reverse: dict, zoom: float = 4.0):
    """The true posterior p(z|w) on a :class:`~dwp_lib.implicit_prior.LatentGrid` (filled
    contours of its density) against Gaussian reverse models r(z|w) (1- and 2-sd ellipses), one
    panel per slice. ``slices``: ``{title: (k, k) slice}``; ``reverse``: ``{label: model}``
    whose encoders are drawn, where a model is a KernelVAE for every panel or a
    ``{title: KernelVAE}`` with one per panel (e.g. the VAE's own encoder, and one fitted to
    each kind of slice by ``train_reverse``). Each panel is zoomed on the posterior and the
    ellipses (``zoom`` posterior sds around its mean, at least). Returns the Figure."""
    titles = list(slices)
    w = torch.stack([torch.as_tensor(slices[t]).float() for t in titles])
    post = grid.log_posterior(w).exp().cpu().numpy()  # (B, size, size), index [b, i(z1), j(z2)]
    axis = grid.axis.cpu().numpy()
    encoded = {}
    for label, model in reverse.items():
        per_panel = model if isinstance(model, dict) else dict.fromkeys(titles, model)
        mus, variances = [], []
        for b, title in enumerate(titles):
            vae = per_panel[title]
            mu, logvar = vae.encode(w[b : b + 1].to(next(vae.parameters()).device))
            mus.append(mu[0].cpu().numpy())
            variances.append(logvar[0].exp().cpu().numpy())
        encoded[label] = (np.stack(mus), np.stack(variances))
    fig, axes = plt.subplots(1, len(titles), figsize=(3.1 * len(titles), 3.2), squeeze=False)
    styles = ["--", "-", ":", "-."]
    for b, (ax, title) in enumerate(zip(axes[0], titles, strict=True)):
        p = post[b]
        mass = p / p.sum()
        m1, m2 = (mass.sum(1) * axis).sum(), (mass.sum(0) * axis).sum()
        s1 = np.sqrt((mass.sum(1) * (axis - m1) ** 2).sum())
        s2 = np.sqrt((mass.sum(0) * (axis - m2) ** 2).sum())
        cell = axis[1] - axis[0]
        half = zoom * max(s1, s2, cell)
        lo = np.array([m1 - half, m2 - half])
        hi = np.array([m1 + half, m2 + half])
        for mu, var in encoded.values():
            e = _ellipse(mu[b], var[b], 2.0)
            lo, hi = np.minimum(lo, e.min(0)), np.maximum(hi, e.max(0))
        ax.contourf(axis, axis, p.T, levels=12, cmap="Greys")
        for i, (label, (mu, var)) in enumerate(encoded.items()):
            for n_sd in (1.0, 2.0):
                e = _ellipse(mu[b], var[b], n_sd)
                ax.plot(
                    e[:, 0],
                    e[:, 1],
                    styles[i % 4],
                    color=f"C{i + 1}",
                    lw=1.4,
                    label=f"r(z|w): {label}" if n_sd == 1.0 else None,
                )
        pad = 0.08 * (hi - lo).max()
        span = (hi - lo).max() / 2 + pad
        c = (lo + hi) / 2
        ax.set_xlim(c[0] - span, c[0] + span)
        ax.set_ylim(c[1] - span, c[1] + span)
        ax.set_aspect("equal")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("z1")
        if b == 0:
            ax.set_ylabel("z2")
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.suptitle(
        "grey: true posterior p(z|w) (quadrature); lines: reverse models, 1 and 2 sd", fontsize=9
    )
    fig.tight_layout()
    return fig


def plot_bound_and_gap(scores: list, after: list | None = None):
    """Left: per slice, the bound against log p(w), one colour per kind, with the line
    bound = log p(w) (the vertical distance below it is the gap). Right: the gap per kind
    (box plots, symlog scale), before and, if ``after`` is given, after training r(z|w).
    ``scores``/``after``: lists of :class:`~dwp_lib.implicit_prior.SliceScores`. Returns the
    Figure."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10.5, 3.8))
    lo, hi = np.inf, -np.inf
    for i, s in enumerate(scores):
        x, y = s.log_p.numpy(), s.bound.numpy()
        ax1.scatter(x, y, s=10, color=KIND_COLOURS[i % 7], alpha=0.7, label=s.kind)
        lo, hi = min(lo, x.min(), y.min()), max(hi, x.max(), y.max())
    ax1.plot([lo, hi], [lo, hi], "k-", lw=0.8, label="bound = log p(w)")
    ax1.set_xlabel("log p(w) (nats)")
    ax1.set_ylabel("auxiliary bound (nats)")
    ax1.legend(fontsize=7)
    groups = [(scores, "VAE encoder as r", 0.0)]
    if after is not None:
        groups.append((after, "r trained on these slices", 0.35))
    width = 0.3 if after is not None else 0.5
    for group, label, shift in groups:
        data = [g.gap.numpy() for g in group]
        pos = np.arange(len(data)) + shift
        bp = ax2.boxplot(
            data,
            positions=pos,
            widths=width,
            patch_artist=True,
            showfliers=True,
            flierprops={"markersize": 2},
        )
        face = "C7" if shift == 0 else "C9"
        for patch in bp["boxes"]:
            patch.set_facecolor(face)
            patch.set_alpha(0.6)
        ax2.plot([], [], "s", color=face, alpha=0.6, label=label)
    ax2.axhline(0, color="k", lw=0.6)
    ax2.set_yscale("symlog", linthresh=0.1)
    ax2.set_xticks(np.arange(len(scores)) + (0.175 if after is not None else 0.0))
    ax2.set_xticklabels([s.kind for s in scores], fontsize=8, rotation=15)
    ax2.set_ylabel("gap = log p(w) - bound (nats)")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_iw_curves(ks, curves: dict, log_p: dict, ax=None):
    """How much of the gap the importance-weighted estimate leaves, against the number of
    samples K: mean over slices of log p(w) - IW_K, per kind (``curves``: ``{kind: (len(ks),
    B)}``, ``log_p``: ``{kind: (B,)}``). K = 1 is the bound's gap. Returns the Figure."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.6, 3.4))
    else:
        fig = ax.figure
    for i, (kind, c) in enumerate(curves.items()):
        rest = (torch.as_tensor(log_p[kind])[None] - torch.as_tensor(c)).mean(1).numpy()
        ax.plot(ks, rest, "o-", ms=3, color=KIND_COLOURS[i % 7], label=kind)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xscale("log", base=2)
    ax.set_yscale("symlog", linthresh=0.1)
    ax.set_xlabel("K (importance samples)")
    ax.set_ylabel("log p(w) - IW estimate (nats)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_penalty_sweep(
    log_vars, neg_entropy, slice_terms, decoder_log_var: float | None = None, baseline=None, ax=None
):
    """The DWP penalty of a layer per weight against the log-variance of q (the same for every
    weight): -H(q), the sum of slice terms, and their sum (``log_vars``, and the three per
    weight, as sequences of the same length). ``decoder_log_var``: the decoder's typical
    log-variance, drawn as a vertical line; ``baseline``: an optional ``(label, values)``
    drawn dashed (e.g. the N(0, 1) prior's KL per weight). Returns the Figure."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.0, 3.6))
    else:
        fig = ax.figure
    x = np.asarray(log_vars, dtype=float)
    h, s = np.asarray(neg_entropy, dtype=float), np.asarray(slice_terms, dtype=float)
    ax.plot(x, h, "--", color="C0", label="-H(q)")
    ax.plot(x, s, "--", color="C1", label="slice terms")
    ax.plot(x, h + s, "-", color="k", lw=2, label="penalty = -H(q) + slice terms")
    best = int(np.argmin(h + s))
    ax.plot(x[best], (h + s)[best], "o", color="k")
    if decoder_log_var is not None:
        ax.axvline(decoder_log_var, color="C3", ls=":", label="decoder log sigma^2 (median)")
    if baseline is not None:
        label, values = baseline
        ax.plot(x, np.asarray(values, dtype=float), ":", color="C2", label=label)
    # the slice terms explode once q's noise swamps the slices; keep the interesting range
    shown = [h + s, h] + ([np.asarray(baseline[1], dtype=float)] if baseline is not None else [])
    top = max(float(np.max(v[: best + 1])) for v in shown)
    bottom = min(float(np.min(v)) for v in (h, s, h + s))
    ax.set_ylim(bottom - 0.1 * (top - bottom), top + 0.25 * (top - bottom))
    ax.set_xlabel("log sigma^2 of q (every weight)")
    ax.set_ylabel("nats per weight")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# chapter 5: the experiment (kernel examples, latent space, init curves, accuracy vs n)


def plot_kernel_examples(bank, kernel_vaes: dict, n: int = 24, ncols: int = 8, seed: int = 0):
    """Per layer, real source slices (left) next to kernel VAE samples (right), each slice scaled
    to its own largest |weight|. VAE samples are decoder means at z ~ N(0, I) (the dwp init).
    Returns the Figure."""
    layers = [layer for layer in bank.layers if layer in kernel_vaes]
    fig, axes = plt.subplots(len(layers), 2, figsize=(8.4, 1.5 + 1.35 * len(layers)), squeeze=False)
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="0.85")
    g = torch.Generator().manual_seed(seed)
    for row, layer in zip(axes, layers, strict=True):
        real, fake = _real_and_sampled(bank.slices(layer, "train"), kernel_vaes[layer], n, g)
        k = real.shape[-1]
        for ax, sl, what in ((row[0], real, "source slices"), (row[1], fake, "kernel VAE samples")):
            _slice_panel(ax, sl, f"{layer} ({k}x{k}): {what}", cmap, ncols, 10)
    fig.tight_layout()
    return fig


def _real_and_sampled(bank_slices, vae, n: int, g: torch.Generator):
    """n random slices of a bank and n samples of a kernel VAE (decoder means at z ~ N(0, I))."""
    real = bank_slices[torch.randperm(len(bank_slices), generator=g)[:n]]
    return real, vae.sample(n, generator=g).cpu()


def _slice_panel(ax, slices, title: str, cmap, ncols: int, fontsize: int) -> None:
    """Slices tiled on ``ax``, each scaled to its own largest |weight|."""
    ax.imshow(slice_grid(slices, ncols=ncols), cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=fontsize)
    ax.axis("off")


@torch.no_grad()
def plot_latent_space(bank, kernel_vaes: dict, max_points: int = 3000, seed: int = 0):
    """The encoder means E[z | w] of the bank's training slices, one panel per layer, coloured by
    the slice's L2 norm. For a latent space of more than 2 dimensions the two dimensions with the
    largest spread are shown (the others are mostly unused). Returns the Figure."""
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
        ax.set_xlabel(f"z{dims[0] + 1}")
        ax.set_ylabel(f"z{dims[1] + 1}")
        d = vae.latent_dim
        ax.set_title(f"{layer}: {len(s):,} slices, latent dim {d}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_init_curves(rows, ax=None):
    """Test accuracy of a plain CNN vs training step from each initialisation: the mean over
    seeds, with a band from the lowest to the highest seed. ``rows``: dicts with ``init``,
    ``seed``, ``step``, ``test_acc`` (``init_curves.csv``). Returns the Figure."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.0, 3.6))
    else:
        fig = ax.figure
    inits = list(dict.fromkeys(r["init"] for r in rows))
    for i, init in enumerate(inits):
        by_step: dict[int, list[float]] = {}
        for r in rows:
            if r["init"] == init:
                by_step.setdefault(int(r["step"]), []).append(float(r["test_acc"]))
        steps = np.array(sorted(by_step))
        acc = [np.array(by_step[s]) for s in steps]
        mean = np.array([a.mean() for a in acc])
        seeds = max(len(a) for a in acc)
        ax.plot(steps, mean, color=f"C{i}", label=f"{init} ({seeds} seed{'s' * (seeds > 1)})")
        lo, hi = np.array([a.min() for a in acc]), np.array([a.max() for a in acc])
        ax.fill_between(steps, lo, hi, color=f"C{i}", alpha=0.2, lw=0)
    ax.set_xlabel("training step")
    ax.set_ylabel("MNIST test accuracy")
    ax.set_title(f"Plain CNN from {len(inits)} initialisations", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_accuracy_vs_n(rows, paper: bool = True, title: str | None = None, ax=None):
    """Ensemble test accuracy vs training-set size n per method (mean ± std over split seeds,
    seeds as dots), with the paper's numbers for the same prior dashed. ``rows``: the dicts of
    ``results.csv``. Returns the Figure."""
    from .experiment import INIT_LABELS, PAPER_RESULTS, PRIOR_LABELS, summarise

    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
    else:
        fig = ax.figure
    stats = summarise(rows)
    methods = list(dict.fromkeys((k[0], k[1]) for k in stats))
    priors_drawn = []
    for i, (prior, init) in enumerate(methods):
        ns = sorted(k[2] for k in stats if k[:2] == (prior, init))
        mean = np.array([stats[(prior, init, n)]["mean"] for n in ns])
        std = np.array([stats[(prior, init, n)]["std"] for n in ns])
        label = f"{PRIOR_LABELS.get(prior, prior)}, {INIT_LABELS.get(init, init)} init"
        ax.errorbar(ns, mean, yerr=std, color=f"C{i}", marker="o", capsize=3, label=label)
        pts = [
            (int(r["n"]), float(r["acc_ensemble"]))
            for r in rows
            if (r["prior"], r["init"]) == (prior, init)
        ]
        ax.scatter(*zip(*pts, strict=True), color=f"C{i}", s=8, alpha=0.4)
        ref = PAPER_RESULTS.get(prior)
        if paper and ref and prior not in priors_drawn:
            priors_drawn.append(prior)
            rn = sorted(ref)
            ax.plot(rn, [ref[n] for n in rn], color=f"C{i}", ls="--", lw=1, alpha=0.8)
    if paper:
        ax.plot([], [], color="0.4", ls="--", lw=1, label="paper (Atanov et al. 2019)")
    ax.set_xscale("log")
    sizes = sorted({int(r["n"]) for r in rows})
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.minorticks_off()
    ax.set_xlabel("training examples n (class-balanced)")
    ax.set_ylabel("MNIST test accuracy (ensemble)")
    ax.set_title(title or "Bayesian CNN: priors compared", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


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
            real, fake = _real_and_sampled(banks[name][layer], priors[name][layer], n, g)
            k = real.shape[-1]
            for ax, sl, what in ((axes[i, 2 * j], real, "bank"), (axes[i, 2 * j + 1], fake, "VAE")):
                _slice_panel(ax, sl, f"{name} {what}, {layer} ({k}x{k})", cmap, ncols, 9)
    fig.tight_layout()
    return fig


def plot_prior_scores(rows, value: str = "log_p_iw"):
    """Mean log p(w) per slice (importance-weighted) of each kind of slice under each prior, one
    panel per layer (``rows`` of :func:`dwp_lib.prior_scores.score_priors`). The x-axis is
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


# ------------------------------------------------------------------------------------------------
# Chapter 5: the ablation at a glance
# ------------------------------------------------------------------------------------------------


def _method_text(method: str) -> str:
    prior, init = method.split(":")
    prior = {"normal": "N(0,1)", "dwp": "DWP"}.get(prior, prior.replace("normal", "N(0,1)"))
    return f"{prior}, {init} init"


def plot_forest(rows, ax=None):
    """A forest plot of the ablation's paired differences (``rows`` of
    :func:`dwp_lib.ablation.forest_rows`): per cell and contrast, the mean difference in
    accuracy points with a bar of one standard deviation over split seeds, the seeds as dots,
    and the zero line. Rows run top to bottom in the table's order. Returns the Figure."""
    n = len(rows)
    if ax is None:
        fig, ax = plt.subplots(figsize=(7.2, 0.32 * n + 1.2))
    else:
        fig = ax.figure
    y = np.arange(n)[::-1]
    for yi, r in zip(y, rows, strict=True):
        color = "C2" if r["mean"] > 0 else "C3"
        ax.errorbar(r["mean"], yi, xerr=r["sd"], fmt="o", color=color, capsize=3, ms=5)
        ax.scatter(r["diffs"], [yi] * len(r["diffs"]), s=8, color=color, alpha=0.35, lw=0)
    ax.axvline(0, color="0.3", lw=1)
    labels = []
    for r in rows:
        what = (
            ""
            if (r["a"], r["b"]) == ("dwp:dwp", "normal:xavier")
            else (f" [{_method_text(r['a'])} vs {_method_text(r['b'])}]")
        )
        labels.append(f"{r['level']}, n = {r['n']}{what} ({len(r['seeds'])})")
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xlabel("paired difference in test accuracy (points); DWP vs N(0,1) unless noted")
    ax.set_title("The ablation: each factor against the base (mean ± sd over seeds)", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_fit_vs_accuracy(runs, method: str = "dwp:dwp", n: int = 50, ax=None):
    """The data term at the end of training (nats over the training set, log axis) against
    test accuracy, one dot per run of ``method`` at size ``n`` in the ablation's ``runs.csv``
    rows, the base cell highlighted. Returns the Figure."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.0, 3.8))
    else:
        fig = ax.figure
    pts = [(float(r["nll_end"]), float(r["accuracy"]), r["cell"]) for r in runs
           if r["method"] == method and int(r["n"]) == n]  # fmt: skip
    if not pts:
        raise ValueError(f"no runs of {method} at n = {n}")
    x = np.array([p[0] for p in pts])
    acc = np.array([p[1] for p in pts])
    base = np.array([p[2] == "base" for p in pts])
    ax.scatter(x[~base], acc[~base], s=14, color="C0", alpha=0.6, label="the other cells' runs")
    ax.scatter(x[base], acc[base], s=24, color="C3", label="the base cell's runs")
    ax.set_xscale("log")
    ax.set_xlabel("data term at the end of training (nats, log scale)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{_method_text(method)}, n = {n}: fit against accuracy", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
