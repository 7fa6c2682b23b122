"""A prior of our own (book/05, ``studies/own_prior/FINDINGS.md``): every cell of the search for
what our deep weight prior lacks, one line each, read from the committed runs.

Each line is one prior at the authors' setting (FConv(32, 128), 10,000 full-batch steps from
log sigma^2 = -10, 256 slices per step, a 10-sample ensemble on all 10,000 test digits, n = 50),
paired by split seed with the released prior and with N(0, 1) from Xavier of
``results/released-authors-setting/``. Nothing in the table is typed: :func:`table_rows` reads
the folders' ``results.csv`` files, refuses a row run at another setting, and says "not run yet"
for a folder without rows. ``python -m studies.own_prior`` prints the table;
``--update FILE`` writes it into the findings note between its markers, and ``--check`` fails
when the note's table is not the one the committed runs give (a test runs it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dwp_lib.experiment.names import ExperimentError, parse_method
from dwp_lib.experiment.results import RESULT_COLUMNS, read_rows
from studies import RESULTS_DIR, command_line, format_or_blank
from studies import with_table as _with_table

REFERENCE = "released-authors-setting"  # the folder with the released prior and N(0, 1)
RELEASED = "dwp@released:dwp@released"
NORMAL = "normal:xavier"
NORMAL_RELEASED_INIT = "normal:dwp@released"  # N(0, 1) from the released VAEs' samples
NORMAL_SAME_INIT = "normal:dwp"  # N(0, 1) from our VAEs' samples: in the line's own folder
N = 50
# every row of the table must have been run at this setting (the authors')
SETTING: Mapping[str, object] = {
    "n": N,
    "steps": 10_000,
    "lr": 0.001,
    "kl_weight": 1.0,
    "dwp_train_reverse": False,
    "channels": "32x128",
    "log_sigma2_init": -10.0,
    "dwp_slices_per_step": 256,
    "eval_samples": 10,
    "test_images": 10_000,
}
#: the short settings own-prior lines ran at (``results/short-setting-search/``): far fewer
#: full-batch Adam steps, otherwise the authors'; each folder holds the released prior and
#: N(0, 1) its short lines are paired with
SHORT_SETTINGS: Mapping[str, Mapping[str, object]] = {
    "short-setting-search/2000-steps-lr-3e-3": {**SETTING, "steps": 2_000, "lr": 0.003},
    "short-setting-search/3000-steps-lr-2e-3": {**SETTING, "steps": 3_000, "lr": 0.002},
}
#: the course's short setting (chapter 5's live cell), which judges candidate priors
SHORT_REFERENCE = "short-setting-search/3000-steps-lr-2e-3"
SHORT_SETTING = SHORT_SETTINGS[SHORT_REFERENCE]


def setting_title(setting: Mapping[str, object]) -> str:
    """``"3,000 steps at lr 2e-3"``: what a short setting changes of the authors'."""
    lr = f"{setting['lr']:.0e}".replace("e-0", "e-")  # 0.003 -> 3e-3
    return f"{setting['steps']:,} steps at lr {lr}"


SHORT_TITLE = f"the short setting: {setting_title(SHORT_SETTING)}"
BEGIN = "<!-- own-prior-table: written by `python -m studies.own_prior --update`; do not edit -->"
END = "<!-- end own-prior-table -->"
SHORT_BEGIN = (
    "<!-- own-prior-short-table: written by `python -m studies.own_prior --update`; do not edit -->"
)
SHORT_END = "<!-- end own-prior-short-table -->"
#: the book preset's prior built more than once from the same seeds (other machines' bits)
BOOK_BUILDS = (
    "released-authors-setting",
    "book-prior-authors-setting",
    "paper-bnn-gpu",
    "book-prior-authors-setting-bank-5b47e78e",
)
#: one bank, its kernel VAEs trained twice (other VAE seeds): the spread between VAE trainings
SPARSE_TRAININGS = ("sparse-bank-128-256-sample", "sparse-bank-128-256-sample-vae-seed-1")
#: the short setting the sparse bank's priors were screened at
SPARSE_SCREEN = "short-setting-search/2000-steps-lr-3e-3"
#: a candidate prior is adopted when it beats N(0, 1) from its own init by this many points on
#: at least ADOPT_SEEDS of 5 split seeds at the short setting (then confirmed at the authors')
ADOPT_POINTS, ADOPT_SEEDS, ADOPT_OF = 3.0, 4, 5


