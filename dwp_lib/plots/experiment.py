"""Chapter 5, the experiment: kernel examples, latent spaces, initialisation curves, accuracy
against n, prior samples and scores, and the ablation at a glance (forest, fit against
accuracy).

:func:`plot_accuracy_vs_n` reads the method labels, the paper's numbers and ``summarise`` from
:mod:`dwp_lib.experiment` inside the function (that package imports this one lazily too).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from .common import slice_grid


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
    from ..experiment import INIT_LABELS, PAPER_RESULTS, PRIOR_LABELS, summarise

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


# --- the ablation at a glance ------------------------------------------------------------------


def _method_text(method: str) -> str:
    prior, init = method.split(":")
    prior = {"normal": "N(0,1)", "dwp": "DWP"}.get(prior, prior.replace("normal", "N(0,1)"))
    return f"{prior}, {init} init"


def plot_forest(rows, ax=None):
    """A forest plot of the ablation's paired differences (``rows`` of
    :func:`dwp_lib.ablation_tables.forest_rows`): per cell and contrast, the mean difference in
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


def plot_prior_search(rows, target: float = -0.02, ax=None):
    """Every prior of the search (:func:`dwp_lib.own_prior.table_rows`) against the released
    prior, paired by split seed, in accuracy points: per line its seeds as dots and its mean
    with one standard deviation over them, top to bottom in the table's order; the released
    prior's own line is the zero line, the band within ``target`` of it is shaded, and the
    N(0, 1) line's mean, if there is one, is dashed. Our priors on both layers, the mixed ones
    and N(0, 1) get their own colours. Returns the Figure."""
    shown = [
        r for r in rows if r["released_differences"] and r["method"] != "dwp@released:dwp@released"
    ]
    if not shown:
        raise ValueError("no prior with rows paired with the released prior")
    if ax is None:
        fig, ax = plt.subplots(figsize=(9.0, 0.34 * len(shown) + 2.2), layout="constrained")
    else:
        fig = ax.figure
    y = np.arange(len(shown))[::-1]

    def kind(r):
        if r["own"]:
            return "C0", "ours on both layers"
        if r["method"].split(":")[0] == "normal":
            return "0.35", "N(0, 1) from Xavier"
        return "C4", "ours on one layer, released on the other"

    for yi, r in zip(y, shown, strict=True):
        d = 100 * np.array(r["released_differences"])
        colour, _ = kind(r)
        ax.scatter(d, np.full(len(d), yi), s=12, color=colour, alpha=0.45, lw=0)
        ax.errorbar(d.mean(), yi, xerr=d.std(ddof=1) if len(d) > 1 else 0, fmt="o", ms=5,
                    color=colour, capsize=3)  # fmt: skip
    normal = [r for r in shown if r["method"].split(":")[0] == "normal"]
    if normal:
        ax.axvline(100 * normal[0]["vs_released"], color="0.35", ls="--", lw=1,
                   label="N(0, 1) from Xavier (mean)")  # fmt: skip
    ax.axvline(0, color="k", lw=0.8, label="the released prior")
    ax.axvspan(100 * target, 0, color="C2", alpha=0.15,
               label=f"within {-100 * target:.0f} points of it")  # fmt: skip
    for colour, text in dict.fromkeys(kind(r) for r in shown):
        ax.scatter([], [], color=colour, label=text)
    ax.set_yticks(y, [f"{r['label']} ({len(r['released_differences'])})" for r in shown],
                  fontsize=7)  # fmt: skip
    ax.set_xlabel("accuracy - released prior, paired by split seed (points)")
    ax.set_title("Every prior of the search against the released one (n = 50, authors' setting)",
                 fontsize=9)  # fmt: skip
    ax.grid(axis="x", alpha=0.3)
    if fig.get_layout_engine() is not None:  # below the axes, where it hides no line
        fig.legend(fontsize=7, loc="outside lower center", ncol=3, frameon=False)
    else:
        ax.legend(fontsize=7, loc="lower left")
    return fig


def plot_source_curve(rows, authors=None, target: float = -0.02, ax=None, fits=None):
    """The search's curve (:func:`dwp_lib.source_curve.curve_rows`): each source stage's per-seed
    accuracy difference to the released prior (points) and its mean (bar), against the source
    compute over the book's (log axis); the target band and, when ``authors`` gives it, the
    authors' source compute (a range: which notMNIST they used is not known). ``fits``
    (:func:`dwp_lib.source_curve.factor_fits`): each factor's line, dashed, continued to that
    factor's authors' value. Returns the Figure."""
    from ..source_curve import AUTHORS_VALUE, FACTOR_NAME

    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 5.0), layout="constrained")
    else:
        fig = ax.figure
    ran = [r for r in rows if r["differences"] and r["ratio"] is not None]
    if not ran:
        raise ValueError("no source stage with rows paired with the released prior")
    colours = [f"C{i}" for i in range(10) if i != 2]  # C2 (green) is the target band's
    for i, r in enumerate(ran):
        d = 100 * np.array(r["differences"])
        c = colours[i % len(colours)]
        ax.scatter(np.full(len(d), r["ratio"]), d, s=16, color=c, alpha=0.7)
        ax.hlines(d.mean(), r["ratio"] / 1.15, r["ratio"] * 1.15, color=c, lw=2,
                  label=f"{r['change']} ({len(d)} seeds)")  # fmt: skip
    for factor, f in (fits or {}).items():
        x = np.geomspace(1.0, f["authors"], 50)
        label = (f"along {FACTOR_NAME.get(factor, factor)} alone: fit of {f['stages']} stages, "
                 f"{'out' if f.get('measured') else 'continued'} to "
                 f"{AUTHORS_VALUE.get(factor, 'the authors’ value')}")  # fmt: skip
        ax.plot(x, 100 * (f["intercept"] + f["slope"] * np.log2(x)), ls="--", color="0.3",
                lw=1, label=label)  # fmt: skip
    ax.axhline(0, color="k", lw=0.8)
    ax.axhspan(
        100 * target, 0, color="C2", alpha=0.15, label="within 2 points of the released prior"
    )
    if authors is not None:
        ax.axvspan(*authors, color="0.6", alpha=0.3, label="the authors' source compute")
    ax.set_xscale("log")
    ax.set_xlim(0.7, (authors[1] * 1.5) if authors else None)
    ax.set_xlabel("source compute (x the book's source stage, log scale)")
    ax.set_ylabel("accuracy - released prior (points)")
    ax.set_title("Our own prior against the released one (n = 50, authors' setting)", fontsize=9)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        if fig.get_layout_engine() is not None:  # below the axes, where it hides no point
            fig.legend(fontsize=7, loc="outside lower center", ncol=1, frameon=False)
        else:
            ax.legend(fontsize=7)
            fig.tight_layout()
    return fig
