"""The prior-scores study's figures, drawn from stand-in kernel VAEs and tiny rows."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import torch  # noqa: E402
from support import StandInVAE  # noqa: E402

from studies.prior_scores import plots  # noqa: E402

SIZES = {"conv1": 7, "conv2": 5}


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
