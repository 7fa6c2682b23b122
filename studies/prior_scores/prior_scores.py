"""How good is each prior as a density over kernels? The released prior beside ours, scored.

For every layer, slices of several kinds are scored under each prior's kernel VAE, in nats per
slice: the ELBO (the auxiliary bound the Bayesian CNN's penalty uses, book/04) and the
importance-weighted estimate of log p(w) (:func:`dwp_lib.implicit_prior.score_slices`). Kinds:

- ``released held-out``: the authors' held-out slices (their test banks);
- ``ours held-out``: the held-out split of this pipeline's kernel bank;
- ``Xavier``: slices as a Xavier-normal init of the target network FConv(32, 128) draws them;
- ``noise at <bank> norm``: Gaussian noise, each slice rescaled to that bank's median norm, so a
  prior that only knows the scale of kernels cannot tell it from real ones.

``python -m studies.prior_scores --preset book --out results/prior-scores`` writes
``scores.csv``, ``scores.md``, ``figures/scores.png``, ``figures/samples.png`` and
``provenance.json``. The released files are the authors' (GPL-3.0, :mod:`dwp_lib.release`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import torch

from dwp_lib import artifacts
from dwp_lib.experiment.names import ExperimentError
from dwp_lib.implicit_prior import ImplicitPriorConfig, gaussian_slices, score_slices, xavier_slices
from dwp_lib.kernel_vae import KernelVAE
from studies import command_line

COLUMNS = ("prior", "layer", "kind", "slices", "median_norm", "elbo", "log_p_iw", "iw_samples")
TARGET = {"conv1": (1, 32, 7), "conv2": (32, 128, 5)}  # c_in, c_out, k of FConv(32, 128)


def subsample(w: torch.Tensor, m: int | None, seed: int = 0) -> torch.Tensor:
    """At most ``m`` slices of ``w``, drawn without replacement (seeded)."""
    if m is None or len(w) <= m:
        return w
    g = torch.Generator().manual_seed(seed)
    return w[torch.randperm(len(w), generator=g)[:m]]


def noise_at_norm(n: int, k: int, norm: float, seed: int = 0) -> torch.Tensor:
    """n Gaussian slices, each rescaled to Frobenius norm ``norm``."""
    w = gaussian_slices(n, k, 1.0, seed)
    return w * (norm / w.flatten(1).norm(dim=1).clamp_min(1e-12))[:, None, None]


def slice_sets(
    ours: Mapping[str, torch.Tensor],
    released: Mapping[str, torch.Tensor],
    max_slices: int | None,
    seed: int = 0,
) -> dict[str, dict[str, torch.Tensor]]:
    """``{layer: {kind: slices}}`` from the two held-out banks (``{layer: (N, k, k)}``)."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for layer, (c_in, c_out, k) in TARGET.items():
        a = subsample(released[layer].float(), max_slices, seed)
        b = subsample(ours[layer].float(), max_slices, seed)
        m = max(len(a), len(b))
        out[layer] = {
            "released held-out": a,
            "ours held-out": b,
            "Xavier": xavier_slices(m, k, c_in, c_out, seed),
            "noise at released norm": noise_at_norm(m, k, _median_norm(a), seed + 1),
            "noise at our norm": noise_at_norm(m, k, _median_norm(b), seed + 2),
        }
    return out


def _median_norm(w: torch.Tensor) -> float:
    return w.flatten(1).norm(dim=1).median().item()


def score_priors(
    priors: Mapping[str, Mapping[str, KernelVAE]],
    sets: Mapping[str, Mapping[str, torch.Tensor]],
    cfg: ImplicitPriorConfig,
) -> list[dict]:
    """One row per (prior, layer, kind): mean ELBO and IW log p(w) per slice, in nats. A kind
    without slices, or a score that is not a finite number, raises :class:`ExperimentError`
    (its mean would be NaN, a number no table should print)."""
    rows = []
    for name, vaes in priors.items():
        for layer, kinds in sets.items():
            for kind, w in kinds.items():
                if len(w) == 0:
                    raise ExperimentError(
                        f"{layer}, {kind}: no slices to score (a mean over none is NaN); "
                        "give --max-slices >= 1 and banks with held-out slices"
                    )
                s = score_slices(vaes[layer], w, cfg, kind)
                elbo, log_p = s.bound.mean().item(), s.log_p_iw.mean().item()
                if not (math.isfinite(elbo) and math.isfinite(log_p)):
                    raise ExperimentError(
                        f"prior {name!r}, {layer}, {kind}: the scores of {len(w)} slices are "
                        f"not finite (ELBO {elbo}, IW log p(w) {log_p}); check that prior's "
                        "kernel VAE (a damaged or diverged file) before tabulating it"
                    )
                rows.append(
                    {
                        "prior": name,
                        "layer": layer,
                        "kind": kind,
                        "slices": len(w),
                        "median_norm": round(_median_norm(w), 4),
                        "elbo": round(elbo, 3),
                        "log_p_iw": round(log_p, 3),
                        "iw_samples": cfg.iw_samples,
                    }
                )
    return rows


