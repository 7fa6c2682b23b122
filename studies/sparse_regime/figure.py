"""The curve's figure (``figures/curve.png``): the live fraction of each layer's slices against
Adam steps (log scale) and the median norm of the live slices, with the authors' released banks
as reference lines when their files are in the cache (nothing is downloaded here).

The released banks hold the live slices of 100 x FConv(256, 512) (``SourceNetsConfig.paper()``),
so a layer's live fraction is its slices over ``n_nets * c_in * c_out``. Their pinned 5x5 file is
the *test* split only, which holds ``test_fraction`` of the live slices: its count is divided by
that share, and the legend says so.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from dwp_lib import artifacts
from dwp_lib import release as _release
from dwp_lib.experiment.names import ExperimentError
from dwp_lib.nets import LAYERS
from dwp_lib.plots import finish
from dwp_lib.source_nets import SourceNetsConfig

from .curve import CURVE, PROVENANCE, read_rows

FIGURE = "figures/curve.png"


def released_reference(release: _release.Release | None = None) -> dict[str, dict] | None:
    """Per layer, the released banks' ``live_fraction`` (of the slices their nets produced),
    ``live`` count, ``live_median_norm`` and ``splits``; None if a bank file is not in the cache."""
    release = release or _release.AUTHORS_RELEASE
    root = _release.release_dir(release)
    paths = [p for splits in release.banks.values() for p in splits.values()]
    if any(artifacts.pinned_file_problem(root / p, release.files[p]) for p in paths):
        return None
    bank = _release.load_released_bank(release)
    paper = SourceNetsConfig.paper()
    c1, c2 = paper.widths
    produced = {"conv1": paper.n_nets * 1 * c1, "conv2": paper.n_nets * c1 * c2}
    share = {"train": 1 - paper.test_fraction, "test": paper.test_fraction}
    out = {}
    for (layer, k), threshold in zip(LAYERS.items(), paper.prune_norms, strict=True):
        norms = torch.cat(list(bank[layer].values())).reshape(-1, k * k).double().norm(dim=1)
        live = norms[norms >= threshold]
        held = sum(share[s] for s in bank[layer])  # the share of their live slices we have
        out[layer] = {
            "live_fraction": len(live) / (held * produced[layer]),
            "live": len(live),
            "live_median_norm": float(live.quantile(0.5)),
            "splits": sorted(bank[layer]),
            "share": held,
        }
    return out


def _values(rows: Sequence[Mapping], column: str, positive: bool = False) -> list[float]:
    """A column as floats; blanks (and with ``positive``, zeros: a log axis has no 0) as NaN."""
    vals = [float(r[column]) if r[column] != "" else math.nan for r in rows]
    return [math.nan if positive and v <= 0 else v for v in vals]


def curve_figure(
    rows: Sequence[Mapping],
    thresholds: Sequence[float],
    reference: Mapping[str, Mapping] | None = None,
    title: str = "",
    notice: str = "",
):
    """The two panels of the curve; ``reference``: :func:`released_reference` (or None)."""
    import matplotlib.pyplot as plt

    steps = _values(rows, "step")
    fig, (ax_f, ax_n) = plt.subplots(1, 2, figsize=(11, 4.2))
    for (layer, k), color, threshold in zip(LAYERS.items(), ("C0", "C1"), thresholds, strict=True):
        name = f"{k}x{k}"
        frac = _values(rows, f"{layer}_live_fraction", positive=True)
        ax_f.plot(steps, frac, color=color, marker=".", label=f"{name}, this net")
        live = _values(rows, f"{layer}_live_median_norm")
        ax_n.plot(steps, live, color=color, marker=".", label=f"{name} live, this net")
        every = _values(rows, f"{layer}_median_norm")
        ax_n.plot(steps, every, color=color, lw=1, ls=":", label=f"{name} all slices, this net")
        ax_n.axhline(threshold, color=color, lw=0.8, ls="-.", alpha=0.6)
        where = ("axes fraction", "data")
        ax_n.annotate(
            f"{name} threshold", (0.99, threshold), xycoords=where, fontsize=7, color=color,
            ha="right", va="bottom" if layer == "conv1" else "top",
        )  # fmt: skip
        if reference is not None:
            ref = reference[layer]
            how = (
                "" if ref["share"] == 1 else f" ({'+'.join(ref['splits'])} file / {ref['share']:g})"
            )
            ax_f.axhline(ref["live_fraction"], color=color, ls="--", label=f"{name}, released{how}")
            ax_n.axhline(ref["live_median_norm"], color=color, ls="--", label=f"{name}, released")
    ax_f.set(yscale="log", xlabel="Adam steps", ylabel="live fraction of the slices")
    ax_n.set(xlabel="Adam steps", ylabel="median L2 norm")
    ax_f.set_title("slices at or above the pruning threshold", fontsize=10)
    ax_n.set_title("median norm of the live slices (dotted: of all)", fontsize=10)
    for ax in (ax_f, ax_n):
        ax.legend(fontsize=7)
    fig.suptitle(textwrap.fill(title, 150), fontsize=10)  # a long title wraps, not clips
    if notice:
        fig.text(0.01, 0.005, notice, fontsize=6, va="bottom")
    finish(fig)
    if notice:
        fig.subplots_adjust(bottom=0.17)
    return fig


def figure_title(prov: Mapping) -> str:
    cfg = prov.get("config", {})
    widths = ", ".join(map(str, cfg.get("widths", [])))
    return (
        f"net {prov.get('settings', {}).get('net')}: FConv({widths}) on "
        f"{prov.get('data', {}).get('label', '?')}; batch {cfg.get('batch_size')}, Adam lr "
        f"{cfg.get('lr')} decayed linearly over {cfg.get('epochs')} epochs, l2 {cfg.get('l2')}"
    )


def write_figure(out: str | Path) -> tuple[Path, dict | None]:
    """Draw ``out/curve.csv`` into ``out/figures/curve.png``; returns it and the reference used."""
    out = Path(out)
    rows = read_rows(out)
    if not rows or not (out / PROVENANCE).exists():
        raise ExperimentError(
            f"{out} has no {CURVE} rows (or no {PROVENANCE}) to draw; run "
            f"`python -m studies.sparse_regime curve --out {out}` first"
        )
    prov = json.loads((out / PROVENANCE).read_text())
    reference = released_reference()
    notice = _release.AUTHORS_RELEASE.notice if reference is not None else ""
    thresholds = prov["settings"]["prune_norms"]
    fig = curve_figure(rows, thresholds, reference, figure_title(prov), notice)
    path = out / FIGURE
    with artifacts.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path, reference


def cli(args) -> int:
    """``python -m studies.sparse_regime figure``."""
    path, reference = write_figure(args.out)
    if reference is None:
        print(
            "the released banks are not in the cache (`python -m dwp_lib release` fetches "
            "them): no reference lines"
        )
    else:
        for layer, ref in reference.items():
            splits = "+".join(ref["splits"])
            print(
                f"released {layer}: {ref['live_fraction']:.2%} live (from {splits}), median live "
                f"norm {ref['live_median_norm']:.3g}"
            )
    print(f"wrote {path}")
    return 0
