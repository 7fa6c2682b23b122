"""The study's outputs: ``fingerprint.csv``, ``fingerprint.md``, the README's generated block,
``figures/fingerprint.png`` and ``provenance.json``; ``--check`` compares the first three with
what the committed files give now."""

from __future__ import annotations

import csv
import io
import json
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path

from dwp_lib import artifacts
from dwp_lib.experiment.names import ExperimentError
from dwp_lib.nets import LAYERS
from studies import RESULTS_DIR, format_or_blank, with_table

from .fingerprint import FEATURES, RELEASED, STATS_FOLDERS, VALIDATION, XAVIER, Study, compute

CSV = "fingerprint.csv"
MARKDOWN = "fingerprint.md"
README = "README.md"
FIGURE = "figures/fingerprint.png"
PROVENANCE = "provenance.json"
BEGIN = "<!-- bank-fingerprint: written by `python -m studies.bank_fingerprint`; do not edit -->"
END = "<!-- end bank-fingerprint -->"
COLUMNS = (
    "bank", "layer", *(f.key for f in FEATURES), *(f"{f.key}_units" for f in FEATURES),
    "layer_distance", "distance", "results_folder", "vs_normal_points", "split_seeds",
    "stats_folders",
)  # fmt: skip
KINDS = {"live": ".2%"}  # how a feature is printed (the rest: .3f)


def _name(layer: str) -> str:
    return f"{layer} {LAYERS[layer]}x{LAYERS[layer]}"


def csv_text(s: Study) -> str:
    """One row per bank and layer: features, their units, the distances, the validation line."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    w.writeheader()
    for name, fp in s.prints.items():
        v = s.validated.get(name, {})
        for layer in LAYERS:
            row = {"bank": name, "layer": layer, **fp[layer]}
            row |= {f"{k}_units": x for k, x in s.units[name][layer].items()}
            row |= {
                "layer_distance": s.distances[name][layer],
                "distance": s.distances[name]["all"],
                "results_folder": v.get("folder", ""),
                "vs_normal_points": format_or_blank(v.get("vs_normal"), ".6f"),
                "split_seeds": " ".join(map(str, v.get("seeds", []))),
                "stats_folders": " ".join(s.banks[name].folders),
            }
            w.writerow({k: repr(x) if isinstance(x, float) else x for k, x in row.items()})
    return buf.getvalue()


def correlation_sentence(c: Mapping) -> str:
    p = "" if c["p"] is None else f", exact permutation p = {c['p']:.3f}"
    return f"rho = {c['rho']:+.2f} over {c['n']} lines{p}"


def summary(s: Study) -> str:
    """The numbers the README quotes: each bank's distance and the rank correlations."""
    lines = [
        "Distance to the released bank (mean of the 12 terms; conv1 / conv2), and the "
        "validated line's paired difference to N(0, 1) from Xavier at the authors' setting:",
        "",
    ]
    for name, d in s.distances.items():
        v = s.validated.get(name)
        at = "" if v is None else f"; {format_or_blank(v['vs_normal'], '+.1f')} points"
        lines.append(f"- {name}: **{d['all']:.2f}** ({d['conv1']:.2f} / {d['conv2']:.2f}){at}")
    lines += [
        "",
        "Spearman's rank correlation of distance against that difference: "
        f"**{correlation_sentence(s.correlation)}**; "
        + "; ".join(f"{k}: {correlation_sentence(c)}" for k, c in s.checks.items())
        + ".",
    ]
    return "\n".join(lines) + "\n"


