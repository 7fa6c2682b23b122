"""The search's curve (``studies/own_prior/FINDINGS.md``, book/05): our own prior against the
released one, one point per source stage of our bank, against the compute its source nets cost.

Each :class:`SourceStage` is a results folder whose ``dwp:dwp`` rows used one source stage (the
book's, or one factor of it moved toward the authors' recipe) with the long VAE recipe of
``configs/book-bank-vaes-long.toml``. :func:`curve_rows` reads each folder's ``config.json``,
``provenance.json`` and rows (through :func:`studies.own_prior.own_prior.accuracies`, which refuses a row
run at another setting), pairs them by split seed with the released prior, and puts the source
compute (:func:`source_compute`) on the x axis; :func:`curve_fit` fits the gap on log2 of the
compute and :func:`curve_markdown` extrapolates only a slope more than two standard errors from
zero. ``python -m studies.own_prior --update`` writes the curve into the findings note between
:data:`CURVE_BEGIN` and :data:`CURVE_END`.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dwp_lib.experiment.names import ExperimentError
from dwp_lib.nets import fconv_macs
from studies import RESULTS_DIR

from .own_prior import REFERENCE, RELEASED, accuracies, format_or_blank, paired_accuracy

CURVE_BEGIN = (
    "<!-- source-curve: written by `python -m studies.own_prior --update`; do not edit -->"
)
CURVE_END = "<!-- end source-curve -->"
TARGET = -0.02  # step 4: a prior of our own within 2 points of the released one


@dataclass(frozen=True)
class SourceStage:
    """One source stage of our own bank (a folder whose ``dwp:dwp`` rows used it, with the long
    VAE recipe of ``configs/book-bank-vaes-long.toml``); ``change``: what differs from the book's."""

    change: str
    folder: str
    #: the factor it moves (a key of AUTHORS_SOURCE); None: the base, or a stage that moves two
    #: factors at once (in the fit over all stages, in no factor's own fit)
    factor: str | None = None
    #: False: its source nets trained over more than one run (``reproduce`` resumes per net), so
    #: the folder's stage seconds cover only the last run's nets and no stage minutes are shown
    #: (its README gives the nets' own times)
    timed: bool = True


#: The book's source stage, then one factor at a time toward the authors' recipe.
SOURCE_STAGES: tuple[SourceStage, ...] = (
    SourceStage("none (the book's: 8 x FConv(32, 64), 3 epochs)", "book-bank-vaes-long-prior"),
    SourceStage("20 epochs", "source-epochs-20", "epochs"),
    SourceStage("FConv(64, 128)", "source-width-64-128", "widths"),
    SourceStage("FConv(128, 256)", "source-width-128-256", "widths"),
    SourceStage("32 nets", "source-nets-32", "n_nets"),
    SourceStage("FConv(256, 512), 2 nets", "source-width-256-512-nets-2"),
    SourceStage("FConv(256, 512)", "source-width-256-512", "widths", timed=False),
)

#: The authors' source stage (dwp-facts): 100 x FConv(256, 512), 100 epochs, on notMNIST; which
#: notMNIST (small: 18,724 images; large: ~529,000) their code does not say, hence a range.
AUTHORS_SOURCE = {"n_nets": 100, "epochs": 100, "widths": (256, 512)}
AUTHORS_TRAIN_IMAGES = (18_724, 529_000)


def source_compute(n_nets: int, epochs: int, widths: Sequence[int], train_images: int) -> float:
    """Forward multiply-accumulates of a source stage's training: nets x epochs x images x
    :func:`dwp_lib.nets.fconv_macs` (backward passes multiply every stage by the same ~3)."""
    return float(n_nets) * epochs * train_images * fconv_macs(widths)


