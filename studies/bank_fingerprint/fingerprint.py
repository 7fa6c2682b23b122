"""A bank's fingerprint, its distance to the released bank, and whether that distance ranks the
priors trained on the banks the way their accuracy does (``results/bank-fingerprint/``).

**Fingerprint.** Per layer (conv1 7x7, conv2 5x5), six numbers of the committed ``stats.csv``
files of :mod:`studies.bank_stats` (:data:`FEATURES`): the live (kept) fraction, the log median
and log q90 slice norm, the DC share, the neighbour correlation and the low-frequency share.
The released bank's rows have no kept fraction (their pruning is unpublished): its live
fraction is :func:`studies.sparse_regime.figure.released_reference`'s (from the cached release
files), and the Xavier rows' is the share of the same Xavier slices at or above the same
thresholds (:func:`xavier_live`).

**Distance.** Per feature, ``|ours - released| / |Xavier - released|``: the "Xavier init" rows
are white noise at the target net's init scale, so a term of 1 is as far from the released bank
as noise is. The distance is the mean of the 12 terms (6 features x 2 layers); a layer's
distance the mean of its 6.

**Validation.** Each bank of :data:`VALIDATION` pairs with its results folder's ``dwp:dwp`` line
of ``studies.own_prior``'s table (the long VAE recipe at the authors' setting): its paired
difference to N(0, 1) from Xavier, against the distance, as a Spearman rank correlation.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dwp_lib.experiment.names import ExperimentError
from dwp_lib.nets import LAYERS
from studies.short_setting.validation import ranks, spearman

RELEASED = "released"
XAVIER = "Xavier init"
#: the committed bank statistics read, in this order (``python -m studies.bank_stats``)
STATS_FOLDERS = (
    "bank-stats",
    "bank-stats-source-factors",
    "bank-stats-wide-sources",
    "bank-stats-sparse-sample",
)
#: two files' rows of one name must agree to this relative tolerance (float noise)
REL_TOL = 1e-6
#: a row given another name: a different bank under a name another file uses. The book bank of
#: bank-stats-source-factors was rebuilt there with one thread on an AVX-512 host (sha256
#: 1b3c1f06c4f2..., 227 7x7 slices against 228): other bits, other statistics.
RENAMED: Mapping[tuple[str, str], str] = {
    ("bank-stats-source-factors", "ours (book)"): "ours (book), AVX-512 rebuild",
}
#: bank (its name in the stats files) -> the results folder whose ``dwp:dwp`` line in
#: studies.own_prior's table is a prior trained with the long VAE recipe (the authors' steps) on
#: that bank, at the authors' setting. :func:`bank_relation` checks each pair against the bank
#: sha256s in the folders' provenance.json: the very bank, or a rebuild of the same recipe.
VALIDATION: Mapping[str, str] = {
    RELEASED: "released-bank-vaes-long-prior",
    "ours (book)": "book-bank-vaes-long-prior",
    "ours (source-epochs-20)": "source-epochs-20",
    "ours (source-width-64-128)": "source-width-64-128",
    "ours (source-width-128-256)": "source-width-128-256",
    "ours (source-nets-32)": "source-nets-32",
    "ours (source-width-256-512-nets-2)": "source-width-256-512-nets-2",
    "ours (source-width-256-512)": "source-width-256-512",
}
METHOD = "dwp:dwp"


@dataclass(frozen=True)
class Feature:
    """One number of a layer's fingerprint: ``column`` of stats.csv, or its natural log."""

    key: str
    label: str
    column: str
    log: bool = False

    def value(self, row: Mapping[str, float]) -> float:
        v = row[self.column]
        return math.log(v) if self.log else v


FEATURES = (
    Feature("live", "live fraction", "kept_fraction"),
    Feature("log_median_norm", "log median norm", "norm_median", log=True),
    Feature("log_q90_norm", "log q90 norm", "norm_q90", log=True),
    Feature("dc_share", "DC share", "dc_share"),
    Feature("neighbour_corr", "neighbour corr.", "neighbour_corr"),
    Feature("low_freq_share", "low-freq. share", "low_freq_share"),
)
NUMBERS = ("norm_median", "norm_q90", "dc_share", "neighbour_corr", "low_freq_share")


@dataclass
class Bank:
    """One bank's stats rows ``{layer: {column: value}}``, the stats folders that hold it, and
    per folder its sha256 and source config (ours only: from that folder's provenance.json)."""

    name: str
    rows: dict[str, dict] = field(default_factory=dict)
    folders: list[str] = field(default_factory=list)
    sha256: dict[str, str] = field(default_factory=dict)
    source: dict | None = None


def _number(text: str) -> float | None:
    return None if text == "" else float(text)