def markdown(s: Study, command: str) -> str:
    """``fingerprint.md``: the fingerprint table, the distance's terms, the correlation."""
    head = " | ".join(f"{layer} {f.label}" for layer in LAYERS for f in FEATURES)
    out = [
        "# Bank fingerprint: each bank's distance to the released bank",
        "",
        f"Written by `{command}` from the committed `stats.csv` of "
        + ", ".join(f"`results/{f}/`" for f in STATS_FOLDERS)
        + " and studies.own_prior's table; do not edit (`--check` fails when it is stale).",
        "",
        "Features per layer (conv1 7x7, conv2 5x5): "
        + ", ".join(f.label for f in FEATURES)
        + " (logs are natural). The released live fraction: "
        + s.live_from
        + "; Xavier's: its slices at or above the same pruning norms. Distance: per feature "
        "|bank - released| / |Xavier - released| (1: as far as white noise), the mean of the 12 "
        "terms (per layer: of its 6). Difference: the paired accuracy difference to N(0, 1) "
        "from Xavier of the prior trained with the long VAE recipe on that bank (n = 50, the "
        "authors' setting), in points.",
        "",
        f"| bank | {head} | distance conv1 | conv2 | **distance** | - N(0, 1) (points, seeds) "
        "| results folder |",
        "|---|" + "---|" * (len(FEATURES) * len(LAYERS) + 5),
    ]
    for name, fp in s.prints.items():
        cells = [
            format(fp[layer][f.key], KINDS.get(f.key, ".3f")) for layer in LAYERS for f in FEATURES
        ]
        d, v = s.distances[name], s.validated.get(name)
        diff = "" if v is None else f"{format_or_blank(v['vs_normal'], '+.1f')} ({len(v['seeds'])})"
        folder = "" if v is None else f"`{v['folder']}`"
        out.append(
            f"| {name} | {' | '.join(cells)} | {d['conv1']:.2f} | {d['conv2']:.2f} "
            f"| **{d['all']:.2f}** | {diff} | {folder} |"
        )
    units = {n: [f"{u[layer][f.key]:.2f}" for layer in LAYERS for f in FEATURES] for n, u in s.units.items()}  # fmt: skip
    rhos = [f"{s.terms[layer][f.key]['rho']:+.2f}" for layer in LAYERS for f in FEATURES]
    out += [
        "",
        "The distance's terms, |bank - released| / |Xavier - released| per feature:",
        "",
        *_per_feature("bank", head, units),
        "",
        "Each term alone against the difference (Spearman's rho over the same lines):",
        "",
        *_per_feature("", head, {"rho": rhos}),
    ]
    out += [
        "",
        "What each validated line's stats rows are to the bank its prior was trained on:",
        "",
    ]
    out += [f"- {n}: `{v['folder']}`, {v['relation']}." for n, v in s.validated.items()]
    out += ["", summary(s).rstrip("\n")]
    return "\n".join(out) + "\n"


def _per_feature(first: str, head: str, rows: dict[str, list[str]]) -> list[str]:
    """A Markdown table with a column per layer and feature: ``{row name: its cells}``."""
    first = f"| {first} |" if first else "| |"
    out = [f"{first} {head} |", "|---|" + "---|" * (len(FEATURES) * len(LAYERS))]
    return out + [f"| {name} | {' | '.join(cells)} |" for name, cells in rows.items()]


def figure(s: Study):
    """Left: every bank's terms (units of noise's distance), per layer and feature; right: the
    distance against the validated lines' difference to N(0, 1), Spearman's rho in the title."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import LogNorm

    from dwp_lib.plots import finish

    names = list(s.units)
    grid = np.array(
        [[s.units[n][layer][f.key] for layer in LAYERS for f in FEATURES] for n in names]
    )
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(15, 0.42 * len(names) + 3.2), width_ratios=(3, 2))
    im = ax.imshow(
        np.clip(grid, 0.01, None), cmap="RdYlBu_r", norm=LogNorm(0.01, 100), aspect="auto"
    )
    for (i, j), v in np.ndenumerate(grid):
        ax.text(j, i, f"{v:.2g}", ha="center", va="center", fontsize=6.5)
    labels = [
        f"{layer}: {f.label} (rho {s.terms[layer][f.key]['rho']:+.2f})"
        for layer in LAYERS
        for f in FEATURES
    ]
    ax.set_xticks(range(len(labels)), labels, rotation=40, ha="right", fontsize=7)
    ax.set_yticks(
        range(len(names)), [f"{n} ({s.distances[n]['all']:.2f})" for n in names], fontsize=7
    )
    ax.axvline(len(FEATURES) - 0.5, color="k", lw=1)
    ax.set_title(
        "|bank - released| / |Xavier - released| per feature (1: as far as white noise);\n"
        "rows by distance (the mean, in brackets); columns: each term's own rank correlation",
        fontsize=9,
    )
    fig.colorbar(im, ax=ax, shrink=0.8, label="units of noise's distance (log scale)")
    pts = [
        (n, s.distances[n]["all"], v["vs_normal"])
        for n, v in s.validated.items()
        if v["vs_normal"] is not None
    ]
    for n, x, y in pts:
        bx.scatter(x, y, color="C3" if n == RELEASED else "C0", zorder=3)
        # a label goes left of its point when another point sits just right of it, or the edge
        crowded = any(0 < x2 - x < 0.4 and abs(y2 - y) < 1.0 for _, x2, y2 in pts)
        crowded = crowded or x > 0.9 * max(p[1] for p in pts)
        short = n.removeprefix("ours (").removeprefix("source-").removesuffix(")")
        bx.annotate(short, (x, y), fontsize=7,
                    xytext=(-4 if crowded else 4, 3), textcoords="offset points",
                    ha="right" if crowded else "left")  # fmt: skip
    bx.axhline(0, color="0.4", lw=0.8, ls="--")
    bx.axvline(1, color="0.6", lw=0.8, ls=":")
    bx.set(
        xlabel="distance to the released bank (1: as far as Xavier noise)",
        ylabel="prior - N(0, 1) from Xavier, authors' setting (points)",
    )
    bx.set_title(
        f"Spearman {correlation_sentence(s.correlation)}\n(long VAE recipe on each bank)",
        fontsize=9,
    )
    bx.grid(alpha=0.3)
    return finish(fig)


def _inputs(root: Path) -> dict[str, str]:
    """sha256 of every file the study read, by its path under ``root``'s parent."""
    from studies.own_prior.own_prior import CELLS, REFERENCE

    paths = [root / f / n for f in STATS_FOLDERS for n in ("stats.csv", "provenance.json")]
    paths += [root / f / "provenance.json" for f in VALIDATION.values()]
    folders = dict.fromkeys([REFERENCE, *(c.folder for c in CELLS)])
    paths += [root / f / "results.csv" for f in folders if (root / f / "results.csv").exists()]
    return {str(p.relative_to(root.parent)): artifacts.sha256_file(p) for p in paths}