def _stage_source(root: Path, folder: str, timed: bool = True) -> dict | None:
    """The source settings a folder ran with (its ``config.json``) and the images its source
    nets trained on (``provenance.json``), or ``None`` for a folder not run yet; the stage's
    minutes only where the folder trained the whole bank in one run (``timed``)."""
    cfg_path, prov_path = root / folder / "config.json", root / folder / "provenance.json"
    if not (cfg_path.exists() and prov_path.exists()):
        return None
    try:
        src = json.loads(cfg_path.read_text())["source"]
        prov = json.loads(prov_path.read_text())
        images = src.get("train_images") or prov["data"]["source"]["train"]["count"]
        measured = timed and not prov["stage_loaded_from_cache"].get("source_nets_and_bank", True)
        seconds = prov["stage_seconds"].get("source_nets_and_bank") if measured else None
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise ExperimentError(
            f"{root / folder}: its config.json / provenance.json lack the source settings or "
            f"the source data's count ({err!r}); restore the files the run wrote, or drop the "
            "folder from source_curve.SOURCE_STAGES"
        ) from None
    return {
        "n_nets": int(src["n_nets"]),
        "epochs": int(src["epochs"]),
        "widths": tuple(src["widths"]),
        "train_images": int(images),
        "data": prov["data"]["source"]["label"],
        "compute": source_compute(src["n_nets"], src["epochs"], src["widths"], images),
        "source_minutes": seconds / 60 if seconds is not None else None,
        "cpu": prov.get("environment", {}).get("cpu"),
    }


def curve_rows(
    root: str | Path | None = None, stages: Sequence[SourceStage] = SOURCE_STAGES
) -> list[dict]:
    """One dict per source stage: its settings and compute (``ratio``: over the first stage's),
    its ``dwp:dwp`` accuracy at the authors' setting, paired by split seed with the released
    prior (``vs_released``, per seed in ``differences``) and with the first stage
    (``vs_first``). A stage not run yet has ``seeds == []``."""
    root = Path(root) if root is not None else RESULTS_DIR
    released = accuracies(root, REFERENCE, RELEASED)
    first = accuracies(root, stages[0].folder, "dwp:dwp")
    base = _stage_source(root, stages[0].folder)
    out = []
    for stage in stages:
        src = _stage_source(root, stage.folder, stage.timed)
        mine = accuracies(root, stage.folder, "dwp:dwp") if src is not None else {}
        s_rel, d_rel = paired_accuracy(mine, released)
        s_first, d_first = paired_accuracy(mine, first)
        acc = [mine[s]["acc_ensemble"] for s in sorted(mine)]
        out.append(
            {
                "change": stage.change,
                "folder": stage.folder,
                "factor": stage.factor,
                **(src or {}),
                "ratio": src["compute"] / base["compute"] if src and base else None,
                "seeds": sorted(mine),
                "mean": statistics.fmean(acc) if acc else None,
                "released_seeds": s_rel,
                "differences": d_rel,
                "vs_released": statistics.fmean(d_rel) if d_rel else None,
                "first_seeds": s_first,
                "vs_first": statistics.fmean(d_first) if d_first else None,
            }
        )
    return out


def curve_fit(rows: Sequence[Mapping]) -> dict | None:
    """Least squares of the per-seed differences to the released prior on log2 of the source
    compute (over the first stage's): ``slope`` (per doubling) with its standard error, and
    ``intercept`` (at the first stage's compute); ``None`` with fewer than two computes or
    three points."""
    pts = [
        (math.log2(r["ratio"]), d) for r in rows if r["ratio"] is not None for d in r["differences"]
    ]
    if len({x for x, _ in pts}) < 2 or len(pts) < 3:
        return None
    xs, ys = [x for x, _ in pts], [y for _, y in pts]
    slope, intercept = statistics.linear_regression(xs, ys)
    mx = statistics.fmean(xs)
    resid = sum((y - intercept - slope * x) ** 2 for x, y in pts)
    sxx = sum((x - mx) ** 2 for x in xs)
    s2 = resid / (len(pts) - 2)
    se = math.sqrt(s2 / sxx)
    return {
        "slope": slope,
        "se": se,
        "intercept": intercept,
        "points": len(pts),
        "mean_x": mx,
        "sxx": sxx,
        "s2": s2,
    }


