"""Does a short training rank priors the way the authors' setting does?

Each candidate setting is a run folder under ``results/short-setting-search/``; every prior in
it is paired by split seed (n = 50) with the same prior at the authors' setting (10,000 steps),
where the two rows used the same kernel VAEs (their hashes in ``results.csv``).
A setting qualifies when, over 5 split seeds:

a. the released prior beats N(0, 1) from the same released init by >= 5 points on >= 4 seeds;
b. every prior's paired difference to N(0, 1) (Xavier init) keeps its sign, and the rank
   correlation of the priors' mean accuracies with the authors' setting is >= 0.8. A sign flips
   only where one of the two settings resolves it (its mean two standard errors from zero over
   the paired seeds): a difference that is noise at both has no sign to keep;
c. every difference larger than 5 points at the authors' setting keeps at least half its size.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dwp_lib.experiment import ExperimentError, load_results
from studies import format_or_blank, with_table

N = 50
BASELINE = "normal:xavier"
RELEASED_PAIR = ("dwp@released:dwp@released", "normal:dwp@released")
#: the authors'-setting folders every short setting is compared with (a prior whose bank and VAEs
#: were rebuilt on another host is rerun there, e.g. our book prior in book-prior-authors-setting)
REFERENCES = (
    "released-authors-setting",
    "released-prior-xavier-init",
    "book-prior-authors-setting",
    "book-prior-authors-setting-bank-5b47e78e",
    "mixed-layer-priors",
    "mixed-layer-priors-rebuilt-bank",
    "mixed-layer-priors-bank-5b47e78e",
)
#: every prior measured at the authors' setting, by method (the candidate's own folder)...
REQUIRED = (
    "dwp@released:dwp@released", "normal:dwp@released", "dwp@released:xavier", "dwp:dwp",
    "dwp@released/dwp:dwp@released", "dwp/dwp@released:dwp@released",
)  # fmt: skip
#: ...and the lines that need another bank or other VAEs than the book preset's: each is run at a
#: short setting into the sibling folder ``<setting>--<line>`` and paired with its own folders at
#: the authors' setting; its rows are labelled ``<prior>:<init> (<line>)``
ELSEWHERE = {
    "released-bank-vaes-long": (
        "our VAE recipe on the released bank (long)",
        (
            "released-bank-vaes-long-prior",
            "released-bank-vaes-long-retrained",
            "released-bank-vaes-long-prior-more-seeds",
        ),
    ),
    "source-width-128-256": (
        "our bank from FConv(128, 256) source nets",
        ("source-width-128-256",),
    ),
}
REQUIRED_ELSEWHERE = tuple(label for label, _ in ELSEWHERE.values())
#: a sibling folder ``<setting>--<suffix>`` whose suffix is not in :data:`ELSEWHERE` holds more
#: rows of the setting's own priors, e.g. more seeds run on another host: they pair by their bits
SIBLING = "--"
BEGIN = "<!-- short-setting-validation: written by `python -m studies.short_setting --update`; do not edit -->"
END = "<!-- end short-setting-validation -->"


def method(row: Mapping) -> str:
    """``prior:init``, and the line's name for a line on another bank (:data:`ELSEWHERE`)."""
    line = row.get("line")
    return f"{row['prior']}:{row['init']}" + (f" ({line})" if line else "")


def vae_key(row: Mapping) -> str:
    """What a row's prior and init were made of: the released files, our kernel VAEs, or
    neither (N(0, 1) or the plain CNN from Xavier). A DWP prior and its init are functions of
    the VAEs alone, so our VAEs' hashes name them (the bank's file also holds its provenance,
    which changes with the code's version while its slices do not)."""
    uses = set(row["prior"].split("/")) | {row["init"]}  # a mixed prior names each layer's
    if any(u.startswith("dwp") and "released" not in u for u in uses):
        return row["vae_sha256"]  # ours on some layer: its bits
    if any("released" in u for u in uses):
        return "released"  # the files are pinned by their SHA-256
    return "-"


