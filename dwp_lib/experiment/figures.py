"""Figures of a pipeline run: the initialisation curves and accuracy against n."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ..plots.common import finish
from .names import INIT_LABELS, PAPER_RESULTS, PRIOR_LABELS
from .results import summarise


def plot_init_curves(rows, ax=None):
    """Test accuracy vs step from each init (mean, band over seeds), and the last third zoomed."""
    if ax is None:
        fig, (ax, zoom) = plt.subplots(1, 2, figsize=(8.4, 3.6), width_ratios=(3, 2))
    else:
        fig, zoom = ax.figure, None
    inits = list(dict.fromkeys(r["init"] for r in rows))
    last = max(int(r["step"]) for r in rows)
    ends = []
    for i, init in enumerate(inits):
        by_step: dict[int, list[float]] = {}
        for r in rows:
            if r["init"] == init:
                by_step.setdefault(int(r["step"]), []).append(float(r["test_acc"]))
        steps = np.array(sorted(by_step))
        acc = [np.array(by_step[s]) for s in steps]
        mean = np.array([a.mean() for a in acc])
        seeds = max(len(a) for a in acc)
        lo, hi = np.array([a.min() for a in acc]), np.array([a.max() for a in acc])
        for a in (ax, zoom) if zoom is not None else (ax,):
            label = f"{init} ({seeds} seed{'s' * (seeds > 1)})" if a is ax else None
            a.plot(steps, mean, color=f"C{i}", label=label)
            a.fill_between(steps, lo, hi, color=f"C{i}", alpha=0.2, lw=0)
        ends += [*lo[steps >= 2 * last / 3], *hi[steps >= 2 * last / 3]]
    ax.set(xlabel="training step", ylabel="MNIST test accuracy")
    ax.set_title(f"Plain CNN from {len(inits)} initialisations", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    if zoom is not None and ends:
        lo_end, hi_end = min(ends), max(ends)
        pad = 0.1 * (hi_end - lo_end) + 1e-3
        zoom.set(xlim=(2 * last / 3, last), ylim=(lo_end - pad, hi_end + pad))
        zoom.set_xlabel("training step (last third)")
        zoom.set_title("the end of training, zoomed", fontsize=10)
        zoom.grid(alpha=0.3)
    return finish(fig)


def plot_accuracy_vs_n(rows, paper: bool = True, title: str | None = None, ax=None):
    """Accuracy vs n per method of ``results.csv`` rows: mean ± std, seeds as dots, paper dashed."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6.4, 4.0))
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
    ax.set(xlabel="training examples n (class-balanced)", ylabel="MNIST test accuracy (ensemble)")
    ax.set_title(title or "Bayesian CNN: priors compared", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return finish(fig)
