"""Figures of the ablation: the forest of paired differences, and the data term against accuracy."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def _method_text(method: str) -> str:
    prior, init = method.split(":")
    prior = {"normal": "N(0,1)", "dwp": "DWP"}.get(prior, prior.replace("normal", "N(0,1)"))
    return f"{prior}, {init} init"


def plot_forest(rows, ax=None):
    """A forest plot of the ablation's paired differences (``rows`` of
    :func:`studies.ablation.tables.forest_rows`): per cell and contrast, the mean difference in
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
