"""The pipeline's own figures (dwp_lib.experiment.figures), drawn from tiny rows."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402

from dwp_lib.experiment import figures  # noqa: E402


def test_init_curves():
    rows = [
        {"init": init, "seed": seed, "step": step, "test_acc": 0.1 * step + 0.01 * seed + bonus}
        for init, bonus in (("xavier", 0.0), ("dwp", 0.05))
        for seed in (0, 1)
        for step in (1, 2, 3)
    ]
    fig = figures.plot_init_curves(rows)
    ax, zoom = fig.axes
    assert zoom.get_xlim() == (2.0, 3.0) and zoom.get_ylim()[1] < 0.5  # the end, zoomed
    assert [line.get_label() for line in ax.lines] == ["xavier (2 seeds)", "dwp (2 seeds)"]
    np.testing.assert_allclose(ax.lines[0].get_xydata(), [[1, 0.105], [2, 0.205], [3, 0.305]])
    assert len(ax.collections) == 2  # a seed band per init
    assert ax.get_title() == "Plain CNN from 2 initialisations"


def test_accuracy_vs_n():
    rows = [
        {"prior": prior, "init": "xavier", "n": n, "seed": seed, "acc_ensemble": acc + 0.01 * seed}
        for prior, acc in (("normal", 0.7), ("dwp", 0.75))
        for n in (50, 100)
        for seed in (0, 1, 2)
    ]
    fig = figures.plot_accuracy_vs_n(rows, title="two priors")
    (ax,) = fig.axes
    assert ax.get_title() == "two priors" and ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["50", "100"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sorted(legend) == [
        "DWP, xavier init",
        "N(0, 1), xavier init",
        "paper (Atanov et al. 2019)",
    ]
    # the seeds as dots (3 per size and prior), and the means with their error bars
    dots = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert [len(c.get_offsets()) for c in dots] == [6, 6]
    means = sorted(line.get_ydata().tolist() for line in ax.lines if line.get_marker() == "o")
    np.testing.assert_allclose(means, [[0.71, 0.71], [0.76, 0.76]])  # the means over seeds
    paper = [line for line in ax.lines if line.get_linestyle() == "--" and len(line.get_xdata())]
    assert len(paper) == 2  # the paper's DWP and N(0, 1) rows
    fig = figures.plot_accuracy_vs_n(rows, paper=False)
    assert not any(line.get_linestyle() == "--" for line in fig.axes[0].lines)