def line_se(fit: Mapping, x: float) -> float:
    """The standard error of the fitted line of :func:`curve_fit` at log2 of the compute ``x``
    (the mean gap there, not one seed's): it grows with the distance from the measured stages."""
    return math.sqrt(fit["s2"] * (1 / fit["points"] + (x - fit["mean_x"]) ** 2 / fit["sxx"]))


def factor_fits(rows: Sequence[Mapping]) -> dict[str, dict]:
    """For each factor moved by two or more stages with rows: :func:`curve_fit` of the first
    (base) stage and that factor's stages alone, with ``authors``, the compute ratio of the base
    stage with only this factor set to the authors' value, and ``at_authors``, the gap the fit
    gives there (the line continued in log2 of the compute: an extrapolation, not a result) with
    ``at_authors_se``, the line's standard error there, ``step_slopes``, the change of the
    stages' mean gap per doubling of the compute from each stage to the next (by compute), and
    ``measured``, the stage run at the authors' value of the factor (``None``: not run yet)."""
    if not rows or rows[0]["ratio"] is None:
        return {}
    base = rows[0]
    out = {}
    for factor in dict.fromkeys(r["factor"] for r in rows[1:] if r["factor"] and r["seeds"]):
        moved = [r for r in rows[1:] if r["factor"] == factor and r["seeds"]]
        fit = curve_fit([base, *moved]) if len(moved) >= 2 else None
        if fit is None:
            continue
        settings = {k: base[k] for k in ("n_nets", "epochs", "widths", "train_images")}
        settings[factor] = AUTHORS_SOURCE[factor]
        ratio = source_compute(**settings) / base["compute"]
        at = fit["intercept"] + fit["slope"] * math.log2(ratio)
        chain = [base, *sorted(moved, key=lambda r: r["ratio"])]
        steps = [
            (b["vs_released"] - a["vs_released"]) / math.log2(b["ratio"] / a["ratio"])
            for a, b in itertools.pairwise(chain)
        ]
        out[factor] = {
            **fit,
            "step_slopes": steps,
            "stages": 1 + len(moved),
            "authors": ratio,
            "at_authors": at,
            "at_authors_se": line_se(fit, math.log2(ratio)),
            "measured": next(
                (r for r in moved if _value(r, factor) == _value(AUTHORS_SOURCE, factor)), None
            ),
        }
    return out


def _value(settings: Mapping, factor: str):
    return tuple(settings[factor]) if factor == "widths" else settings[factor]


#: How the note names each factor, and the factor's value in the authors' recipe.
FACTOR_NAME = {"widths": "width", "epochs": "epochs", "n_nets": "the number of nets"}
AUTHORS_VALUE = {"widths": "FConv(256, 512)", "epochs": "100 epochs", "n_nets": "100 nets"}


def _steps_sentence(steps: Sequence[float]) -> str:
    each = ", then ".join(f"{100 * s:+.1f}" for s in steps)
    text = f"Stage by stage the gap moved {each} points per doubling"
    if len(steps) > 1 and steps[-1] <= 0:
        return (
            text
            + ": the last step did not close it further, so along this factor the gap has stopped closing."
        )
    if all(b < a for a, b in itertools.pairwise(steps)):
        return text + ": the steps shrink, so a straight line is the optimistic reading."
    return text + ": the steps do not shrink."


