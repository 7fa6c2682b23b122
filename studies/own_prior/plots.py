"""Figures of the search for a prior of our own: every prior against the released one, and the source curve."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def plot_prior_search(rows, target: float = -0.02, ax=None):
    """Every prior of the search (:func:`studies.own_prior.own_prior.table_rows`) against the released
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
    """The search's curve (:func:`studies.own_prior.source_curve.curve_rows`): each source stage's per-seed
    accuracy difference to the released prior (points) and its mean (bar), against the source
    compute over the book's (log axis); the target band and, when ``authors`` gives it, the
    authors' source compute (a range: which notMNIST they used is not known). ``fits``
    (:func:`studies.own_prior.source_curve.factor_fits`): each factor's line, dashed, continued to that
    factor's authors' value. Returns the Figure."""
    from .source_curve import AUTHORS_VALUE, FACTOR_NAME

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
