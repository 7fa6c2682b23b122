"""The figures of chapter 5 (and what the plot modules share), drawn from tiny rows and tensors.

The other chapters' figures are drawn in their modules' tests (test_vi, test_vae,
test_implicit_prior, test_source_nets, test_ablation, test_data). Here the banks and kernel
VAEs are stand-ins: a plot reads tensors and rows, and trains nothing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402

from dwp_lib import plots  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"conv1": 7, "conv2": 5}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


class StandInVAE(torch.nn.Module):
    """What the figures use of a kernel VAE: ``encode``, ``sample``, ``latent_dim``."""

    def __init__(self, k: int, latent_dim: int = 3):
        super().__init__()
        self.k, self.latent_dim = k, latent_dim
        self.enc = torch.nn.Linear(k * k, latent_dim)

    def encode(self, w):
        mu = self.enc(w.flatten(1))
        return mu, torch.zeros_like(mu)

    def sample(self, n, generator=None):
        return torch.randn(n, self.k, self.k, generator=generator)


def _bank(n: int = 40):
    g = torch.Generator().manual_seed(0)
    slices = {layer: torch.randn(n, k, k, generator=g) for layer, k in SIZES.items()}
    return SimpleNamespace(layers=tuple(SIZES), slices=lambda layer, split: slices[layer])


def test_plots_import_nothing_else_from_the_library():
    code = "import sys, dwp_lib.plots; print(sorted(m for m in sys.modules if 'dwp_lib.' in m))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert all(m.startswith("dwp_lib.plots") for m in eval(out)), out


def test_every_public_name_is_exported():
    for name in plots.__all__:
        assert getattr(plots, name) is not None
    modules = ("common", "vi", "reparam", "vae", "implicit_prior", "experiment")
    public = {
        n
        for m in modules
        for n, v in vars(getattr(plots, m)).items()
        if not n.startswith("_") and getattr(v, "__module__", None) == f"dwp_lib.plots.{m}"
    }
    assert public <= set(plots.__all__), public - set(plots.__all__)


def test_to_numpy():
    t = torch.ones(2, 3, requires_grad=True)
    assert isinstance(plots.to_numpy(t), np.ndarray) and plots.to_numpy(t).shape == (2, 3)
    assert plots.to_numpy([1.0, 2.0]).tolist() == [1.0, 2.0]


def test_kernel_examples_and_latent_space():
    bank = _bank()
    vaes = {layer: StandInVAE(k) for layer, k in SIZES.items()}
    fig = plots.plot_kernel_examples(bank, vaes, n=12, ncols=4)
    assert len(fig.axes) == 2 * len(SIZES)
    titles = [a.get_title() for a in fig.axes]
    assert titles[:2] == ["conv1 (7x7): source slices", "conv1 (7x7): kernel VAE samples"]
    # 12 slices in rows of 4, each scaled to its own largest |weight|
    assert fig.axes[2].images[0].get_array().shape == (3 * 6 - 1, 4 * 6 - 1)
    assert np.nanmax(np.abs(fig.axes[0].images[0].get_array())) == pytest.approx(1.0)

    fig = plots.plot_latent_space(bank, {"conv2": vaes["conv2"]}, max_points=30)
    ax, colour_bar = fig.axes
    assert len(ax.collections[0].get_offsets()) == 30
    assert ax.get_title() == "conv2: 30 slices, latent dim 3"
    assert colour_bar.get_ylabel() == "slice L2 norm"


def test_init_curves():
    rows = [
        {"init": init, "seed": seed, "step": step, "test_acc": 0.1 * step + 0.01 * seed + bonus}
        for init, bonus in (("xavier", 0.0), ("dwp", 0.05))
        for seed in (0, 1)
        for step in (1, 2, 3)
    ]
    fig = plots.plot_init_curves(rows)
    (ax,) = fig.axes
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
    fig = plots.plot_accuracy_vs_n(rows, title="two priors")
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
    fig = plots.plot_accuracy_vs_n(rows, paper=False)
    assert not any(line.get_linestyle() == "--" for line in fig.axes[0].lines)


def test_prior_samples_and_scores():
    g = torch.Generator().manual_seed(1)
    banks = {p: {layer: torch.randn(20, k, k, generator=g) for layer, k in SIZES.items()}
             for p in ("ours", "theirs")}  # fmt: skip
    priors = {p: {layer: StandInVAE(k) for layer, k in SIZES.items()} for p in banks}
    fig = plots.plot_prior_samples(priors, banks, n=8, ncols=4)
    assert len(fig.axes) == len(SIZES) * 2 * len(priors)
    assert fig.axes[3].get_title() == "theirs VAE, conv1 (7x7)"

    rows = [
        {"prior": p, "layer": layer, "kind": kind, "log_p_iw": v}
        for p, shift in (("ours", 0.0), ("theirs", -5.0))
        for layer in SIZES
        for kind, v in (("real", 10.0 + shift), ("noise", -3000.0 + shift))
    ]
    fig = plots.plot_prior_scores(rows)
    assert len(fig.axes) == len(SIZES)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["real", "noise"]
    widths = sorted(p.get_width() for p in ax.patches)
    assert widths == [-3005.0, -3000.0, 5.0, 10.0] and ax.get_xscale() == "symlog"
    assert [t.get_text() for t in fig.axes[-1].get_legend().get_texts()] == [
        "ours prior",
        "theirs prior",
    ]