def _factor_lines(rows: Sequence[Mapping]) -> list[str]:
    lines = []
    for factor, f in factor_fits(rows).items():
        head = (
            f"- Along {FACTOR_NAME[factor]} alone ({f['stages']} stages, {f['points']} per-seed differences): "
            f"{100 * f['slope']:+.1f} ± {100 * f['se']:.1f} points per doubling of the compute"
        )
        if f["measured"] is not None:
            m = f["measured"]
            lines.append(
                f"{head}. At the authors' {AUTHORS_VALUE[factor]} itself ({f['authors']:,.0f} "
                f"times the book's compute) the gap is measured: {100 * m['vs_released']:+.1f} "
                f"points over {len(m['released_seeds'])} split seed(s) (the line there: "
                f"{100 * f['at_authors']:+.1f} ± {100 * f['at_authors_se']:.1f}), so along "
                f"{FACTOR_NAME[factor]} nothing is left to extrapolate. "
                f"{_steps_sentence(f['step_slopes'])}"
            )
        elif f["slope"] > 2 * f["se"]:
            doublings = (TARGET - f["intercept"]) / f["slope"]
            lines.append(
                f"{head}; continued to the authors' {AUTHORS_VALUE[factor]} ({f['authors']:,.0f} "
                f"times the book's compute) the line gives {100 * f['at_authors']:+.1f} "
                f"± {100 * f['at_authors_se']:.1f} points (one standard error of the line), "
                f"and {-100 * TARGET:.0f} points from the released prior at "
                f"{2**doublings:,.0f} times (an extrapolation of {f['stages']} stages, not a "
                f"measurement). {_steps_sentence(f['step_slopes'])}"
            )
        else:
            lines.append(f"{head}: within two standard errors of zero, not extrapolated.")
    return lines


def equal_compute_pair(rows: Sequence[Mapping], within: float = 1.5) -> tuple[dict, dict] | None:
    """Of the stages with rows whose source computes are within a factor ``within`` of each
    other, the pair whose mean gaps to the released prior differ most (``None``: no such pair).
    Far apart, they say that compute alone does not set the gap: the factors act differently."""
    ran = [r for r in rows if r["seeds"] and r["ratio"] is not None]
    pairs = [
        (a, b)
        for a, b in itertools.combinations(ran, 2)
        if max(a["ratio"], b["ratio"]) <= within * min(a["ratio"], b["ratio"])
    ]
    if not pairs:
        return None
    a, b = max(pairs, key=lambda p: abs(p[0]["vs_released"] - p[1]["vs_released"]))
    return (a, b) if a["vs_released"] >= b["vs_released"] else (b, a)


def speed_reference(rows: Sequence[Mapping]) -> dict | None:
    """The timed stage (source minutes measured in one run) whose nets are the widest, the
    largest compute among equals: its minutes per unit of compute turn a compute ratio into
    wall time on the machine that ran it (wider nets do more work per second, so the widest
    timed stage is the fairest clock for the authors' width). ``None``: no timed stage."""
    timed = [r for r in rows if r.get("source_minutes") and r["ratio"] is not None]
    if not timed:
        return None
    return max(timed, key=lambda r: (tuple(r["widths"]), r["ratio"]))


def wall_hours(rows: Sequence[Mapping], ratio: float) -> float | None:
    """Hours that source nets of ``ratio`` times the book's compute take at the speed of
    :func:`speed_reference` (``None``: no timed stage)."""
    ref = speed_reference(rows)
    return None if ref is None else ratio * ref["source_minutes"] / ref["ratio"] / 60


def _hours_text(hours: float) -> str:
    if hours < 1:
        return f"{60 * hours:.0f} minutes"
    return f"{hours:,.0f} hours" if hours < 72 else f"{hours / 24:,.0f} days"


def authors_ratio(rows: Sequence[Mapping]) -> tuple[float, float] | None:
    """The authors' source compute over the first stage's, for each notMNIST they may have used."""
    if not rows or rows[0]["ratio"] is None:
        return None
    lo, hi = (source_compute(**AUTHORS_SOURCE, train_images=n) for n in AUTHORS_TRAIN_IMAGES)
    return lo / rows[0]["compute"], hi / rows[0]["compute"]


