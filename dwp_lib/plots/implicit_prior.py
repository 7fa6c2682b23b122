"""Chapter 4: the kernel bank (slices, norms, source accuracy), kinds of slices, the posterior vs
reverse models, the auxiliary bound and its gap, importance-weighted curves, the penalty sweep."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from .common import finish, slice_grid

__all__ = ["KIND_COLOURS", "plot_bank_slices", "plot_bound_and_gap", "plot_iw_curves"]
__all__ += ["plot_penalty_sweep", "plot_posterior_vs_reverse", "plot_slice_kinds"]
__all__ += ["plot_slice_norms", "plot_source_accuracy"]

KIND_COLOURS = ("C0", "C1", "C2", "C3", "C4", "C5", "C6")


def plot_bank_slices(
    bank,
    split: str = "train",
    n: int = 48,
    ncols: int = 12,
    order: str = "random",
    scale: str = "each",
    seed: int = 0,
):
    """Slices of each layer of a :class:`~dwp_lib.kernel_bank.KernelBank`, one panel per layer;
    ``order``: ``"random"`` (seeded) or ``"norm"`` (largest first). Red positive, blue negative."""
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
    return finish(fig)


def plot_slice_norms(bank, bins: int = 60):
    """Slice L2 norms per layer: kept vs pruned, the threshold, a Xavier slice's typical norm."""
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
        ax.set(xlabel="slice L2 norm", ylabel="slices")
        ax.legend(fontsize=8)
    return finish(fig)


def plot_source_accuracy(bank):
    """Test accuracy of each source net (from the bank's provenance), with the mean."""
    nets = bank.provenance["nets"]
    acc = np.array([r["test_accuracy"] for r in nets])
    fig, ax = plt.subplots(figsize=(max(3.0, 0.25 * len(acc) + 1.5), 2.6))
    ax.bar(np.arange(len(acc)), acc, color="C0")
    ax.axhline(acc.mean(), color="C3", ls="--", label=f"mean {acc.mean():.3f}")
    ax.set(ylim=(max(0.0, acc.min() - 0.05), 1.0), xlabel="source net", ylabel="test accuracy")
    ax.set_title(bank.provenance.get("data", {}).get("label", "source task"), fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return finish(fig)


def plot_slice_kinds(kinds: dict, n: int = 8):
    """``n`` slices per kind ``{name: (N, k, k)}``, a row each with its rms, on one colour scale."""
    names = list(kinds)
    vmax = max(float(torch.as_tensor(kinds[k][:n]).abs().max()) for k in names) or 1.0
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="0.85")
    fig, axes = plt.subplots(len(names), 1, figsize=(0.62 * n + 2.4, 0.78 * len(names) + 0.5))
    axes = np.atleast_1d(axes)
    for ax, name in zip(axes, names, strict=True):
        s = torch.as_tensor(kinds[name]).detach().float().cpu()
        grid = slice_grid(s[:n], ncols=n, scale="shared")
        ax.imshow(grid, cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.set(xticks=[], yticks=[])
        rms = f"{name}\nrms {s.pow(2).mean().sqrt():.3f}"
        ax.set_ylabel(rms, rotation=0, ha="right", va="center", fontsize=8)
    axes[0].set_title(f"shared colour scale: ±{vmax:.2f}", fontsize=9)
    return finish(fig)


def _ellipse(mean, var, n_sd: float, n: int = 100) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n)
    sd = np.sqrt(np.asarray(var, dtype=float))
    return np.stack([mean[0] + n_sd * sd[0] * np.cos(t), mean[1] + n_sd * sd[1] * np.sin(t)], 1)


@torch.no_grad()
def plot_posterior_vs_reverse(grid, slices: dict, reverse: dict, zoom: float = 4.0):
    """True posterior p(z|w) on a ``LatentGrid`` (filled) against reverse models r(z|w) (1, 2 sd),
    one panel per slice of ``slices`` ``{title: (k, k)}``, >= ``zoom`` posterior sds wide.
    ``reverse``: ``{label: KernelVAE}``, or ``{label: {title: KernelVAE}}`` for one per panel."""
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
        lo, hi = np.array([m1 - half, m2 - half]), np.array([m1 + half, m2 + half])
        for mu, var in encoded.values():
            e = _ellipse(mu[b], var[b], 2.0)
            lo, hi = np.minimum(lo, e.min(0)), np.maximum(hi, e.max(0))
        ax.contourf(axis, axis, p.T, levels=12, cmap="Greys")
        for i, (label, (mu, var)) in enumerate(encoded.items()):
            for n_sd in (1.0, 2.0):
                e = _ellipse(mu[b], var[b], n_sd)
                legend = f"r(z|w): {label}" if n_sd == 1.0 else None
                ax.plot(e[:, 0], e[:, 1], styles[i % 4], color=f"C{i + 1}", lw=1.4, label=legend)
        pad = 0.08 * (hi - lo).max()
        span = (hi - lo).max() / 2 + pad
        c = (lo + hi) / 2
        ax.set(xlim=(c[0] - span, c[0] + span), ylim=(c[1] - span, c[1] + span), aspect="equal")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("z1")
        if b == 0:
            ax.set_ylabel("z2")
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.suptitle(
        "grey: true posterior p(z|w) (quadrature); lines: reverse models, 1 and 2 sd", fontsize=9
    )
    return finish(fig)


