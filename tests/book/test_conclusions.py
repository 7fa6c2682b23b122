"""The verdicts on the talk's claims (dwp_lib.conclusions): computed from results files, with a
rule that says "too few seeds" rather than guess."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from dwp_lib import conclusions as c
from dwp_lib.experiment import RESULT_COLUMNS


@pytest.mark.parametrize(
    ("diffs", "verdict"),
    [
        ([0.05, 0.06, 0.04], c.HOLDS),
        ([-0.05, -0.06, -0.04], c.FAILS),
        ([0.05, -0.05, 0.01], c.UNCLEAR),
        ([0.05, 0.06], c.FEW),
        ([], c.FEW),
        ([0.02, 0.02, 0.02], c.HOLDS),  # no spread at all
    ],
)
def test_paired_verdict(diffs, verdict):
    assert c.paired_verdict(diffs) == verdict


ROOT = Path(__file__).resolve().parents[2]


def _write(path, rows, columns):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def test_glance_reads_each_claim_from_its_run(tmp_path):
    grid = [
        {"prior": p, "init": i, "n": 50, "seed": s, "acc_ensemble": a}
        for s in range(4)
        for p, i, a in (("dwp", "dwp", 0.70 + 0.01 * s), ("normal", "xavier", 0.60 + 0.012 * s))
    ]
    _write(tmp_path / "book-cpu" / "results.csv", grid, RESULT_COLUMNS)
    curves = [
        {"init": i, "seed": s, "step": step, "test_acc": acc}
        for s in range(2)
        for step in (0, 10, 20)
        for i, acc in (("dwp", 0.5 + step / 100), ("default", 0.4 + step / 100))
    ]
    _write(tmp_path / "init-book" / "init_curves.csv", curves, ["init", "seed", "step", "test_acc"])
    layer = {"vae_bytes": 2000, "bank_bytes": 1000, "seconds_dwp": 0.01, "seconds_filters": 0.001}
    costs = {"layers": {"conv1": layer, "conv2": layer}}
    (tmp_path / "init-book" / "init_costs.json").write_text(json.dumps(costs))
    scores = [
        {"prior": "ours", "layer": "conv1", "kind": k, "log_p_iw": v}
        for k, v in (("ours held-out", 40.0), ("noise at our norm", 10.0), ("Xavier", 60.0))
    ]
    _write(tmp_path / "prior-scores" / "scores.csv", scores, ["prior", "layer", "kind", "log_p_iw"])
    assert c.glance(tmp_path) == []  # no claims.toml: nothing says which run tests which claim
    (tmp_path / "claims.toml").write_text((ROOT / "results" / "claims.toml").read_text())
    verdicts = c.glance(tmp_path)
    claims = c.by_claim(verdicts)
    assert list(claims) == [
        "VAE samples look like real kernels",
        "dwp init beats the default init",
        "less memory than stored filters",
        "less computation than stored filters",
        "DWP beats N(0, 1) with few labels",
    ]
    (density,) = claims["VAE samples look like real kernels"]
    assert density.verdict == c.HOLDS and density.evidence.startswith("40.0 vs 10.0")
    early, end = claims["dwp init beats the default init"]
    assert early.verdict == end.verdict == c.FEW and "after 10 steps" in early.test
    assert "+10.0 ± 0.0 points (2 of 2 seeds ahead)" in end.evidence
    book, paper = claims["less memory than stored filters"]
    assert book.verdict == c.FAILS and paper.verdict == c.HOLDS  # 4 kB of VAE > 2 kB of bank
    (prior,) = claims["DWP beats N(0, 1) with few labels"]
    assert prior.verdict == c.HOLDS and "4 of 4 seeds ahead" in prior.evidence
    table = c.markdown_table(verdicts)
    assert table.count("\n") == len(verdicts) + 1 and "**fails**" in table
    box = c.glance_markdown(verdicts)
    assert "our prior, book preset: **holds** (+9.7 points, 4 seeds)" in box


def test_no_runs_give_no_verdicts(tmp_path):
    assert c.glance(tmp_path) == []
    assert "No committed runs" in c.glance_markdown([])