@dataclass(frozen=True)
class PriorCell:
    """One line of the table: a prior (``method``, ``"prior:init"``) in a results folder;
    ``own``: both layers' priors are ours (a candidate for the recipe), not the released one or a
    mix of the two. ``normal``: the N(0, 1) line it is paired with: from Xavier (the paper's
    baseline), or from the released samples for a line that starts there (same init)."""

    label: str
    folder: str
    method: str
    own: bool = True
    normal: str = NORMAL
    #: run at a short setting: True for the course's (:data:`SHORT_REFERENCE`), or the folder
    #: of another in :data:`SHORT_SETTINGS` (a line screened before the course's setting moved)
    short: bool | str = False

    @property
    def reference(self) -> tuple[str, Mapping[str, object]]:
        """The folder of the released prior and N(0, 1) it pairs with, and its setting."""
        if not self.short:
            return REFERENCE, SETTING
        folder = SHORT_REFERENCE if self.short is True else self.short
        if folder not in SHORT_SETTINGS:
            raise ExperimentError(
                f"{self.label}: {folder!r} is not a short setting the study knows; add it to "
                f"own_prior.SHORT_SETTINGS ({', '.join(SHORT_SETTINGS)})"
            )
        return folder, SHORT_SETTINGS[folder]


CELLS: tuple[PriorCell, ...] = (
    PriorCell("released prior (their VAEs, their bank)", REFERENCE, RELEASED, own=False),
    PriorCell("ours: our VAEs, our bank (book preset)", REFERENCE, "dwp:dwp"),
    PriorCell(
        "ours: the book preset built again on another CPU (other bits)",
        "book-prior-authors-setting",
        "dwp:dwp",
    ),
    PriorCell(
        "ours: the book preset built a third time (cells on a GPU; N(0, 1) the CPU's)",
        "paper-bnn-gpu",
        "dwp:dwp",
    ),
    PriorCell(
        "ours: the book preset built a fourth time (the first build's slices, VAEs on two threads)",
        "book-prior-authors-setting-bank-5b47e78e",
        "dwp:dwp",
    ),
    PriorCell("ours, their bank (1,000-step VAEs)", "released-bank-vaes", "dwp:dwp"),
    PriorCell(
        "ours, their bank (VAEs trained the authors' steps)",
        "released-bank-vaes-long-prior",
        "dwp:dwp",
    ),
    PriorCell(
        "ours, their bank (the same recipe, a second training)",
        "released-bank-vaes-long-retrained",
        "dwp:dwp",
    ),
    PriorCell(
        "ours, their bank (the first training's VAEs, bit for bit, on more split seeds)",
        "released-bank-vaes-long-prior-more-seeds",
        "dwp:dwp",
    ),
    PriorCell(
        "ours, our bank (VAEs trained the authors' steps)",
        "book-bank-vaes-long-prior",
        "dwp:dwp",
    ),
    PriorCell(
        "ours, our bank from 20-epoch source nets (VAEs trained the authors' steps)",
        "source-epochs-20",
        "dwp:dwp",
    ),
    PriorCell(
        "ours, our bank from FConv(64, 128) source nets (same VAE recipe)",
        "source-width-64-128",
        "dwp:dwp",
    ),
    PriorCell(
        "ours, our bank from FConv(128, 256) source nets (same VAE recipe)",
        "source-width-128-256",
        "dwp:dwp",
    ),
    PriorCell("ours, our bank from 32 source nets (same VAE recipe)", "source-nets-32", "dwp:dwp"),
    PriorCell(
        "ours, our bank from 2 FConv(256, 512) source nets (same VAE steps)",
        "source-width-256-512-nets-2",
        "dwp:dwp",
    ),
    PriorCell(
        "ours, the same bank, VAEs trained the same passes over it",
        "source-width-256-512-nets-2-vae-epochs",
        "dwp:dwp",
    ),
    PriorCell(
        "ours, our bank from 8 FConv(256, 512) source nets (same VAE recipe)",
        "source-width-256-512",
        "dwp:dwp",
    ),
    PriorCell("ours, our bank rescaled to their norms", "rescaled-bank-vaes", "dwp:dwp"),
    PriorCell(
        "our 5x5 prior on conv2, released 7x7 (released init)",
        "mixed-layer-priors",
        "dwp@released/dwp:dwp@released",
        own=False,
        normal=NORMAL_RELEASED_INIT,
    ),
    PriorCell(
        "our 7x7 prior on conv1, released 5x5 (released init)",
        "mixed-layer-priors",
        "dwp/dwp@released:dwp@released",
        own=False,
        normal=NORMAL_RELEASED_INIT,
    ),
    PriorCell("N(0, 1), Xavier", REFERENCE, NORMAL, own=False),
)
#: the lines judged at a short setting (a table of their own: 3,000 steps are not 10,000)
SHORT_CELLS: tuple[PriorCell, ...] = (
    PriorCell(
        "released prior (their VAEs, their bank)", SHORT_REFERENCE, RELEASED, False, short=True
    ),
    PriorCell(
        "ours: our VAEs, our bank (book preset, its fourth build)",
        SHORT_REFERENCE,
        "dwp:dwp",
        short=True,
    ),
    PriorCell(
        "ours, their bank (VAEs trained the authors' steps)",
        f"{SHORT_REFERENCE}--released-bank-vaes-long",
        "dwp:dwp",
        short=True,
    ),
    PriorCell(
        "ours, our bank from FConv(128, 256) source nets (same VAE recipe)",
        f"{SHORT_REFERENCE}--source-width-128-256",
        "dwp:dwp",
        short=True,
    ),
    PriorCell(
        "our 5x5 prior on conv2, released 7x7 (released init)",
        SHORT_REFERENCE,
        "dwp@released/dwp:dwp@released",
        False,
        NORMAL_RELEASED_INIT,
        short=True,
    ),
    PriorCell(
        "our 7x7 prior on conv1, released 5x5 (released init)",
        SHORT_REFERENCE,
        "dwp/dwp@released:dwp@released",
        False,
        NORMAL_RELEASED_INIT,
        short=True,
    ),
    PriorCell(
        "ours, a sparse bank: 4 FConv(128, 256) trained 60 epochs with the authors' recipe on the "
        "real notMNIST sample (same VAE recipe)",
        SPARSE_TRAININGS[0],
        "dwp:dwp",
        normal=NORMAL_SAME_INIT,
        short=SPARSE_SCREEN,
    ),
    PriorCell(
        "ours, the same sparse bank, a second VAE training (VAE seeds 1)",
        SPARSE_TRAININGS[1],
        "dwp:dwp",
        normal=NORMAL_SAME_INIT,
        short=SPARSE_SCREEN,
    ),
    PriorCell("N(0, 1), Xavier", SHORT_REFERENCE, NORMAL, own=False, short=True),
)


