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
from support import StandInVAE  # noqa: E402

from dwp_lib import plots  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SIZES = {"conv1": 7, "conv2": 5}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


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