def curve_markdown(rows: Sequence[Mapping]) -> str:
    """The curve's table and, computed from the same rows, the fit and what it extrapolates to."""
    lines = [
        "| change to the book's source stage | results folder | source compute (x the book's) "
        "| split seeds | accuracy | - released prior (points) | - the book's stage (points, "
        "paired seeds) | source stage minutes (CPU) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        folder = f"`{r['folder']}`"
        if not r["seeds"]:
            lines.append(f"| {r['change']} | {folder} | | no row yet | | | | |")
            continue
        first = (
            f"{100 * r['vs_first']:+.1f} ({','.join(map(str, r['first_seeds']))})"
            if r["vs_first"] is not None and r is not rows[0]
            else ""
        )
        minutes = "" if r["source_minutes"] is None else f"{r['source_minutes']:.0f}"
        lines.append(
            f"| {r['change']} | {folder} | {r['ratio']:.1f} | {','.join(map(str, r['seeds']))} "
            f"| {r['mean']:.3f} | {format_or_blank(r['vs_released'] and 100 * r['vs_released'], '+.1f')} "
            f"| {first} | {minutes} |"
        )
    ran = [r for r in rows if r["seeds"]]
    data = sorted({r["data"] for r in ran if r.get("data")})
    lines.append(
        "\nSource compute: nets x epochs x training images x the multiply-accumulates of one "
        "FConv forward pass (`studies.own_prior.source_curve.source_compute`); every bank here is cut from nets "
        f"trained on the {' / '.join(data) or 'source'} letters. Source minutes: the stage's wall "
        "time where the folder built its bank in one run (blank: loaded from the cache, or trained "
        "over several runs; the folder's README gives the nets' own times)."
    )
    fit, authors = curve_fit(rows), authors_ratio(rows)
    if authors is not None:
        lines.append(
            f"\n- The authors' source stage (100 x FConv(256, 512), 100 epochs, real notMNIST) is "
            f"{authors[0]:,.0f} to {authors[1]:,.0f} times the book's (notMNIST small or large)."
        )
    if fit is None:
        lines.append("- Fewer than two source computes with rows: no curve yet.")
        return "\n".join(lines) + "\n"
    factor_lines = _factor_lines(rows)
    lines.append(
        f"- Fit of the {fit['points']} per-seed differences to the released prior on log2 of the "
        f"compute: {100 * fit['slope']:+.1f} ± {100 * fit['se']:.1f} points per doubling, "
        f"{100 * fit['intercept']:+.1f} points at the book's compute."
    )
    pair = equal_compute_pair(rows)
    if pair is not None:
        hi, lo = pair
        lines.append(
            f"- At about the same compute the stages differ by up to "
            f"{100 * (hi['vs_released'] - lo['vs_released']):.1f} points ({hi['change']} at "
            f"{hi['ratio']:.1f} times the book's, {100 * hi['vs_released']:+.1f}; {lo['change']} at "
            f"{lo['ratio']:.1f}, {100 * lo['vs_released']:+.1f}): compute alone does not set the "
            "gap, so a fit over all stages mixes factors that act differently."
        )
    if fit["slope"] > 2 * fit["se"]:
        doublings = (TARGET - fit["intercept"]) / fit["slope"]
        lines.append(
            f"- Extrapolated, a prior within {-100 * TARGET:.0f} points of the released one needs "
            f"{doublings:.1f} doublings: {2**doublings:,.0f} times the book's source compute"
            + (
                f" ({2**doublings / authors[1]:.2g} to {2**doublings / authors[0]:.2g} of the "
                "authors')."
                if authors
                else "."
            )
        )
        ref = speed_reference(rows)
        if ref is not None:
            lines.append(
                f"- In wall time, at the speed of the timed stage with the widest nets ({ref['change']}: "
                f"{ref['ratio']:.1f} times the book's compute in {ref['source_minutes']:.0f} minutes"
                + (f" on {ref['cpu']}" if ref.get("cpu") else "")
                + f"), that compute is about {_hours_text(wall_hours(rows, 2**doublings))} of "
                "source nets"
                + (
                    f"; the authors' source stage, {_hours_text(wall_hours(rows, authors[0]))} to "
                    f"{_hours_text(wall_hours(rows, authors[1]))}."
                    if authors
                    else "."
                )
            )
    else:
        lines.append(
            "- The slope is within two standard errors of zero: over this range of compute the "
            "gap shows no trend that could be extrapolated to the authors' compute."
        )
    return "\n".join(lines + factor_lines) + "\n"