def _check_setting(row: Mapping, where: Path, setting: Mapping[str, object] = SETTING) -> None:
    bad = {k: row.get(k) for k, v in setting.items() if row.get(k) != v}
    if bad:
        what = (
            "the authors' setting"
            if setting is SETTING
            else f"the short setting ({setting_title(setting)})"
        )
        raise ExperimentError(
            f"{where}: the row of {row.get('prior')}:{row.get('init')}, split seed "
            f"{row.get('seed')}, was not run at {what} ({bad} instead of "
            f"{ {k: setting[k] for k in bad} }); move it to another folder or drop it from "
            "own_prior.CELLS or SHORT_CELLS"
        )


def accuracies(
    root: Path, folder: str, method: str, setting: Mapping[str, object] = SETTING
) -> dict[int, dict]:
    """``{split seed: row}`` of ``method`` at n = 50 in ``root/folder`` (empty if none)."""
    prior, init = parse_method(method)
    path = root / folder / "results.csv"
    out: dict[int, dict] = {}
    for r in read_rows(path, RESULT_COLUMNS):
        if (r["prior"], r["init"]) != (prior, init) or int(r["n"]) != N:
            continue
        _check_setting(r, path, setting)
        seed = int(r["seed"])
        if seed in out:
            raise ExperimentError(f"{path}: two rows of {method} for split seed {seed}")
        out[seed] = r
    return out


def _values(rows: Mapping[int, dict], column: str) -> list[float]:
    """``column`` of the rows, by split seed, without the rows that lack it (``None``: det)."""
    return [rows[s][column] for s in sorted(rows) if rows[s][column] is not None]


def paired_accuracy(
    mine: Mapping[int, dict], base: Mapping[int, dict]
) -> tuple[list[int], list[float]]:
    seeds = sorted(set(mine) & set(base))
    return seeds, [mine[s]["acc_ensemble"] - base[s]["acc_ensemble"] for s in seeds]