def _agree(a: Mapping, b: Mapping) -> bool:
    """Two stats rows of one layer agree: the same slice count and kept fraction presence, every
    number within :data:`REL_TOL`."""
    cols = (*NUMBERS, "kept_fraction")
    if a["slices"] != b["slices"] or any((a[c] is None) != (b[c] is None) for c in cols):
        return False
    return all(a[c] is None or math.isclose(a[c], b[c], rel_tol=REL_TOL) for c in cols)


def read_banks(
    root: Path,
    folders: Sequence[str] = STATS_FOLDERS,
    renamed: Mapping[tuple[str, str], str] = RENAMED,
) -> dict[str, Bank]:
    """Every bank of the folders' ``stats.csv``, once by name (first seen first); two files
    that disagree on a bank of one name beyond float noise are refused."""
    banks: dict[str, Bank] = {}
    read: set[tuple[str, str, str]] = set()  # (folder, bank, layer) rows seen
    for folder in folders:
        path = root / folder / "stats.csv"
        if not path.is_file():
            raise ExperimentError(f"{path} does not exist: the bank statistics this study reads")
        prov_path = root / folder / "provenance.json"
        ours = json.loads(prov_path.read_text()).get("ours", {}) if prov_path.is_file() else {}
        with open(path, newline="") as f:
            for raw in csv.DictReader(f):
                name = renamed.get((folder, raw["bank"]), raw["bank"])
                row = {c: _number(raw[c]) for c in (*NUMBERS, "kept_fraction")}
                row["slices"] = int(raw["slices"])
                bank = banks.setdefault(name, Bank(name))
                seen = bank.rows.get(raw["layer"])
                if (folder, name, raw["layer"]) in read:
                    raise ExperimentError(f"{path}: two rows of {name}, {raw['layer']}")
                read.add((folder, name, raw["layer"]))
                if seen is not None and not _agree(seen, row):
                    raise ExperimentError(
                        f"{path}: its {raw['layer']} row of {name!r} is not the one of "
                        f"{', '.join(bank.folders)} ({row['slices']} slices against "
                        f"{seen['slices']}, or a number beyond float noise): two different "
                        "banks under one name; give one of them another name in "
                        "bank_fingerprint.RENAMED"
                    )
                bank.rows.setdefault(raw["layer"], row)
                if folder not in bank.folders:
                    bank.folders.append(folder)
                if raw["bank"] in ours:
                    bank.sha256[folder] = ours[raw["bank"]]["bank_sha256"]
                    bank.source = bank.source or ours[raw["bank"]]["source"]
    for name in (RELEASED, XAVIER):
        if name not in banks:
            raise ExperimentError(f"no {name!r} rows in {', '.join(folders)}: nothing to measure")
    for bank in banks.values():
        if set(bank.rows) != set(LAYERS):
            raise ExperimentError(f"{bank.name}: rows of {sorted(bank.rows)}, not {list(LAYERS)}")
    return banks


def thresholds() -> tuple[float, float]:
    """The pruning norms the released live fraction is measured at (``SourceNetsConfig.paper``)."""
    from dwp_lib.source_nets import SourceNetsConfig

    return SourceNetsConfig.paper().prune_norms


def xavier_live(bank: Bank, seed: int = 0, slices: int = 4096) -> dict[str, float]:
    """Per layer, the share of the Xavier reference's slices (seed and count of the stats files'
    provenance) at or above :func:`thresholds`; first checks that they are the very slices of
    the ``Xavier init`` rows (their median norm)."""
    from studies.bank_stats.bank_stats import xavier_reference

    out = {}
    for (layer, k), threshold in zip(LAYERS.items(), thresholds(), strict=True):
        norms = xavier_reference(layer, slices, seed).reshape(-1, k * k).double().norm(dim=1)
        median = float(norms.quantile(0.5))
        if not math.isclose(median, bank.rows[layer]["norm_median"], rel_tol=REL_TOL):
            raise ExperimentError(
                f"the Xavier slices of seed {seed} have the median norm {median} in {layer}, "
                f"the stats files' {bank.rows[layer]['norm_median']}: not the same reference"
            )
        out[layer] = float((norms >= threshold).double().mean())
    return out


def check_thresholds(banks: Mapping[str, Bank]) -> None:
    """Every bank of ours was cut at the thresholds the reference live fractions use."""
    for bank in banks.values():
        cut = tuple((bank.source or {}).get("prune_norms", thresholds()))
        if cut != tuple(thresholds()):
            raise ExperimentError(
                f"{bank.name} was pruned at {cut}, the released live fraction is measured at "
                f"{thresholds()}: its live fraction is not comparable"
            )