def accuracies(rows: Sequence[Mapping]) -> dict[str, dict[int, dict[str, float]]]:
    """{method: {seed: {:func:`vae_key`: accuracy}}} at n = 50: one method may have been run
    with several VAEs (rebuilt on several hosts), each its own prior; the same row twice
    (method, seed and VAEs) with two accuracies is refused."""
    out: dict[str, dict[int, dict[str, float]]] = {}
    for r in rows:
        if int(r["n"]) == N:
            by_seed = out.setdefault(method(r), {}).setdefault(int(r["seed"]), {})
            acc, key = float(r["acc_ensemble"]), vae_key(r)
            if by_seed.setdefault(key, acc) != acc:
                raise ExperimentError(
                    f"two rows of {method(r)}, split seed {r['seed']}, with the same VAEs "
                    f"({key}) give {by_seed[key]} and {acc}: one folder's row is another's copy "
                    "run again; keep one"
                )
    return out


def relabel(rows: Sequence[Mapping], line: str) -> list[dict]:
    """The rows of a line on another bank, named after it by :func:`method`."""
    return [dict(r, line=line) for r in rows]


def ranks(v: Sequence[float]) -> list[float]:
    """Ranks from 0, the mean rank for ties."""
    order = sorted(range(len(v)), key=lambda i: v[i])
    out = [0.0] * len(v)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2
        i = j + 1
    return out


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN below 3 points."""
    if len(xs) < 3:
        return float("nan")
    rx, ry = ranks(xs), ranks(ys)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    var = (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5
    return cov / var if var else float("nan")


def resolved(diff: float, se: float | None) -> bool:
    """A mean difference at least two standard errors from zero; one seed (no SE) resolves
    nothing."""
    return se is not None and abs(diff) >= 2 * se


def standard_error(values: Sequence[float]) -> float | None:
    return statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else None


@dataclass
class PriorLine:
    method: str
    seeds: list[int]  # paired with the authors' setting (same seed, same VAEs; once per VAEs)
    short_diff: float | None  # mean difference to N(0, 1) from Xavier, points
    authors_diff: float | None
    short_acc: float | None
    authors_acc: float | None
    unpaired: list[int] = field(default_factory=list)  # seeds whose VAEs differ
    by_vaes: list[list[int]] = field(default_factory=list)  # the paired seeds, per kernel VAEs
    short_se: float | None = None  # standard error of short_diff over the paired seeds, points
    authors_se: float | None = None

    def seeds_text(self) -> str:
        """The paired seeds, a group per kernel VAEs (hosts' rebuilds): ``0,1,2 + 0,1``."""
        return " + ".join(",".join(map(str, g)) for g in self.by_vaes)

    @property
    def sign_kept(self) -> bool | None:
        """None where not measured, or where the sign flips within noise at both settings."""
        if self.short_diff is None or self.authors_diff is None:
            return None
        if (self.short_diff > 0) == (self.authors_diff > 0):
            return True
        if resolved(self.short_diff, self.short_se) or resolved(self.authors_diff, self.authors_se):
            return False
        return None

    @property
    def within_noise(self) -> bool:
        """The sign flips, but neither setting tells it from zero."""
        return (
            self.short_diff is not None and self.authors_diff is not None and self.sign_kept is None
        )

    @property
    def size_kept(self) -> bool | None:
        if self.short_diff is None or self.authors_diff is None or abs(self.authors_diff) <= 5:
            return None
        return self.sign_kept and abs(self.short_diff) >= abs(self.authors_diff) / 2


@dataclass
class Setting:
    name: str
    seeds: list[int]
    released_gain: dict[int, float]  # seed -> released prior minus N(0, 1) from the same init
    lines: list[PriorLine]
    rank_correlation: float
    cell_minutes: dict[str, float]  # prior kind -> median minutes of a cell
    kl_end: float | None  # the released DWP row's final KL term (nats), median over seeds
    nll_end: float | None
    kl_authors: float | None = None  # the same at the authors' setting
    missing: list[str] = field(default_factory=list)  # priors of the criteria not run here
    #: seed -> (released prior, N(0, 1) from its samples): accuracy here and at the authors'
    pair: dict[int, tuple[float, float]] = field(default_factory=dict)
    pair_authors: dict[int, tuple[float, float]] = field(default_factory=dict)

    def bound_sentence(self) -> str:
        """Whether the short run's bound means anything, from the two medians."""
        if not self.kl_end or not self.kl_authors:
            return ""
        ratio = self.kl_end / self.kl_authors
        if ratio > 10:
            return (f"Its bound is far from converged: the released prior's final KL term is "
                    f"{ratio:,.0f} times the authors' setting's ({self.kl_end:.3g} against "
                    f"{self.kl_authors:.3g} nats), so the setting is an accuracy proxy, not an "
                    f"estimate of the ELBO.")  # fmt: skip
        return (f"Its bound is near the authors' setting's (final KL {self.kl_end:.3g} against "
                f"{self.kl_authors:.3g} nats).")  # fmt: skip

    @property
    def gain_wins(self) -> int:
        return sum(d >= 5 for d in self.released_gain.values())

    @property
    def settled(self) -> bool:
        """Criterion a fails whatever seeds are added: two seeds under 5 points already."""
        return len(self.released_gain) - self.gain_wins >= 2

    def reasons(self) -> list[str]:
        """Why the setting does not qualify yet (empty when it does): how many seeds first."""
        run = len(self.released_gain)
        return ([f"{run} of 5 seeds"] if run < 5 else []) + self.failures() + self.pending()

    def failures(self) -> list[str]:
        """The criteria the rows so far fail (criterion a counts only once 5 seeds are in, or
        once it is settled)."""
        why, run = [], len(self.released_gain)
        lost = run - self.gain_wins  # seeds already under 5 points
        if run < 5 and self.settled:
            why.append(f"released gain under 5 points on {lost} of {run} seeds run, so "
                       f">= 5 on at most {5 - lost} of 5")  # fmt: skip
        elif run >= 5 and self.gain_wins < 4:
            why.append(f"released gain >= 5 points on {self.gain_wins} of 5 seeds")
        if any(line.sign_kept is False for line in self.lines):
            why.append("a prior's sign flips")
        if not self.rank_correlation >= 0.8:
            why.append(f"rank correlation {self.rank_correlation:.2f}")
        if any(line.size_kept is False for line in self.lines):
            why.append("a large difference shrinks below half")
        return why

    def pending(self) -> list[str]:
        """The priors still to be run or paired with the authors' setting (seeds aside)."""
        why = []
        ours = [line for line in self.lines if line.method != BASELINE]
        if unpaired := [line.method for line in ours if not line.seeds]:
            why.append(f"not paired with the authors' setting (other VAEs): {', '.join(unpaired)}")
        if few := [line.method for line in ours if 0 < len(set(line.seeds)) < 5]:
            why.append(f"paired on fewer than 5 seeds: {', '.join(few)}")
        if self.missing:
            why.append(f"not run: {', '.join(self.missing)}")
        return why

    def verdict(self) -> str:
        why = self.reasons()
        if not why:
            return "qualifies"
        return ("cannot qualify: " if self.settled else "not yet: ") + "; ".join(why)


def compare(
    short_rows: Sequence[Mapping],
    reference_rows: Sequence[Mapping],
    name: str,
    required: Sequence[str] = REQUIRED,
    elsewhere: Sequence[str] = REQUIRED_ELSEWHERE,
    own_rows: Sequence[Mapping] | None = None,
) -> Setting:
    """One short setting against the authors' setting, paired by seed and by VAE hashes (a
    seed run with two hosts' VAEs pairs twice); ``required`` and ``elsewhere``: the priors the
    criteria need (named in the verdict when not run); ``own_rows``: the setting's own folder,
    whose cells give the times and the bound (default: ``short_rows``)."""
    own = short_rows if own_rows is None else own_rows
    short, ref = accuracies(short_rows), accuracies(reference_rows)
    base_short = {s: k["-"] for s, k in short.get(BASELINE, {}).items() if "-" in k}
    base_ref = {s: k["-"] for s, k in ref.get(BASELINE, {}).items() if "-" in k}
    if not base_short:
        raise ExperimentError(f"{name}: no {BASELINE} rows at n = {N} to pair the priors with")
    a, b = (short.get(m, {}) for m in RELEASED_PAIR)
    pair = {
        s: (a[s]["released"], b[s]["released"])
        for s in sorted(set(a) & set(b))
        if "released" in a[s] and "released" in b[s]
    }
    gain = {s: 100 * (x - y) for s, (x, y) in pair.items()}
    ra, rb = (ref.get(m, {}) for m in RELEASED_PAIR)
    pair_authors = {
        s: (ra[s]["released"], rb[s]["released"])
        for s in pair
        if "released" in ra.get(s, {}) and "released" in rb.get(s, {})
    }
    lines, xs, ys = [], [], []
    for m in sorted(short):
        pairs = [
            (s, k)
            for s in sorted(short[m])
            for k in sorted(short[m][s])
            if k in ref.get(m, {}).get(s, {}) and s in base_short and s in base_ref
        ]
        unpaired = sorted(
            s for s in short[m] if s in ref.get(m, {}) and set(short[m][s]) - set(ref[m][s])
        )
        sa = ra = diff = rdiff = se = rse = None
        if pairs:
            sa = statistics.fmean(short[m][s][k] for s, k in pairs)
            ra = statistics.fmean(ref[m][s][k] for s, k in pairs)
            xs.append(sa)
            ys.append(ra)
            if m != BASELINE:
                ds = [100 * (short[m][s][k] - base_short[s]) for s, k in pairs]
                rds = [100 * (ref[m][s][k] - base_ref[s]) for s, k in pairs]
                diff, rdiff = statistics.fmean(ds), statistics.fmean(rds)
                se, rse = standard_error(ds), standard_error(rds)
        by_vaes = [[s for s, k in pairs if k == key] for key in dict.fromkeys(k for _, k in pairs)]
        lines.append(PriorLine(m, [s for s, _ in pairs], diff, rdiff, sa, ra, unpaired, by_vaes, se, rse))  # fmt: skip
    minutes: dict[str, list[float]] = {}
    for r in own:
        kind = "DWP" if r["prior"].startswith("dwp") else "N(0, 1)"
        minutes.setdefault(kind, []).append(float(r["seconds"]) / 60)
    released = [r for r in own if method(r) == RELEASED_PAIR[0] and int(r["n"]) == N]
    ref_released = [r for r in reference_rows if method(r) == RELEASED_PAIR[0] and int(r["n"]) == N]
    return Setting(
        name,
        sorted(base_short),
        gain,
        lines,
        spearman(xs, ys),
        {k: statistics.median(v) for k, v in sorted(minutes.items())},
        statistics.median(float(r["kl"]) for r in released) if released else None,
        statistics.median(float(r["nll"]) for r in released) if released else None,
        statistics.median(float(r["kl"]) for r in ref_released) if ref_released else None,
        [m for m in required if m not in short] + list(elsewhere),
        pair,
        pair_authors,
    )


def settings(root: Path) -> list[Setting]:
    """Every candidate setting under ``root/short-setting-search`` against the references, with
    its sibling folders (:data:`ELSEWHERE` lines, and more rows of its priors from other hosts)."""
    reference: list[dict] = []
    for folder in REFERENCES:
        if (root / folder / "results.csv").exists():
            reference += load_results(root / folder)[0]
    if not reference:
        raise ExperimentError(f"{root}: none of {REFERENCES} has a results.csv to compare with")
    search = root / "short-setting-search"
    found = sorted(p.parent for p in search.glob("*/results.csv") if SIBLING not in p.parent.name)
    if not found:
        raise ExperimentError(f"{search}: no candidate setting has rows")
    out = []
    for folder in found:
        own = load_results(folder)[0]
        rows, ref, missing = list(own), list(reference), []
        siblings = {
            p.parent.name.split(SIBLING, 1)[1]: p.parent
            for p in search.glob(f"{folder.name}{SIBLING}*/results.csv")
        }
        for line, (label, authors) in ELSEWHERE.items():
            if line not in siblings:
                missing.append(label)
                continue
            rows += relabel(load_results(siblings.pop(line))[0], line)
            for f in authors:
                if (root / f / "results.csv").exists():
                    ref += relabel(load_results(root / f)[0], line)
        for sibling in siblings.values():  # more seeds, or other VAEs (a seed run twice raises)
            rows += load_results(sibling)[0]
        out.append(compare(rows, ref, folder.name, elsewhere=missing, own_rows=own))
    return out


def _dwp_minutes(s: Setting) -> float:
    """A setting's median DWP cell, in minutes (the cost every choice among settings compares)."""
    return s.cell_minutes.get("DWP", float("inf"))


def proxy(found: Sequence[Setting]) -> Setting | None:
    """The cheapest setting (median DWP cell) that keeps the released prior's sign against N(0, 1)
    from the same init on 5 of 5 seeds: what stands in for the authors' setting while none
    qualifies."""
    kept = [s for s in found if len(s.released_gain) >= 5 and all(d > 0 for d in s.released_gain.values())]  # fmt: skip
    return min(kept, key=_dwp_minutes, default=None)


def measured(found: Sequence[Setting]) -> list[Setting]:
    """The settings run far enough to stand for the course: every prior run, the released pair
    on 5 seeds (a screen of a few cells fails fewer criteria only because it measured less)."""
    return [s for s in found if len(s.released_gain) >= 5 and not s.missing]


def course_setting(found: Sequence[Setting]) -> Setting:
    """The setting the course trains (chapter 5's live cell): the cheapest that qualifies, else
    the closest to qualifying among those :func:`measured` (else all): one that can still
    qualify, then the fewest reasons not to, then the cheapest."""
    if good := [s for s in found if not s.reasons()]:
        return min(good, key=_dwp_minutes)
    pool = measured(found) or found
    return min(pool, key=lambda s: (s.settled, len(s.reasons()), _dwp_minutes(s)))


def proxy_sentence(found: Sequence[Setting]) -> str:
    """Which setting the course uses (:func:`course_setting`), and as what: a qualified short
    setting, or the proxy and the setting closest to qualifying."""
    course = course_setting(found)
    if not course.reasons():
        return f"**Chosen**: {course.name}, which qualifies."
    best = proxy(found)
    text = ["**No setting qualifies yet.**"]
    if best is None:
        text.append("None has kept the released prior above N(0, 1) from the same init on 5 of 5 seeds.")  # fmt: skip
    else:
        text.append(
            f"The cheapest that keeps the released prior above N(0, 1) from the same init on all "
            f"{len(best.released_gain)} of its seeds is **{best.name}** (a DWP cell's median wall "
            f"time in its folder: {_dwp_minutes(best):.1f} min): a proxy for that comparison alone."
        )
    text.append(
        f"The closest to qualifying is **{course.name}** ({course.verdict()}): the course's "
        "short setting, whose other differences are indications, each to be confirmed at the "
        "authors' setting."
    )
    waiting = [
        s for s in found if len(s.released_gain) >= 5 and not s.failures() and s is not course
    ]
    for s in sorted(waiting, key=_dwp_minutes):
        text.append(
            f"**{s.name}** fails no criterion on the rows it has; it waits for: "
            f"{'; '.join(s.pending())}."
        )
    return " ".join(text)


#: the prior whose harm the candidates shrink most (criterion c): our VAEs on the wide bank
FORGIVEN = "dwp:dwp (source-width-128-256)"
#: the large harms at the authors' setting that tell the candidates apart (criterion c)
HARMS = (FORGIVEN, "dwp@released:xavier")


def forgiven_sentence(found: Sequence[Setting], method: str = FORGIVEN) -> str:
    """Each setting's paired difference of ``method`` to N(0, 1) beside the authors' setting's,
    as the share it keeps, and which settings keep the half that criterion c asks for."""
    kept = {
        s.name: line
        for s in found
        for line in s.lines
        if line.method == method and line.short_diff is not None and line.authors_diff
    }
    if not kept:
        return ""
    share = {name: line.short_diff / line.authors_diff for name, line in kept.items()}
    parts = [
        f"{name}: {line.short_diff:+.1f} against {line.authors_diff:+.1f} points "
        f"({100 * share[name]:.0f}% of it, split seeds {line.seeds_text()})"
        for name, line in kept.items()
    ]
    enough = [name for name in kept if share[name] >= 0.5]
    verdict = (
        f"Half of it or more is kept by {', '.join(enough)}."
        if enough
        else "None keeps the half that criterion c asks for."
    )
    return (
        f"{method} against N(0, 1) from Xavier, each setting beside the authors': "
        + "; ".join(parts)
        + ". "
        + verdict
    )


def harms_markdown(found: Sequence[Setting], methods: Sequence[str] = HARMS) -> str:
    """:func:`forgiven_sentence` for each of ``methods`` (those some setting ran), a paragraph each."""
    return "\n\n".join(t for m in methods if (t := forgiven_sentence(found, m)))


def drift(s: Setting) -> tuple[list[int], float, float] | None:
    """Where the released gain goes at a short setting: its seeds paired with the authors'
    setting, and how far (points, mean) the released prior and N(0, 1) from its samples each
    end from their own accuracy there."""
    seeds = sorted(s.pair_authors)
    if not seeds:
        return None
    side = [100 * statistics.fmean(s.pair[k][i] - s.pair_authors[k][i] for k in seeds) for i in (0, 1)]  # fmt: skip
    return seeds, side[0], side[1]


def drift_markdown(found: Sequence[Setting]) -> str:
    """A table of :func:`drift` per setting and what it says: whether the gain a short run
    lacks is the released prior doing worse or N(0, 1) from the same init doing better."""
    rows = [(s.name, d) for s in found if (d := drift(s))]
    if not rows:
        return ""
    out = [
        "Each side of the released pair, short setting minus authors' setting on the same split "
        "seeds (points):",
        "",
        "| setting | seeds | released prior | N(0, 1) from its samples |",
        "|---|---|---|---|",
    ]
    out += [f"| {n} | {','.join(map(str, k))} | {r:+.1f} | {g:+.1f} |" for n, (k, r, g) in rows]
    released = max(abs(r) for _, (_, r, _) in rows)
    normal = max(g for _, (_, _, g) in rows)
    if normal > 2 * released:
        out += ["", f"Where a short setting's released gain is smaller, N(0, 1) from the same samples "
                f"ends higher (by up to {normal:.1f} points), not the released prior lower (it "
                f"ends within {released:.1f} points of the authors' setting everywhere): what a "
                "short run lacks of the gain at 10,000 steps is N(0, 1)'s further drift away from "
                "the released samples."]  # fmt: skip
    return "\n".join(out)


def _f(x: float | None, fmt: str = "+.1f") -> str:
    return format_or_blank(x, fmt)


def markdown(found: Sequence[Setting]) -> str:
    out = [
        "| setting | seeds | released prior - N(0, 1) from the same init (points, per seed) "
        "| >= 5 points | rank correlation | DWP / N(0, 1) cell (median min) | final KL / data "
        "term of the released DWP row (nats) | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in found:
        gains = ", ".join(f"{d:+.1f}" for d in s.released_gain.values())
        mins = " / ".join(f"{s.cell_minutes.get(k, float('nan')):.1f}" for k in ("DWP", "N(0, 1)"))
        out.append(
            f"| {s.name} | {len(s.seeds)} | {gains} | {s.gain_wins} of {len(s.released_gain)} "
            f"| {_f(s.rank_correlation, '.2f')} | {mins} | {_f(s.kl_end, '.3g')} / "
            f"{_f(s.nll_end, '.3g')} | {s.verdict()} |"
        )
    out += ["", proxy_sentence(found)]
    out += ["", text] if (text := harms_markdown(found)) else []
    if where := drift_markdown(found):
        out += ["", where]
    for s in found:
        out += [
            "",
            f"**{s.name}**: each prior against N(0, 1) from Xavier (points), paired by split seed "
            "with the authors' setting where both rows used the same kernel VAEs. "
            + s.bound_sentence(),
            "",
            "| prior:init | seeds paired | short | authors' | sign kept | half the size kept "
            "| seeds whose VAEs differ |",
            "|---|---|---|---|---|---|---|",
        ]
        for line in s.lines:
            if line.method == BASELINE:
                continue
            yes = {True: "yes", False: "**no**", None: ""}
            sign = yes[line.sign_kept]
            if line.within_noise and line.short_se is not None and line.authors_se is not None:
                sign = f"flips within noise (2 SE: {2 * line.short_se:.1f} / {2 * line.authors_se:.1f})"
            elif line.within_noise:
                sign = "flips on one seed (no SE)"
            out.append(
                f"| {line.method} | {line.seeds_text()} | {_f(line.short_diff)} "
                f"| {_f(line.authors_diff)} | {sign} | {yes[line.size_kept]} "
                f"| {','.join(map(str, line.unpaired))} |"
            )
    return "\n".join(out)


def update(note: Path, root: Path, check: bool = False) -> bool:
    """Write (or with ``check``, compare) the table between the note's markers; True when the
    note holds the table the runs give."""
    text = note.read_text()
    new = with_table(text, markdown(settings(root)) + "\n", str(note), BEGIN, END)
    if check:
        return new == text
    if new != text:
        note.write_text(new)
    return True
