"""The kernel-bank statistics (studies.bank_stats) on slices whose answers are known."""

from __future__ import annotations

import math

import pytest
import torch

from studies.bank_stats import bank_stats as bs


def _noise(n=20000, k=7, seed=0):
    return torch.randn(n, k, k, generator=torch.Generator().manual_seed(seed))


def test_white_noise_has_no_structure():
    k = 7
    st = bs.slice_statistics(_noise(k=k))
    assert st["dc_share"] == pytest.approx(1 / k**2, rel=0.05)
    assert abs(st["neighbour_corr"]) < 0.03  # mean removal biases it by about -1/k^2
    low_bins = int((bs.radial_radius(k) <= 1).sum())
    assert low_bins == 5  # DC and its four neighbours
    assert st["low_freq_share"] == pytest.approx(low_bins / k**2, rel=0.05)
    radii, share = bs.radial_spectrum(_noise(k=k))
    assert radii[0] == 0 and torch.all(radii[1:] > radii[:-1])
    assert torch.allclose(share, torch.full_like(share, 1 / k**2), rtol=0.1)
    assert st["norm_median"] == pytest.approx(math.sqrt(k * k - 2 / 3), rel=0.02)  # chi, 49 dof


def test_constant_smooth_and_checkerboard_slices():
    k = 5
    const = torch.full((3, k, k), 0.7)
    st = bs.slice_statistics(const)
    assert st["dc_share"] == pytest.approx(1.0) and st["low_freq_share"] == pytest.approx(1.0)
    assert st["neighbour_corr"] == 0.0  # nothing left once the mean is removed
    yy, xx = torch.meshgrid(torch.arange(k) - 2.0, torch.arange(k) - 2.0, indexing="ij")
    blob = torch.exp(-(xx**2 + yy**2) / 4.0)[None]
    assert bs.slice_statistics(blob)["neighbour_corr"] > 0.3
    ramp = xx[None].clone()
    assert bs.slice_statistics(ramp)["neighbour_corr"] > 0.7
    checker = ((xx + yy) % 2 * 2 - 1)[None]
    assert bs.slice_statistics(checker)["neighbour_corr"] == pytest.approx(-1.0, abs=0.05)
    assert bs.slice_statistics(torch.ones(1, k, k))["norm_min"] == pytest.approx(k)


def test_power_shares_sum_to_one_per_slice():
    w = _noise(50, 5)
    assert torch.allclose(bs.power_shares(w).flatten(1).sum(1), torch.ones(50), atol=1e-5)


def test_bad_slices_are_refused():
    with pytest.raises(ValueError, match=r"\(N, k, k\)"):
        bs.slice_statistics(torch.zeros(4, 5, 6))
    with pytest.raises(ValueError, match=r"\(N, k, k\)"):
        bs.slice_statistics(torch.zeros(0, 5, 5))
    w = _noise(4, 5)
    w[1, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        bs.slice_statistics(w)


def test_percent_keeps_a_sparse_share_visible():
    # the sparse banks keep a fraction of a percent of their 5x5 slices: not "0%"
    assert [bs.percent(s) for s in (0.89, 0.0024, 0.0, 1.0)] == ["89%", "0.24%", "0%", "100%"]


def test_rows_table_and_figure():
    banks = {
        "a": {"conv1": _noise(300, 7, 1), "conv2": _noise(300, 5, 2)},
        "b": {"conv1": 2 * _noise(200, 7, 3), "conv2": _noise(200, 5, 4)},
    }
    rows = bs.bank_rows(banks, {"a": {"conv1": 0.5, "conv2": 0.25}})
    assert [(r["bank"], r["layer"]) for r in rows] == [
        ("a", "conv1"),
        ("a", "conv2"),
        ("b", "conv1"),
        ("b", "conv2"),
    ]
    assert rows[0]["kept_fraction"] == 0.5 and rows[2]["kept_fraction"] is None
    assert rows[2]["norm_median"] == pytest.approx(2 * rows[0]["norm_median"], rel=0.15)
    table = bs.stats_markdown(rows)
    assert table.count("\n") == 2 + len(rows) - 1 and "| conv1 | a | 300 | 50% |" in table
    fig = bs.plot_bank_stats(banks)
    axes = fig.axes
    assert len(axes) == 6
    assert all(len(ax.patches) == 2 for ax in (axes[0], axes[2]))  # one histogram per bank
    assert len(axes[1].lines) == 2 and axes[1].get_yscale() == "log"
    assert axes[3].get_title().startswith("conv2 (5x5)")
    import matplotlib.pyplot as plt

    plt.close(fig)