def table_rows(root: str | Path | None = None, cells: Sequence[PriorCell] = CELLS) -> list[dict]:
    """One dict per cell: seeds, accuracy mean and std, the paired differences (fractions) to
    the released prior (their mean, and per seed in ``released_differences``) and to N(0, 1)
    with on how many seeds it is below / above, minutes, and
    two means over seeds of the trained network at its last steps: conv2's mean log sigma^2 and
    the data term, the cross-entropy summed over the 50 training digits under one weight sample
    (``nll``, loss minus KL, printed to 0.01: at a KL of ~30,000, as under the deep weight
    priors, float32 resolves that difference to ~0.004; at N(0, 1)'s ~209,000 only to ~0.03).
    A number a row lacks (``None``) is left out of its mean."""
    root = Path(root) if root is not None else RESULTS_DIR
    refs = {c.reference[0]: c.reference for c in cells}
    released = {f: accuracies(root, f, RELEASED, s) for f, s in refs.values()}
    normals = {(f, m): accuracies(root, f, m, s) for f, s in refs.values() for m in (NORMAL, NORMAL_RELEASED_INIT)}  # fmt: skip
    out = []
    for cell in cells:
        ref, setting = cell.reference
        mine = accuracies(root, cell.folder, cell.method, setting)
        acc = [mine[s]["acc_ensemble"] for s in sorted(mine)]
        seconds, ls2, nll = (_values(mine, c) for c in ("seconds", "log_sigma2_conv2", "nll"))
        prov_file = root / cell.folder / "provenance.json"
        prov = json.loads(prov_file.read_text()) if prov_file.exists() else {}
        s_rel, d_rel = paired_accuracy(mine, released[ref])
        if cell.normal == NORMAL_SAME_INIT:  # from our VAEs' samples: the line's own folder's
            base = accuracies(root, cell.folder, cell.normal, setting)
        else:
            base = normals[ref, cell.normal]
        s_norm, d_norm = paired_accuracy(mine, base)
        out.append(
            {
                "label": cell.label,
                "folder": cell.folder,
                "method": cell.method,
                "own": cell.own,
                "seeds": sorted(mine),
                "mean": statistics.fmean(acc) if acc else None,
                "std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                "vs_released": statistics.fmean(d_rel) if d_rel else None,
                "below_released": sum(d < 0 for d in d_rel),
                "released_seeds": s_rel,
                "released_differences": d_rel,
                "vs_normal": statistics.fmean(d_norm) if d_norm else None,
                "above_normal": sum(d > 0 for d in d_norm),
                "normal_seeds": s_norm,
                "normal": cell.normal,
                "normal_differences": d_norm,
                "by_seed": {s: mine[s]["acc_ensemble"] for s in mine},
                "bank_norms": (prov.get("bank") or {}).get("norms"),  # of the kept slices
                "vaes": sorted({str(mine[s]["vae_sha256"]) for s in mine}),
                # the banks our VAEs were fitted to: "pipeline" (ours) or "released" (theirs)
                "vae_banks": sorted(
                    {str(v.get("bank")) for v in (prov.get("kernel_vaes") or {}).values()}
                ),
                "vae_held_out": {  # importance-weighted log p(w) per held-out slice, nats
                    layer: (v.get("held_out") or {}).get("log_likelihood_iw")
                    for layer, v in (prov.get("kernel_vaes") or {}).items()
                },
                "vae_steps": {  # each kernel VAE's training steps, from the run's own config
                    layer: (v.get("train") or {}).get("steps")
                    for layer, v in ((prov.get("config") or {}).get("vae") or {}).items()
                },
                "short": cell.short,
                "reference": ref,  # the folder of the released prior and N(0, 1) it pairs with
                "minutes": statistics.fmean(seconds) / 60 if seconds else None,
                "devices": sorted({str(mine[s]["device"]) for s in mine}),
                "log_sigma2_conv2": statistics.fmean(ls2) if ls2 else None,
                "log_sigma2_conv2_spread": max(ls2) - min(ls2) if ls2 else None,
                "nll": statistics.fmean(nll) if nll else None,
            }
        )
    return out


def _diff(mean: float | None, count: int, seeds: Sequence[int]) -> str:
    return "" if mean is None else f"{100 * mean:+.1f} ({count}/{len(seeds)})"