def with_live(banks: Mapping[str, Bank], live: Mapping[str, Mapping[str, float]]) -> None:
    """Fill the kept fraction of the banks that have none (released, Xavier) from ``live``."""
    for name, per_layer in live.items():
        for layer, value in per_layer.items():
            banks[name].rows[layer]["kept_fraction"] = value
    missing = [
        b.name for b in banks.values() if any(r["kept_fraction"] is None for r in b.rows.values())
    ]
    if missing:
        raise ExperimentError(f"no live (kept) fraction for {', '.join(missing)}")


def fingerprint(bank: Bank) -> dict[str, dict[str, float]]:
    """``{layer: {feature: value}}`` of :data:`FEATURES`."""
    return {layer: {f.key: f.value(bank.rows[layer]) for f in FEATURES} for layer in LAYERS}


def units(
    mine: Mapping[str, Mapping[str, float]],
    released: Mapping[str, Mapping[str, float]],
    noise: Mapping[str, Mapping[str, float]],
) -> dict[str, dict[str, float]]:
    """Per layer and feature, ``|mine - released| / |noise - released|`` (fingerprints)."""
    out: dict[str, dict[str, float]] = {}
    for layer, feats in released.items():
        out[layer] = {}
        for key, r in feats.items():
            scale = abs(noise[layer][key] - r)
            if scale == 0:
                raise ExperimentError(f"{layer} {key}: noise is the released value, no unit")
            out[layer][key] = abs(mine[layer][key] - r) / scale
    return out


def distance(u: Mapping[str, Mapping[str, float]], leave_out: Sequence[str] = ()) -> float:
    """The mean of the terms of :func:`units` (all layers), without the features ``leave_out``."""
    terms = [v for feats in u.values() for k, v in feats.items() if k not in leave_out]
    return sum(terms) / len(terms)