def scores_markdown(rows: list[dict]) -> str:
    """A Markdown table: one line per (layer, kind), ELBO / IW log p(w) under each prior."""
    priors = list(dict.fromkeys(r["prior"] for r in rows))
    head = "| layer | slices | median norm | " + " | ".join(
        f"{p}: ELBO | {p}: log p(w)" for p in priors
    )
    lines = [head + " |", "|" + "---|" * (3 + 2 * len(priors))]
    keys = list(dict.fromkeys((r["layer"], r["kind"]) for r in rows))
    by = {(r["prior"], r["layer"], r["kind"]): r for r in rows}
    for layer, kind in keys:
        first = by[(priors[0], layer, kind)]
        cells = [f"{layer} {kind}", f"{first['slices']:,}", f"{first['median_norm']:.3f}"]
        for p in priors:
            r = by.get((p, layer, kind))
            cells += ["", ""] if r is None else [f"{r['elbo']:.1f}", f"{r['log_p_iw']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cli(args: argparse.Namespace) -> int:
    """``python -m studies.prior_scores``: score the released prior and ours (see the module)."""
    from dwp_lib import release
    from dwp_lib.experiment import (
        Experiment,
        ExperimentConfig,
        ExperimentError,
        append_row,
        config_from,
    )

    from .plots import plot_prior_samples, plot_prior_scores

    for flag, value in (("--iw-samples", args.iw_samples), ("--max-slices", args.max_slices)):
        if value is not None and value < 1:
            raise ExperimentError(f"{flag} {value}: give at least 1 (a score of none is NaN)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = ExperimentConfig.preset(args.preset)
    icfg = ImplicitPriorConfig.preset(args.preset, iw_samples=args.iw_samples, seed=args.seed)
    if cfg.num_threads is None and args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    try:
        exp = Experiment(cfg, None, verbose=True)  # its stages' cache: bank and kernel VAEs
        bank, ours = exp.kernel_bank(), exp.kernel_vaes()
        theirs = exp.released_vaes()
        rbank = release.load_released_bank()
        extra = {}
        for path in getattr(args, "also", None) or []:
            other = config_from(None, path)
            extra[other.name] = Experiment(other, None, verbose=True)
            extra[other.name].kernel_vaes()
    except (ExperimentError, release.ReleaseUnavailableError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    ours_test = {layer: bank.slices(layer, "test") for layer in TARGET}
    rel_test = {layer: rbank[layer]["test"] for layer in TARGET}
    # a prior fitted to part of a released file is scored, like the others, on the part it
    # did not see (release.released_bank_splits: the 5x5 file's seeded 20%)
    for layer in TARGET:
        if any(e.cfg.vae.layers()[layer].bank == "released" for e in extra.values()):
            rel_test[layer] = release.released_bank_splits()[layer]["test"]
    sets = slice_sets(ours_test, rel_test, args.max_slices, args.seed)
    priors = {"released": theirs, "ours": ours}
    priors.update({name: e.kernel_vaes() for name, e in extra.items()})
    rows = score_priors(priors, sets, icfg)
    csv_path = out / "scores.csv"
    with artifacts.atomic_path(csv_path) as tmp:
        for r in rows:
            append_row(tmp, r, COLUMNS)
    table = scores_markdown(rows)
    artifacts.atomic_write_bytes(out / "scores.md", (table + "\n").encode())
    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    import matplotlib.pyplot as plt

    for name, fig in (
        ("scores", plot_prior_scores(rows)),
        (
            "samples",
            plot_prior_samples(
                priors,
                {
                    "ours": ours_test,
                    "released": rel_test,
                    **{
                        name: {layer: e.vae_slices(layer, "test") for layer in TARGET}
                        for name, e in extra.items()
                    },
                },
            ),
        ),
    ):
        with artifacts.atomic_path(figures / f"{name}.png") as tmp:
            fig.savefig(tmp, dpi=120, format="png")
        plt.close(fig)
    prov = {
        "command": command_line("studies.prior_scores"),
        "preset": args.preset,
        "scoring": dataclasses.asdict(icfg),
        "max_slices": args.max_slices,
        "seed": args.seed,
        "ours": {
            "bank_sha256": exp.bank_sha(),
            "bank_data": bank.provenance.get("data", {}),
            "kernel_vaes": exp.vae_records,
            "config": {k: v for k, v in cfg.to_dict().items() if k in ("source", "vae")},
        },
        "released": {"layers": exp.released_records, **release.provenance()},
        "also": {
            name: {
                "config_file": path,
                "kernel_vaes": e.vae_records,
                "config": {k: v for k, v in e.cfg.to_dict().items() if k in ("source", "vae")},
            }
            for (name, e), path in zip(
                extra.items(), getattr(args, "also", None) or [], strict=True
            )
        },
        "released_held_out": {
            layer: "the authors' test file"
            if rel_test[layer] is rbank[layer]["test"]
            else f"the seeded {release.CONV2_HELD_OUT:.0%} of the authors' test file that no prior "
            "of ours was fitted to"
            for layer in TARGET
        },
        "seconds": time.perf_counter() - t0,
        "threads": torch.get_num_threads(),
        "environment": artifacts.environment_record(),
    }
    artifacts.atomic_write_json(out / "provenance.json", prov)
    print(table)
    print(release.AUTHORS_RELEASE.notice)
    print(f"Scores: {csv_path}")
    return 0
