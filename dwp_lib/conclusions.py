"""The talk's claims, each with a verdict from the committed runs: a paired difference over split
seeds "holds" >= 2 standard errors above zero on >= 3 seeds, "fails" as far below, else unclear."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

HOLDS, FAILS, UNCLEAR, FEW = "holds", "fails", "no clear difference", "too few seeds"
MIN_SEEDS = 3  # paired seeds needed before a verdict is more than "too few seeds"
Z = 2.0  # standard errors from zero for "holds" / "fails"
LAYER_NAMES = {"conv1": "7x7", "conv2": "5x5"}
_SAID = ("holds", "fails", "shows no clear difference", "has too few seeds")  # of each verdict


@dataclass(frozen=True)
class Verdict:
    """One claim measured once: what was compared, the verdict and the numbers behind it."""

    claim: str
    test: str  # what was compared, in words
    verdict: str
    evidence: str  # the numbers, in words
    source: str  # the results folder(s)
    short: str = ""  # a few words naming the comparison, for the summary at a glance
    selected: str = ""  # how the setting was chosen, when a search chose it


def paired_verdict(differences: Sequence[float]) -> str:
    """The verdict on paired differences (positive: the claim's side is ahead)."""
    k = len(differences)
    if k < MIN_SEEDS:
        return FEW
    mean = statistics.fmean(differences)
    se = statistics.stdev(differences) / math.sqrt(k)
    if se == 0:
        return HOLDS if mean > 0 else FAILS if mean < 0 else UNCLEAR
    t = mean / se
    return HOLDS if t >= Z else FAILS if t <= -Z else UNCLEAR


def _points(diffs: Sequence[float]) -> str:
    """``+7.1 ± 0.9 points (3 of 5 seeds ahead)`` (± the standard error) for accuracy diffs."""
    if not diffs:
        return "no paired seeds yet"
    mean = 100 * statistics.fmean(diffs)
    se = 100 * statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else 0.0
    wins = sum(d > 0 for d in diffs)
    return f"{mean:+.1f} ± {se:.1f} points ({wins} of {len(diffs)} seeds ahead)"


def paired_effect(rows: Iterable[Mapping], a: str, b: str, label: str, n: int = 50) -> dict:
    """Method ``a`` minus ``b`` at size ``n`` in accuracy points, paired by split seed: the
    differences, their mean and standard error, wins, and each side's mean accuracy."""
    from .experiment import paired_difference

    rows = list(rows)
    d = paired_difference(rows, a, b, n)
    diffs = [100 * x for x in d["differences"]]
    k = len(diffs)
    side = {m: [float(r["acc_ensemble"]) for r in rows if f"{r['prior']}:{r['init']}" == m
                and int(r["n"]) == n and int(r["seed"]) in d["seeds"]] for m in (a, b)}  # fmt: skip
    return {
        "label": label, "a": a, "b": b, "seeds": d["seeds"], "diffs": diffs,
        "mean": statistics.fmean(diffs) if k else float("nan"),
        "se": statistics.stdev(diffs) / math.sqrt(k) if k > 1 else float("nan"),
        "wins": sum(x > 0 for x in diffs),
        "acc_a": statistics.fmean(side[a]) if side[a] else float("nan"),
        "acc_b": statistics.fmean(side[b]) if side[b] else float("nan"),
    }  # fmt: skip


def effect_phrase(e: Mapping) -> str:
    """``+7.4 points (standard error 0.8; ahead on 5 of 5 split seeds)``."""
    return (f"{e['mean']:+.1f} points (standard error {e['se']:.1f}; ahead on {e['wins']} of "
            f"{len(e['diffs'])} split seeds)")  # fmt: skip


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def compare_inits(
    curves: Iterable[Mapping], a: str, b: str, claim: str, source: str, label: str, short: str = ""
) -> list[Verdict]:
    """Init ``a`` against ``b``, paired by seed, at the first evaluation and at the last step."""
    by: dict[tuple[str, int], dict[int, float]] = {}
    for r in curves:
        by.setdefault((r["init"], int(r["step"])), {})[int(r["seed"])] = float(r["test_acc"])
    steps = sorted({s for (_, s) in by if s > 0})
    out = []
    for step in [steps[0], steps[-1]] if steps else []:
        ia, ib = by.get((a, step), {}), by.get((b, step), {})
        seeds = sorted(set(ia) & set(ib))
        diffs = [ia[s] - ib[s] for s in seeds]
        when = "early" if step == steps[0] else "at the end"
        evidence = "no paired seeds"
        if seeds:
            ma, mb = (statistics.fmean(side[s] for s in seeds) for side in (ia, ib))
            evidence = _points(diffs) + f"; {a} {ma:.3f} vs {b} {mb:.3f}"
        test, verdict = f"{label}, test accuracy after {step} steps ({when})", paired_verdict(diffs)
        out.append(Verdict(claim, test, verdict, evidence, source, f"{short}, {when}"))
    return out


def density_verdicts(scores: Iterable[Mapping], source: str) -> list[Verdict]:
    """Real held-out kernels against noise of the same norm: nats per slice of IW log p(w)."""
    table = {(r["prior"], r["layer"], r["kind"]): float(r["log_p_iw"]) for r in scores}
    claim, out = "VAE samples look like real kernels", []
    for prior, own in (("released", "released"), ("ours", "our")):
        for layer in ("conv1", "conv2"):
            real = table.get((prior, layer, f"{prior} held-out"))
            noise = table.get((prior, layer, f"noise at {own} norm"))
            xavier = table.get((prior, layer, "Xavier"))
            if real is None or noise is None:
                continue
            gap = real - noise
            verdict = HOLDS if gap > 1 else FAILS if gap < -1 else UNCLEAR
            extra = f"; Xavier-random slices {xavier:.1f}" if xavier is not None else ""
            whose = "the released" if prior == "released" else "our"
            test = f"{whose} {layer} VAE: log p of its held-out kernels vs noise of the same norm"
            evidence = f"{real:.1f} vs {noise:.1f} nats per slice ({gap:+.1f}){extra}"
            short = f"{own} {LAYER_NAMES[layer]}"
            out.append(Verdict(claim, test, verdict, evidence, source, short))
    return out


def memory_verdict(costs: Mapping, source: str) -> list[Verdict]:
    """The VAE files against the bank of slices they replace, at the run's and paper's scale."""
    from .kernel_layers import KernelVAEConfig
    from .kernel_vae import KernelVAE
    from .source_nets import SourceNetsConfig

    layers = costs.get("layers", {})
    keys = ("vae_bytes", "bank_bytes", "seconds_dwp", "seconds_filters")
    vae, bank, draws, copies = (sum(v[key] for v in layers.values()) for key in keys)
    paper = SourceNetsConfig.paper()
    c1, c2 = paper.widths
    paper_bank = 4 * paper.n_nets * (c1 * 1 * 7 * 7 + c2 * c1 * 5 * 5)
    authors = 4 * sum(
        sum(p.numel() for p in KernelVAE(KernelVAEConfig.authors(k)).parameters()) for k in (7, 5)
    )
    return [
        Verdict(
            "less memory than stored filters",
            "the book's run: kernel VAEs vs the bank of slices",
            HOLDS if vae < bank else FAILS,
            f"{vae / 1e3:,.0f} kB of VAE vs {bank / 1e3:,.0f} kB of bank",
            source,
            "the book's scale",
        ),
        Verdict(
            "less memory than stored filters",
            "the paper's scale: the authors' two VAEs vs 100 FConv(256, 512)'s slices",
            HOLDS if authors < paper_bank else FAILS,
            f"{authors / 1e6:.1f} MB of VAE vs {paper_bank / 1e9:.2f} GB of float32 slices",
            "the architectures (dwp_lib)",
            "the paper's scale",
        ),
        Verdict(
            "less computation than stored filters",
            "the book's run: time to draw one network's kernels",
            HOLDS if draws < copies else FAILS,
            f"{1e3 * draws:.1f} ms from the VAEs vs {1e3 * copies:.2f} ms from the bank",
            source,
            "drawing kernels",
        ),
    ]


def repo_results() -> Path:
    """The committed runs: ``results/`` of a checkout, else the copy installed with the package."""
    from .experiment import results_dir

    return results_dir()


def glance(root: str | Path | None = None) -> list[Verdict]:
    """The verdicts of the runs under ``root`` that its ``claims.toml`` assigns to each claim."""
    import tomllib

    from .experiment import paired_difference

    root = Path(root) if root is not None else repo_results()
    if not (root / "claims.toml").exists():
        return []
    spec = tomllib.loads((root / "claims.toml").read_text())
    out: list[Verdict] = []
    if (p := root / spec["densities"] / "scores.csv").exists():
        out += density_verdicts(read_csv(p), f"results/{spec['densities']}")
    init = next((f for f in spec["inits"] if (root / f / "init_curves.csv").exists()), None)
    if init is not None:
        curves = read_csv(root / init / "init_curves.csv")
        out += compare_inits(
            curves, "dwp", "default", "dwp init beats the default init", f"results/{init}",
            "our VAEs' samples vs PyTorch's default init, plain CNN", "our VAEs",
        )  # fmt: skip
        if any(r["init"] == "dwp@released" for r in curves):
            out += compare_inits(
                curves, "dwp@released", "default", "dwp init beats the default init",
                f"results/{init}", "the released VAEs' samples vs the default init, plain CNN",
                "the released VAEs",
            )  # fmt: skip
        if (p := root / init / "init_costs.json").exists():
            out += memory_verdict(json.loads(p.read_text()), f"results/{init}")
    claim = "DWP beats N(0, 1) with few labels"
    for run in spec["methods"]:
        folder, a, b = run["folder"], run["a"], run["b"]
        source = f"results/{folder}"
        if (p := root / folder / "results.csv").exists():
            rows = read_csv(p)
            have = {f"{r['prior']}:{r['init']}" for r in rows}
            if {a, b} <= have:  # a run that lacks a method gives no verdict, not "too few"
                d = paired_difference(rows, a, b, 50)  # a minus b at 50 labels, paired by seed
                seeds = f"; split seeds {', '.join(map(str, d['seeds']))}" if d["seeds"] else ""
                verdict, evidence = paired_verdict(d["differences"]), _points(d["differences"])
                v = Verdict(claim, run["test"], verdict, evidence + seeds, source, run["short"])
                out.append(dataclasses.replace(v, selected=run.get("selected", "")))
    return out


def markdown_table(verdicts: Sequence[Verdict]) -> str:
    """The verdicts as a Markdown table, one row per comparison, claims in the talk's order."""
    lines = [
        "| the talk's claim | tested as | verdict | the numbers | run |",
        "|---|---|---|---|---|",
    ]
    for v in verdicts:
        test = f"{v.test} (selected: {v.selected})" if v.selected else v.test
        lines.append(f"| {v.claim} | {test} | **{v.verdict}** | {v.evidence} | `{v.source}` |")
    return "\n".join(lines)


def glance_markdown(verdicts: Sequence[Verdict], link: str = "") -> str:
    """A few lines for the top of a chapter: each comparison's verdict and headline number."""
    if not verdicts:
        return ("**Result at a glance.** No committed runs are available in this installation "
                "(a checkout of the repository holds them under `results/`).")  # fmt: skip
    lines = ["**Result at a glance.** Each claim of the talk, measured by the committed runs"
             f"{link}:", ""]  # fmt: skip
    for claim, vs in by_claim(verdicts).items():
        parts = [f"{v.short or v.test}: **{v.verdict}** ({_headline(v)})" for v in vs]
        lines.append(f"- *{claim}*: " + "; ".join(parts) + ".")
    return "\n".join(lines)


def _headline(v: Verdict) -> str:
    """The first number of a verdict's evidence: ``+7.1 points, 5 seeds`` or ``54.8 vs 46.8``."""
    first = v.evidence.split(";")[0]
    if "points (" in first:
        mean = first.split(" ± ")[0]
        seeds = first.split(" of ")[-1].split(" seeds")[0]
        return f"{mean} points, {seeds} seed{'s' if seeds != '1' else ''}"
    return first.split(" (")[0]


def by_claim(verdicts: Sequence[Verdict]) -> dict[str, list[Verdict]]:
    """The verdicts grouped by claim, in the order they came."""
    out: dict[str, list[Verdict]] = {}
    for v in verdicts:
        out.setdefault(v.claim, []).append(v)
    return out


def answer_markdown(released: Mapping, released_xavier: Mapping, ours: Mapping) -> str:
    """The answer in a few sentences from three :func:`paired_effect` results (released prior vs
    N(0, 1) from VAE samples, the same from Xavier, ours vs N(0, 1)); verbs follow the signs."""

    def verb(e: Mapping, up: str, down: str) -> str:
        return up if e["mean"] > 0 else down

    from .experiment import PAPER_RESULTS

    paper = PAPER_RESULTS["dwp"][50]
    return (
        f"**The answer.** With the paper authors' released deep weight prior (their kernel VAEs, "
        f"GPL-3.0) at their setting, a Bayesian CNN that sees 50 labelled digits reaches "
        f"{released['acc_a']:.3f} test accuracy (the paper reports {paper:.3f}); the same network "
        f"under N(0, 1), started from the same VAE samples, reaches {released['acc_b']:.3f}. The "
        f"prior {verb(released, 'adds', 'costs')} {effect_phrase(released)}. Started from Xavier "
        f"draws instead, the same prior is {effect_phrase(released_xavier)} against N(0, 1) from "
        f"Xavier: the gain {verb(released_xavier, 'holds without', 'needs')} the pair of prior "
        f"and initialisation. The prior this book builds on a CPU is {effect_phrase(ours)} against "
        f"N(0, 1) at the same setting; why, and what closing the gap would take, is told in the "
        f"reproduction log."
    )


def in_short(verdicts: Sequence[Verdict]) -> str:
    """A short paragraph: per claim, how many comparisons hold or fail and which."""
    if not verdicts:
        return "**In short.** No committed runs are available in this installation."
    parts = []
    for claim, vs in by_claim(verdicts).items():
        said = []
        for kind, word in zip((HOLDS, FAILS, UNCLEAR, FEW), _SAID, strict=True):
            if those := [v for v in vs if v.verdict == kind]:
                which = "; ".join(f"{v.short or v.test}, {_headline(v)}" for v in those)
                said.append(f"{word} in {len(those)} ({which})")
        parts.append(f"*{claim}*: of {len(vs)} comparison{'s' * (len(vs) > 1)}, it "
                     + ", ".join(said) + ".")  # fmt: skip
    selected = sorted({v.selected for v in verdicts if v.selected})
    tail = " ".join(f"Selected, not independent: {s}." for s in selected)
    return "**In short.** " + " ".join(parts) + (f" {tail}" if tail else "")


def paired_effect_across(
    rows_a: Iterable[Mapping], a: str, rows_b: Iterable[Mapping], b: str, label: str, n: int = 50
) -> dict:
    """:func:`paired_effect` of method ``a`` of one set of runs against method ``b`` of another
    (e.g. two priors that the pipeline both calls ``dwp:dwp``), paired by split seed."""
    # two placeholder method names, only to pair the two sides by seed
    sides = (("dwp", "dwp", rows_a, a), ("normal", "xavier", rows_b, b))
    relabel = [
        {**r, "prior": prior, "init": init}
        for prior, init, rows, m in sides
        for r in rows
        if f"{r['prior']}:{r['init']}" == m
    ]
    return {**paired_effect(relabel, "dwp:dwp", "normal:xavier", label, n), "a": a, "b": b}