def permutation_p(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Exact two-sided p of Spearman's rho under no association: the share of the n! orders of
    ``ys``'s ranks whose |rho| is at least the observed one (None below 3 or above 9 points).
    Rho is the Pearson correlation of the ranks, so each order costs one dot product."""
    import numpy as np

    if not 3 <= len(xs) <= 9:
        return None
    rx, ry = np.array(ranks(xs)), np.array(ranks(ys))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    scale = math.sqrt(float(rx @ rx) * float(ry @ ry))
    if scale == 0:
        return None
    orders = np.array(list(itertools.permutations(ry)))
    rho = np.abs(orders @ rx) / scale
    return float(np.mean(rho >= abs(float(ry @ rx)) / scale - 1e-12))


# ------------------------------------------------------------------------------------------------
# Validation: the banks' distances against their priors' accuracy at the authors' setting
# ------------------------------------------------------------------------------------------------


def bank_relation(root: Path, bank: Bank, folder: str) -> str:
    """What the stats rows of ``bank`` are to the bank ``folder``'s prior was trained on: the
    released files, the very bank (same sha256), or a rebuild of its recipe (same source
    config, other bits); anything else is refused (the mapping would be wrong)."""
    path = root / folder / "provenance.json"
    if not path.is_file():
        raise ExperimentError(f"{path} does not exist: the mapping names a folder with no run")
    prov = json.loads(path.read_text())
    used = {layer: prov["config"]["vae"][layer]["bank"] for layer in LAYERS}
    if bank.name == RELEASED:
        if set(used.values()) != {"released"}:
            raise ExperimentError(f"{folder}: its kernel VAEs were trained on {used}, not released")
        return "the released files (pinned by sha256)"
    if set(used.values()) != {"pipeline"}:
        raise ExperimentError(f"{folder}: its kernel VAEs were trained on {used}, not {bank.name}")
    sha = prov["bank"]["sha256"]
    where = [f for f, s in bank.sha256.items() if s == sha]
    if where:
        return f"the very bank ({sha[:12]}, in {', '.join(where)})"
    from dwp_lib.source_nets import SourceNetsConfig

    theirs = SourceNetsConfig(**prov["config"]["source"]).bank_dict()
    if bank.source is None or SourceNetsConfig(**bank.source).bank_dict() != theirs:
        raise ExperimentError(
            f"{folder}: its bank ({sha[:12]}) is neither {bank.name} "
            f"({', '.join(s[:12] for s in bank.sha256.values())}) nor built by its recipe: "
            "fix bank_fingerprint.VALIDATION"
        )
    shas = ", ".join(s[:12] for s in dict.fromkeys(bank.sha256.values()))
    return f"a rebuild of the recipe (run's bank {sha[:12]}, stats' {shas})"


def validation(root: Path, banks: Mapping[str, Bank]) -> dict[str, dict]:
    """Per bank of :data:`VALIDATION`: its folder, :func:`bank_relation`, and the own_prior
    line's mean paired difference to N(0, 1) from Xavier (points) and split seeds."""
    from studies.own_prior.own_prior import results_root, table_rows

    lines = {(r["folder"], r["method"]): r for r in table_rows(results_root(root))}
    out = {}
    for name, folder in VALIDATION.items():
        if name not in banks:
            raise ExperimentError(f"VALIDATION names {name!r}, which no stats file holds")
        line = lines.get((folder, METHOD))
        if line is None:
            raise ExperimentError(f"own_prior's table has no {METHOD} line in {folder}")
        diff = line["vs_normal"]
        out[name] = {
            "folder": folder,
            "relation": bank_relation(root, banks[name], folder),
            "vs_normal": None if diff is None else 100 * diff,
            "seeds": line["normal_seeds"],
        }
    return out


def rank_correlation(points: Sequence[tuple[float, float]]) -> dict:
    """Spearman's rho of ``(distance, difference)`` pairs, their count and :func:`permutation_p`."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return {"rho": spearman(xs, ys), "n": len(points), "p": permutation_p(xs, ys)}


# ------------------------------------------------------------------------------------------------
# The whole study, from the committed files
# ------------------------------------------------------------------------------------------------


@dataclass
class Study:
    """Everything the outputs show; banks in order of distance (the released bank first)."""

    banks: dict[str, Bank]
    prints: dict[str, dict[str, dict[str, float]]]  # bank -> layer -> feature -> value
    units: dict[str, dict[str, dict[str, float]]]  # the same in units of noise's distance
    distances: dict[str, dict[str, float]]  # bank -> {"conv1", "conv2", "all"}
    validated: dict[str, dict]  # bank -> :func:`validation`'s line
    correlation: dict  # :func:`rank_correlation` over every validated bank
    checks: dict[str, dict]  # the same without the released bank / without the live fraction
    terms: dict[str, dict[str, dict]]  # layer -> feature -> the same for that term alone
    live: dict[str, dict[str, float]]  # the released and Xavier live fractions
    live_from: str  # where the released live fraction came from


def released_live() -> dict[str, float] | None:
    """The released banks' live fraction per layer, from the cached release files (None when
    they are not in the cache: nothing is downloaded)."""
    from studies.sparse_regime.figure import released_reference

    ref = released_reference()
    return None if ref is None else {layer: v["live_fraction"] for layer, v in ref.items()}


RELEASED_FROM = (
    "studies.sparse_regime.figure.released_reference (the cached release files: live slices "
    "over 100 x FConv(256, 512)'s, the 5x5 test file scaled by its share)"
)


def compute(
    root: Path, released: Mapping[str, float] | None, released_from: str = RELEASED_FROM
) -> Study:
    """The study from the committed files under ``root``; ``released``: the released live
    fractions (:func:`released_live`; None when the release is not in the cache: refused)."""
    banks = read_banks(root)
    check_thresholds(banks)
    prov = json.loads((root / STATS_FOLDERS[0] / "provenance.json").read_text())
    count = prov.get("xavier_reference", {}).get("conv1", {}).get("slices", 4096)
    xav = xavier_live(banks[XAVIER], prov.get("seed", 0), count)
    if released is None:
        raise ExperimentError(
            "the released banks are not in the cache, so their live fraction cannot be "
            "measured: run `python -m dwp_lib release` (or place the files it names)"
        )
    live = {RELEASED: dict(released), XAVIER: xav}
    with_live(banks, live)
    prints = {name: fingerprint(b) for name, b in banks.items()}
    u = {name: units(fp, prints[RELEASED], prints[XAVIER]) for name, fp in prints.items()}
    dist = {
        name: {**{layer: distance({layer: v[layer]}) for layer in LAYERS}, "all": distance(v)}
        for name, v in u.items()
    }
    order = sorted(banks, key=lambda n: (dist[n]["all"], n))
    validated = validation(root, banks)
    scored = [n for n in order if n in validated and validated[n]["vs_normal"] is not None]

    def corr(names: Sequence[str], leave_out: Sequence[str] = ()) -> dict:
        pts = [(distance(u[n], leave_out), validated[n]["vs_normal"]) for n in names]
        return rank_correlation(pts)

    checks = {
        "without the released bank": corr([n for n in scored if n != RELEASED]),
        "without the live fraction": corr(scored, ("live",)),
    }
    terms = {
        layer: {
            f.key: rank_correlation(
                [(u[n][layer][f.key], validated[n]["vs_normal"]) for n in scored]
            )
            for f in FEATURES
        }
        for layer in LAYERS
    }
    return Study(
        {n: banks[n] for n in order},
        {n: prints[n] for n in order},
        {n: u[n] for n in order},
        {n: dist[n] for n in order},
        {n: validated[n] for n in order if n in validated},
        corr(scored),
        checks,
        terms,
        live,
        released_from,
    )