def markdown(rows: Sequence[Mapping], setting: str = "authors' setting") -> str:
    """The table, one line per cell (a cell without rows says so)."""
    lines = [
        f"| prior (n = 50, {setting}) | results folder | split seeds | accuracy "
        "| - released prior (points, seeds below) | - N(0, 1) (points, seeds above; init: *) "
        "| conv2 log sigma^2 | train nll (nats) | minutes per cell (device) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        folder = f"`{r['folder']}`"
        if not r["seeds"]:
            lines.append(f"| {r['label']} | {folder} | no row yet | | | | | | |")
            continue
        seeds = ",".join(str(s) for s in r["seeds"])
        label = r["label"]
        if r.get("short") and r["reference"] != SHORT_REFERENCE:  # another short setting's line
            label += f" (at {setting_title(SHORT_SETTINGS[r['reference']])})"
        mark = {NORMAL: "", NORMAL_RELEASED_INIT: " (released)"}.get(r["normal"], " (same)")
        acc = f"{r['mean']:.3f} ± {r['std']:.3f}" if len(r["seeds"]) > 1 else f"{r['mean']:.3f}"
        lines.append(
            f"| {label} | {folder} | {seeds} | {acc} "
            f"| {_diff(r['vs_released'], r['below_released'], r['released_seeds'])} "
            f"| {_diff(r['vs_normal'], r['above_normal'], r['normal_seeds'])}{mark} "
            f"| {format_or_blank(r['log_sigma2_conv2'], '.2f')} | {format_or_blank(r['nll'], '.2f')} "
            f"| {format_or_blank(r['minutes'], '.0f')} ({', '.join(r['devices'])}) |"
        )
    lines.append(
        "\n(*) N(0, 1) from Xavier, the paper's baseline; \"(released)\": from the released VAEs' "
        "samples, the init of that line; \"(same)\": from the line's own VAEs' samples, its init."
    )
    return "\n".join(lines) + "\n"


def conv2_prior(method: str) -> str:
    """The prior of conv2 in a method: ``"dwp@released/dwp:..."`` -> ``"dwp"``."""
    prior, _ = parse_method(method)
    return prior.split("/")[-1]


def _span(values: Sequence[float], fmt: str) -> str:
    lo, hi = min(values), max(values)
    return format(lo, fmt) if format(lo, fmt) == format(hi, fmt) else f"{lo:{fmt}} to {hi:{fmt}}"


def observations(rows: Sequence[Mapping]) -> str:
    """What the trained networks' two columns say, computed from the same rows: how far conv2's
    log sigma^2 moves between split seeds of one prior, and both columns by conv2's prior."""
    ran = [r for r in rows if r["seeds"] and not r.get("short")]
    if not ran:
        return ""
    spread = [
        r["log_sigma2_conv2_spread"]
        for r in ran
        if len(r["seeds"]) > 1 and r["log_sigma2_conv2_spread"] is not None
    ]
    lines = []
    if spread:
        lines.append(
            f"- conv2's mean log sigma^2 differs by at most {max(spread):.3f} between the split "
            "seeds of a line (the largest max - min over the lines with two or more seeds)."
        )
    both = [r for r in ran if r["log_sigma2_conv2"] is not None and r["nll"] is not None]
    groups = {
        "the released 5x5 VAE": [r for r in both if conv2_prior(r["method"]) == "dwp@released"],
        "one of our 5x5 VAEs": [r for r in both if conv2_prior(r["method"]) == "dwp"],
        "N(0, 1)": [r for r in both if conv2_prior(r["method"]) == "normal"],
    }
    parts = [
        f"{name}: log sigma^2 {_span([r['log_sigma2_conv2'] for r in rs], '.2f')}, train nll "
        f"{_span([r['nll'] for r in rs], '.2f')} nats"
        for name, rs in groups.items()
        if rs
    ]
    lines.append("- By the prior on conv2 (means per line): " + "; ".join(parts) + ".")
    builds = builds_sentence(rows)
    return "\n".join(lines + ([builds] if builds else [])) + "\n"


def _per_seed_gap(a: Mapping, b: Mapping) -> tuple[list[int], list[float]]:
    """The split seeds both lines ran, and ``b``'s accuracy minus ``a``'s on each (points)."""
    seeds = sorted(set(a["by_seed"]) & set(b["by_seed"]))
    return seeds, [100 * (b["by_seed"][s] - a["by_seed"][s]) for s in seeds]


def builds_sentence(rows: Sequence[Mapping]) -> str:
    """How far the book preset's prior moves between builds (:data:`BOOK_BUILDS`: the same seeds
    and recipe, other machines' floating-point bits), against its spread within one build."""
    got = [
        r
        for f in BOOK_BUILDS
        for r in rows
        if r["folder"] == f and r["method"] == "dwp:dwp" and len(r["normal_differences"]) > 1
    ]
    if len(got) < 2:
        return ""
    diffs = [100 * r["vs_normal"] for r in got]
    se = [100 * statistics.stdev(r["normal_differences"]) / len(r["normal_differences"]) ** 0.5 for r in got]  # fmt: skip
    each = ", ".join(f"{d:+.1f} (`{r['folder']}`)" for d, r in zip(diffs, got, strict=True))
    text = (
        f"- The book preset's prior, built {len(got)} times from the same seeds and recipe (what "
        f"each build trained has its machine's floating-point bits), against N(0, 1): {each} "
        f"points. The builds lie {max(diffs) - min(diffs):.1f} points apart; within a build the "
        f"standard error over its split seeds is {max(se):.1f} points at most."
    )
    for i, a in enumerate(got):  # two builds that cut the same slices differ in their VAEs only
        for b in got[i + 1 :]:
            same_bank = a["bank_norms"] and a["bank_norms"] == b["bank_norms"]
            if not same_bank or a["vaes"] == b["vaes"]:
                continue
            seeds, d = _per_seed_gap(a, b)
            held = [
                f"{layer} {a['vae_held_out'][layer]:.2f} against {b['vae_held_out'][layer]:.2f}"
                for layer in sorted(set(a["vae_held_out"]) & set(b["vae_held_out"]))
                if a["vae_held_out"][layer] is not None and b["vae_held_out"][layer] is not None
            ]
            text += (
                f" `{a['folder']}` and `{b['folder']}` cut the same bank (the norm statistics "
                f"of its kept slices agree in every digit) and differ in their VAEs' bits "
                f"(and where the cells ran): {statistics.fmean(d):+.1f} points from one to "
                f"the other over split seeds {','.join(map(str, seeds))} (per seed "
                f"{', '.join(f'{x:+.1f}' for x in d)})"
                + (
                    f", with held-out log p(w) of {'; '.join(held)} nats per slice."
                    if held
                    else "."
                )
            )
    return text + " One build of this prior is not a measurement of the recipe."


def adoption(differences: Sequence[float]) -> tuple[int, str]:
    """How many of a line's paired differences to N(0, 1) (fractions) reach
    :data:`ADOPT_POINTS`, and whether the rule (on :data:`ADOPT_SEEDS` of :data:`ADOPT_OF` split
    seeds) is met, failed whatever the missing seeds give, or still open."""
    hits = sum(100 * d >= ADOPT_POINTS for d in differences)
    if hits >= ADOPT_SEEDS:
        return hits, "met"
    if len(differences) - hits > ADOPT_OF - ADOPT_SEEDS:
        return hits, "failed"
    return hits, "open"


def trainings_sentence(rows: Sequence[Mapping], folders: Sequence[str] = SPARSE_TRAININGS) -> str:
    """The lines of one bank whose kernel VAEs were trained more than once (``folders``): each
    training against N(0, 1) from its own init, how far apart the trainings lie on the split
    seeds both ran, and where each stands against the adoption rule. Empty until two have rows."""
    got = [r for f in folders for r in rows if r["folder"] == f and r["normal_differences"]]
    if len(got) < 2:
        return ""
    if any(r["bank_norms"] != got[0]["bank_norms"] for r in got):
        raise ExperimentError(
            f"{', '.join(r['folder'] for r in got)} should hold VAE trainings of one bank, but "
            "the norm statistics of their banks differ; rerun them on one machine's cached bank"
        )
    verdict = {
        "met": "meets the adoption rule",
        "failed": "cannot meet the adoption rule whatever its missing seeds give",
        "open": "is still open on the adoption rule",
    }
    each = []
    for r in got:
        hits, state = adoption(r["normal_differences"])
        complete = len(r["normal_differences"]) >= ADOPT_OF  # no seed left to run
        said = "fails the adoption rule" if state == "failed" and complete else verdict[state]
        per = ", ".join(f"{100 * d:+.1f}" for d in r["normal_differences"])
        each.append(
            f"{100 * r['vs_normal']:+.1f} (`{r['folder']}`, split seeds "
            f"{','.join(map(str, r['normal_seeds']))}: {per}; {hits} of "
            f"{len(r['normal_differences'])} at or above {ADOPT_POINTS:g} points, so it "
            f"{said})"
        )
    a, b = got[0], got[1]
    seeds, gap = _per_seed_gap(a, b)
    text = (
        f"- One bank, its kernel VAEs trained {'twice' if len(got) == 2 else f'{len(got)} times'} "
        "(the same recipe, other VAE "
        f"seeds; the banks' norm statistics agree in every digit), against N(0, 1) from each "
        f"training's own init: {'; '.join(each)}. Adopting a prior needs "
        f"{ADOPT_POINTS:g} points or more on {ADOPT_SEEDS} of {ADOPT_OF} split seeds."
    )
    if seeds:
        text += (
            f" The second training's accuracy minus the first's: {statistics.fmean(gap):+.1f} "
            f"points over split seeds {','.join(map(str, seeds))} (per seed "
            f"{', '.join(f'{x:+.1f}' for x in gap)})."
        )
    return text + "\n"


def with_table(
    text: str, table: str, where: str = "the findings note", begin: str = BEGIN, end: str = END
) -> str:
    """``text`` with the findings note's table (or another between ``begin`` and ``end``)."""
    return _with_table(text, table, where, begin, end)


def update_note(
    text: str,
    rows: Sequence[Mapping],
    curve: Sequence[Mapping],
    where: str,
    short_rows: Sequence[Mapping] = (),
) -> str:
    """The findings note with its table written, and its short-setting table and curve where it
    has their markers."""
    from .source_curve import CURVE_BEGIN, CURVE_END, curve_markdown

    new = with_table(text, markdown(rows) + "\n" + observations(rows), where)
    if SHORT_BEGIN in new or SHORT_END in new:
        short = markdown(short_rows, SHORT_TITLE)
        trainings = trainings_sentence(short_rows)
        short += "\n" + trainings if trainings else ""
        new = with_table(new, short, where, SHORT_BEGIN, SHORT_END)
    if CURVE_BEGIN in new or CURVE_END in new:
        new = with_table(new, curve_markdown(curve), where, CURVE_BEGIN, CURVE_END)
    return new


def cli(args: argparse.Namespace) -> int:
    try:
        return _cli(args)
    except ExperimentError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def results_root(root: str | Path | None) -> Path:
    """The results folder the table reads: it must exist and hold the reference run
    (:data:`REFERENCE`), which every line is paired with; else an :class:`ExperimentError`
    (a missing or empty folder would give a blank table, not an error)."""
    root = Path(root) if root is not None else RESULTS_DIR
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise ExperimentError(
            f"--results {root} {what}: give the results folder (by default the repository's "
            "results/, with one folder per run)"
        )
    if not (root / REFERENCE / "results.csv").is_file():
        raise ExperimentError(
            f"--results {root} holds no {REFERENCE}/results.csv, the run every line of the table "
            "is paired with, so there is nothing to tabulate; give the repository's results/ "
            f"folder (or a copy holding {REFERENCE}/ and the folders of own_prior.CELLS)"
        )
    return root


def _cli(args: argparse.Namespace) -> int:
    if getattr(args, "noise", None):
        return noise_cli(args.noise, command_line("studies.own_prior"))
    from .source_curve import curve_markdown, curve_rows

    args.results = results_root(args.results)
    rows = table_rows(args.results)
    short_rows = table_rows(args.results, SHORT_CELLS)
    curve = curve_rows(args.results)
    if args.update is None and args.check is None:
        sys.stdout.write(markdown(rows) + "\n" + observations(rows) + "\n")
        sys.stdout.write(markdown(short_rows, SHORT_TITLE) + "\n" + trainings_sentence(short_rows))
        sys.stdout.write(curve_markdown(curve))
        return 0
    path = Path(args.update or args.check)
    if not path.exists():
        raise ExperimentError(f"{path} does not exist; give the findings note's path")
    text = path.read_text()
    new = update_note(text, rows, curve, str(path), short_rows)
    if args.check is not None:
        if new != text:
            print(
                f"{path}: its table is not the one the committed runs give; run "
                f"`python -m studies.own_prior --update {path}`",
                file=sys.stderr,
            )
            return 1
        print(f"{path}: the table is up to date")
        return 0
    path.write_text(new)
    print(f"{path}: table written ({len(rows)} lines)")
    return 0


# ------------------------------------------------------------------------------------------------
# Inside a trained network: how much noise the prior lets each weight keep
# ------------------------------------------------------------------------------------------------

NOISE_COLUMNS = (
    "prior", "init", "n", "seed", "acc_ensemble", "layer", "slices", "log_sigma2",
    "decoder_logvar", "residual_rms", "weight_rms",
)  # fmt: skip


def weight_noise(model, vaes: Mapping) -> dict[str, dict]:
    """Per layer of a trained Bayesian CNN with a deep weight prior (``vaes``: that layer's
    kernel VAE, the prior of the cell): the posterior's mean log sigma^2 over the layer's
    weights beside the log-variance the prior's decoder p(w|z) gives at the trained means, with
    each slice's code z the mean of r(z|w) (mean over slices and pixels), and how far the means
    sit from the decoder's mean (rms of w - mu(z)) against their own rms.

    Why these two: for one weight, the KL's auxiliary bound has the terms -log(sigma^2) / 2 and
    sigma^2 / (2 s^2) (s^2 the decoder's variance at that weight), so without the data term the
    optimal sigma^2 is s^2: the prior's decoder variance where the weights settle sets the noise
    the posterior keeps, and the data term can only pull it lower."""
    import torch

    out: dict[str, dict] = {}
    with torch.no_grad():
        for layer, bl in model.bayes_layers().items():
            if layer not in vaes:
                continue
            vae = vaes[layer]
            mu, log_var = bl.slices()
            z, _ = vae.encode(mu)
            dec_mu, dec_logvar = vae.decode(z)
            out[layer] = {
                "slices": mu.shape[0],
                "log_sigma2": round(log_var.mean().item(), 4),
                "decoder_logvar": round(dec_logvar.mean().item(), 4),
                "residual_rms": round((mu - dec_mu).pow(2).mean().sqrt().item(), 6),
                "weight_rms": round(mu.pow(2).mean().sqrt().item(), 6),
            }
    return out


def _cell_vaes(exp, method: str, row: Mapping, where: Path) -> dict:
    """The kernel VAE of every DWP layer of ``method``, checked against the hashes in ``row``."""
    from dwp_lib.nets import LAYERS

    prior, _ = parse_method(method)
    names = prior.split("/")
    names = names * len(LAYERS) if len(names) == 1 else names
    vaes = {}
    for layer, name in zip(LAYERS, names, strict=True):
        if name == "dwp":
            vaes[layer] = exp.kernel_vaes()[layer]
            sha = exp.vae_records[layer]["sha256"][:12]
            if f"{layer}={sha}" not in str(row.get("vae_sha256")):
                raise ExperimentError(
                    f"{where}: the {layer} kernel VAE of this run's config ({sha}) is not the one "
                    f"the cell was trained with ({row.get('vae_sha256')}); restore that VAE file "
                    "in the cache (or retrain the run)"
                )
        elif name == "dwp@released":
            vaes[layer] = exp.released_vaes()[layer]
    return vaes


def noise_rows(folder: str | Path, cfg=None) -> list[dict]:
    """:func:`weight_noise` of every network a run folder saved (``grid.save_models``), one row
    per cell and layer with a deep weight prior. ``cfg``: the run's config; by default rebuilt
    from the folder's ``provenance.json`` (preset, config file and overrides). Its kernel VAEs
    come from the cache (or are retrained, bit for bit, from the run's stages)."""
    import json

    import torch

    from dwp_lib.experiment import Experiment, config_from, load_cell_model

    folder = Path(folder)
    models = sorted((folder / "models").glob("*.pt"))
    prov_path = folder / "provenance.json"
    if not models:
        raise ExperimentError(
            f"{folder} has no saved networks (models/*.pt): run its grid with --set "
            "grid.save_models=true first"
        )
    if cfg is None:
        if not prov_path.exists():
            raise ExperimentError(
                f"{folder} has no provenance.json to rebuild its config from: pass the config"
            )
        prov = json.loads(prov_path.read_text())
        cfg = config_from(prov.get("preset"), prov.get("config_file"), prov.get("overrides") or [])
    exp = Experiment(cfg, None, verbose=False)
    rows, plain = [], []
    for path in models:
        saved = torch.load(path, map_location="cpu", weights_only=True)["row"]
        method = f"{saved['prior']}:{saved['init']}"
        if saved["prior"] == "det":  # a plain CNN: no posterior noise, no prior's decoder
            plain.append(f"{method}, n = {saved['n']}, split seed {saved['seed']}")
            continue
        model, row = load_cell_model(cfg, folder, method, int(saved["n"]), int(saved["seed"]))
        for layer, v in weight_noise(model, _cell_vaes(exp, method, row, path)).items():
            rows.append({**{k: row[k] for k in NOISE_COLUMNS[:5]}, "layer": layer, **v})
    if plain:
        print(
            f"note: skipped {len(plain)} det cell(s) ({'; '.join(plain)}): a plain CNN has no "
            "posterior noise and no prior decoder to compare it with"
        )
    if len(plain) == len(models):
        raise ExperimentError(
            f"{folder}: every saved network is a det cell (a plain CNN), which has no posterior "
            "noise; save the networks of a Bayesian cell (grid.save_models=true with a prior "
            "other than det)"
        )
    return rows


def earlier_noise_rows(folder: str | Path, fresh: Sequence[Mapping]) -> list[dict]:
    """The rows of ``folder/weight-noise.csv`` (if any) for cells that ``fresh`` does not hold:
    cells whose networks were saved on another machine or in an earlier session (``models/`` is
    not committed). Each must still be a cell of the folder's ``results.csv`` with the same
    accuracy; one that is not (the run was redone, or the file edited) raises."""
    folder = Path(folder)
    path = folder / "weight-noise.csv"
    if not path.exists():
        return []
    cell = lambda r: (r["prior"], r["init"], int(r["n"]), int(r["seed"]))  # noqa: E731
    have = {cell(r) for r in fresh}
    results = {cell(r): float(r["acc_ensemble"]) for r in read_rows(folder / "results.csv")}
    kept = [r for r in read_rows(path, NOISE_COLUMNS) if cell(r) not in have]
    for r in kept:
        acc = results.get(cell(r))
        if acc is None or abs(acc - float(r["acc_ensemble"])) > 5e-5:
            raise ExperimentError(
                f"{path}: its row for {r['prior']}:{r['init']}, n = {r['n']}, split seed "
                f"{r['seed']} (accuracy {r['acc_ensemble']}) is not a cell of results.csv as "
                f"it stands ({acc}); delete weight-noise.csv and write it again from the saved "
                "networks of every cell"
            )
    return kept


def noise_markdown(rows: Sequence[Mapping]) -> str:
    lines = [
        "| prior:init | n | split seed | accuracy | layer | posterior log sigma^2 "
        "| decoder log-variance at the weights | rms(w - decoder mean) | rms(w) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['prior']}:{r['init']} | {r['n']} | {r['seed']} | {r['acc_ensemble']:.3f} "
            f"| {r['layer']} | {r['log_sigma2']:.2f} | {r['decoder_logvar']:.2f} "
            f"| {r['residual_rms']:.4f} | {r['weight_rms']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def noise_cli(folder: str | Path, command: str, cfg=None) -> int:
    """Write ``weight-noise.csv`` and ``weight-noise.md`` into ``folder`` (atomically): the rows
    of the networks saved there now, and the earlier rows of cells whose networks are not here
    (:func:`earlier_noise_rows`)."""
    from dwp_lib import artifacts
    from dwp_lib.experiment import append_row

    folder = Path(folder)
    rows = noise_rows(folder, cfg)
    kept = earlier_noise_rows(folder, rows)
    rows = sorted(kept + rows, key=lambda r: (r["prior"], r["init"], int(r["n"]), int(r["seed"])))
    with artifacts.atomic_path(folder / "weight-noise.csv") as tmp:
        for r in rows:
            append_row(tmp, r, NOISE_COLUMNS)
    text = (
        "# Inside the trained networks: the noise each weight keeps\n\n"
        f"Written by `{command}` from the networks this run saved (`models/`, not committed), "
        "with the kernel VAEs of each cell's prior (hash-checked against its row). For each "
        "layer with a deep weight prior: the posterior's mean log sigma^2, and the log-variance "
        "the prior's decoder p(w|z) gives at the trained means (z: the mean of r(z|w) per "
        "slice). Without the data term the KL's optimum is sigma^2 = that variance "
        "(`studies.own_prior.own_prior.weight_noise`)."
        + (
            " The rows of split seed(s) "
            + ", ".join(sorted({str(r["seed"]) for r in kept}, key=int))
            + " are kept from an earlier writing of this file: their networks are not on the "
            "machine that wrote it, and their accuracy matches their row in results.csv."
            if kept
            else ""
        )
        + "\n\n"
        + noise_markdown(rows)
    )
    artifacts.atomic_write_bytes(folder / "weight-noise.md", text.encode())
    sys.stdout.write(noise_markdown(rows))
    return 0