def provenance(s: Study, root: Path, command: str) -> dict:
    from studies.sparse_regime.curve import git_commit

    from .fingerprint import thresholds

    env = artifacts.environment_record()
    return {
        "command": command,
        "dwp_lib": env["dwp_lib"],
        "git": git_commit(),
        "cpu": env["cpu"],
        "torch": env["torch"],
        "environment": env,
        "features": [f.key for f in FEATURES],
        "layers": dict(LAYERS),
        "live": {"released": s.live[RELEASED], "xavier": s.live[XAVIER], "from": s.live_from},
        "pruning_norms": list(thresholds()),
        "validation": {
            n: {k: v[k] for k in ("folder", "relation")} for n, v in s.validated.items()
        },
        "inputs_sha256": _inputs(root),
    }


def readme_text(old: str | None, s: Study, where: str) -> str:
    """The README with its generated block; a new one is a heading and the block."""
    if old is None:
        old = f"# results/bank-fingerprint\n\n{BEGIN}\n{END}\n"
    return with_table(old, summary(s), where, BEGIN, END)


def committed_live(out: Path) -> tuple[dict[str, float], str] | None:
    """The released live fractions the folder's last run measured (for ``--check`` on a
    machine without the release in its cache)."""
    path = out / PROVENANCE
    if not path.is_file():
        return None
    live = json.loads(path.read_text())["live"]
    return live["released"], live["from"]


def cli(args) -> int:
    """``python -m studies.bank_fingerprint``: write the folder, or ``--check`` it."""
    from .fingerprint import RELEASED_FROM, released_live

    root, out = Path(args.results or RESULTS_DIR), Path(args.out)
    command = "python -m studies.bank_fingerprint " + shlex.join(args.argv)
    released, source = released_live(), RELEASED_FROM
    if args.check and released is None:
        found = committed_live(out)
        if found is None:
            raise ExperimentError(f"{out / PROVENANCE} holds no live fractions, nor the cache")
        released, source = found
        print("note: the released banks are not in the cache: their live fraction is the one "
              f"{out / PROVENANCE} records")  # fmt: skip
    s = compute(root, released, source)
    shown = "python -m studies.bank_fingerprint --out results/bank-fingerprint"
    readme = out / README
    texts = {
        CSV: csv_text(s),
        MARKDOWN: markdown(s, shown),
        README: readme_text(readme.read_text() if readme.exists() else None, s, str(readme)),
    }
    if args.check:
        stale = [
            n for n, t in texts.items() if not (out / n).exists() or (out / n).read_text() != t
        ]
        if stale:
            print(f"{out}: {', '.join(stale)} not what the committed files give; run "
                  f"`{shown}`", file=sys.stderr)  # fmt: skip
            return 1
        print(f"{out}: {', '.join(texts)} up to date")
        return 0
    (out / "figures").mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        artifacts.atomic_write_bytes(out / name, text.encode())
    import matplotlib.pyplot as plt

    fig = figure(s)
    with artifacts.atomic_path(out / FIGURE) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    artifacts.atomic_write_json(out / PROVENANCE, provenance(s, root, command))
    sys.stdout.write(summary(s))
    print(f"wrote {out}/: {', '.join([*texts, FIGURE, PROVENANCE])}")
    return 0