def plot_bound_and_gap(scores: list, after: list | None = None):
    """Left: per slice, the bound against log p(w), one colour per kind, and the line bound =
    log p(w). Right: the gap per kind (box plots), before and (``after``) after training r(z|w).
    ``scores``/``after``: lists of :class:`~dwp_lib.implicit_prior.SliceScores`."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10.5, 3.8))
    lo, hi = np.inf, -np.inf
    for i, s in enumerate(scores):
        x, y = s.log_p.numpy(), s.bound.numpy()
        ax1.scatter(x, y, s=10, color=KIND_COLOURS[i % 7], alpha=0.7, label=s.kind)
        lo, hi = min(lo, x.min(), y.min()), max(hi, x.max(), y.max())
    ax1.plot([lo, hi], [lo, hi], "k-", lw=0.8, label="bound = log p(w)")
    ax1.set(xlabel="log p(w) (nats)", ylabel="auxiliary bound (nats)")
    ax1.legend(fontsize=7)
    groups = [(scores, "VAE encoder as r", 0.0)]
    if after is not None:
        groups.append((after, "r trained on these slices", 0.35))
    width = 0.3 if after is not None else 0.5
    box = dict(widths=width, patch_artist=True, showfliers=True, flierprops={"markersize": 2})
    for group, label, shift in groups:
        data = [g.gap.numpy() for g in group]
        bp = ax2.boxplot(data, positions=np.arange(len(data)) + shift, **box)
        face = "C7" if shift == 0 else "C9"
        for patch in bp["boxes"]:
            patch.set_facecolor(face)
            patch.set_alpha(0.6)
        ax2.plot([], [], "s", color=face, alpha=0.6, label=label)
    ax2.axhline(0, color="k", lw=0.6)
    ax2.set_yscale("symlog", linthresh=0.1)
    ticks = np.arange(len(scores)) + (0.175 if after is not None else 0.0)
    ax2.set_xticks(ticks, [s.kind for s in scores], fontsize=8, rotation=15)
    ax2.set_ylabel("gap = log p(w) - bound (nats)")
    ax2.legend(fontsize=7)
    return finish(fig)


def plot_iw_curves(ks, curves: dict, log_p: dict, ax=None):
    """Mean over slices of log p(w) - IW_K against K, per kind (``curves``: ``{kind:
    (len(ks), B)}``, ``log_p``: ``{kind: (B,)}``). K = 1 is the bound's gap."""
    fig, ax = plt.subplots(figsize=(5.6, 3.4)) if ax is None else (ax.figure, ax)
    for i, (kind, c) in enumerate(curves.items()):
        rest = (torch.as_tensor(log_p[kind])[None] - torch.as_tensor(c)).mean(1).numpy()
        ax.plot(ks, rest, "o-", ms=3, color=KIND_COLOURS[i % 7], label=kind)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xscale("log", base=2)
    ax.set_yscale("symlog", linthresh=0.1)
    ax.set(xlabel="K (importance samples)", ylabel="log p(w) - IW estimate (nats)")
    ax.legend(fontsize=7)
    return finish(fig)


def plot_penalty_sweep(
    log_vars, neg_entropy, slice_terms, decoder_log_var: float | None = None, baseline=None, ax=None
):
    """The DWP penalty per weight against q's log-variance (one for every weight): -H(q), the
    slice terms, and their sum. ``decoder_log_var``: a vertical line; ``baseline``: an optional
    ``(label, values)`` drawn dashed (e.g. the N(0, 1) prior's KL per weight)."""
    fig, ax = plt.subplots(figsize=(6.0, 3.6)) if ax is None else (ax.figure, ax)
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
    ax.set(xlabel="log sigma^2 of q (every weight)", ylabel="nats per weight")
    ax.legend(fontsize=7)
    return finish(fig)
