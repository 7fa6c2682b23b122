"""The prior-scores study's command line on a fake release and a tiny world."""

from __future__ import annotations

import json

import pytest


def test_score_priors_cli_scores_both_priors_on_every_kind(fake_release, fake_world, tmp_path):

    from dwp_lib.experiment import read_rows
    from studies.prior_scores.__main__ import main as cli_main

    out = tmp_path / "scores"
    args = ["--preset", "tiny", "--out", str(out), "--iw-samples", "4"]
    assert cli_main([*args, "--max-slices", "20"]) == 0
    rows = read_rows(out / "scores.csv")
    kinds = {"released held-out", "ours held-out", "Xavier", "noise at released norm",
             "noise at our norm"}  # fmt: skip
    assert {(r["prior"], r["layer"]) for r in rows} == {
        (p, l) for p in ("released", "ours") for l in ("conv1", "conv2")
    }
    assert {r["kind"] for r in rows} == kinds and len(rows) == 2 * 2 * len(kinds)
    assert all(r["slices"] <= 20 and r["log_p_iw"] is not None for r in rows)
    # the rescaled noise has the bank's median norm
    by = {(r["prior"], r["layer"], r["kind"]): r for r in rows}
    for layer in ("conv1", "conv2"):
        a = by[("ours", layer, "released held-out")]["median_norm"]
        assert by[("ours", layer, "noise at released norm")]["median_norm"] == pytest.approx(
            a, rel=1e-3
        )
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["released"]["licence"] == "GPL-3.0" and prov["ours"]["kernel_vaes"]
    assert (out / "figures" / "scores.png").stat().st_size > 0
    assert (out / "figures" / "samples.png").stat().st_size > 0
    assert "released: ELBO" in (out / "scores.md").read_text()


def test_score_priors_scores_a_prior_of_another_config(fake_release, fake_world, tmp_path):

    from dwp_lib.experiment import read_rows
    from studies.prior_scores.__main__ import main as cli_main

    config = tmp_path / "theirs-bank.toml"
    config.write_text('preset = "tiny"\nname = "on-their-bank"\n[vae.conv2]\nbank = "released"\n')
    out = tmp_path / "scores"
    args = ["--preset", "tiny", "--out", str(out), "--iw-samples", "4"]
    assert cli_main([*args, "--max-slices", "20", "--also", str(config)]) == 0
    rows = read_rows(out / "scores.csv")
    assert {r["prior"] for r in rows} == {"released", "ours", "on-their-bank"}
    held = {r["slices"] for r in rows if r["layer"] == "conv2" and r["kind"] == "released held-out"}
    assert held == {6}  # the 20% of the 5x5 file that no prior of ours was fitted to
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["also"]["on-their-bank"]["kernel_vaes"]["conv2"]["bank"] == "released"
    assert "20%" in prov["released_held_out"]["conv2"]
    assert prov["released_held_out"]["conv1"] == "the authors' test file"
