"""Tests of the ablation study: cells, shared runs, the table, and one tiny end-to-end run."""

from __future__ import annotations

import csv
import json

import pytest

from dwp_lib.experiment import ExperimentError
from studies.ablation import ablation, plots
from studies.ablation.__main__ import main
from studies.ablation.ablation import BASELINE, DWP, Cell, cell_config, method_key

# A cell small enough for the test suite: two methods, two seeds, a few steps.
FAST = ("bayes.steps=3", "bayes.eval_samples=2", "grid.test_images=60")
FAST += ("vae.conv1.train.steps=5", "vae.conv2.train.steps=5")
FAST += ("vae.conv1.eval_samples=2", "vae.conv2.eval_samples=2")


def test_cell_config_applies_base_cell_and_extra_overrides_in_order():
    cell = Cell("x", "1 training length", "long", ("bayes.steps=77",), seeds=(3, 4))
    cfg = cell_config("book", cell, extra=["bayes.lr=0.01"])
    assert cfg.bayes.steps == 77  # the cell's override wins over the base's 300
    assert cfg.bayes.channels == (16, 64)  # from BASE_OVERRIDES["book"]
    assert cfg.bayes.lr == 0.01
    assert cfg.grid.split_seeds == (3, 4)
    assert cfg.grid.methods == (BASELINE, DWP)
    assert cfg.init.enabled is False
    assert cfg.name == "ablation-x"


def test_bad_override_and_bad_method_raise():
    with pytest.raises(ExperimentError, match="stepz"):
        cell_config("tiny", Cell("x", "f", "l", ("bayes.stepz=3",)))
    with pytest.raises(ValueError, match="unknown prior"):
        Cell("x", "f", "l", methods=("gauss:xavier",))


def test_method_key_shares_only_runs_that_cannot_differ():
    base = cell_config("tiny", Cell("a", "f", "l"))
    vae = cell_config("tiny", Cell("b", "f", "l", ("vae.conv2.arch.latent_dim=8",)))
    steps = cell_config("tiny", Cell("c", "f", "l", ("bayes.steps=9",)))
    rev = cell_config("tiny", Cell("d", "f", "l", ("bayes.dwp_train_reverse=true",)))
    # N(0,1) with Xavier init sees neither the VAEs nor the DWP's knobs
    assert method_key(base, BASELINE) == method_key(vae, BASELINE) == method_key(rev, BASELINE)
    # ...but the VAEs are its init under normal:dwp, and its prior under dwp:dwp
    assert method_key(base, "normal:dwp") != method_key(vae, "normal:dwp")
    assert method_key(base, DWP) != method_key(vae, DWP)
    assert method_key(base, "normal:dwp") == method_key(rev, "normal:dwp")
    assert method_key(base, DWP) != method_key(rev, DWP)
    # the training length changes every run
    assert method_key(base, BASELINE) != method_key(steps, BASELINE)


def _fake_result(accs: dict[str, list[float]]) -> ablation.CellResult:
    cell = Cell("fake", "9 test", "fake", methods=tuple(accs))
    res = ablation.CellResult(cell, cell_config("tiny", cell))
    for method, values in accs.items():
        prior, init = method.split(":")
        for seed, a in enumerate(values):
            res.rows.append(
                dict(prior=prior, init=init, n=50, seed=seed, acc_ensemble=a, acc_mean=a,
                     train_acc=1.0, nll=0.1, kl=5.0, log_sigma2_conv2=-9.5, steps=3, seconds=2.0)
            )  # fmt: skip
    return res


def test_summary_pairs_differences_by_seed():
    # DWP is 0.02 better on seeds 0, 1 and 0.01 worse on seed 2: paired mean +1.0 point
    res = _fake_result({BASELINE: [0.70, 0.60, 0.80], DWP: [0.72, 0.62, 0.79]})
    (row,) = ablation.summary_rows([res])
    assert row["seeds"] == 3
    mean, std = (float(v) for v in row["diff DWP − N(0,1) (points)"].split(" ± "))
    assert mean == pytest.approx(1.0, abs=0.05)
    assert std == pytest.approx(1.7, abs=0.05)  # std of (+2, +2, -1)
    assert row["DWP wins (seeds)"] == "2/3"
    assert row["seconds all runs"] == 12
    md = ablation.markdown_table([row])
    assert "| 9 test | fake | 50 | 3 |" in md


def test_tiny_ablation_end_to_end(tmp_path, capsys, monkeypatch):
    """The CLI runs two cells through the experiment's stages and writes a consistent table;
    the second cell reuses the N(0,1) runs of the base cell's folder."""
    monkeypatch.setattr(ablation, "default_root", lambda: tmp_path / "runs")
    out = tmp_path / "abl"
    args = ["--preset", "tiny", "--out", str(out), "--cells", "base-n100,reverse"]
    args += [a for o in FAST for a in ("--set", o)]
    args += ["--set", "grid.split_seeds=[0,1]"]
    assert main(args) == 0
    with open(out / "runs.csv", newline="") as fh:
        runs = list(csv.DictReader(fh))
    with open(out / "table.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    prov = json.loads((out / "provenance.json").read_text())
    assert {r["cell"] for r in table} == {"base-n100", "reverse"}
    assert [r["n"] for r in table] == ["100", "50"]
    assert len(runs) == 8  # 2 cells x 2 methods x 2 seeds
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in runs)
    assert {r["method"] for r in runs if r["cell"] == "reverse"} == {BASELINE, DWP}
    folders = {c["cell"]["name"]: c["run_folders"] for c in prov["cells"]}
    # N(0,1)/Xavier is owned by the base cell's folder (first in CELLS), for both cells
    assert folders["reverse"][BASELINE] == folders["base-n100"][BASELINE]
    assert folders["reverse"][DWP] != folders["base-n100"][DWP]
    assert prov["extra_overrides"][:2] == list(FAST[:2])
    assert prov["cells"][1]["config"]["bayes"]["dwp_train_reverse"] is True
    assert "advantage" in prov["cells"][1]["kernel_vaes"]["conv2"]["held_out"]
    assert prov["files"]["table.csv"]
    assert "Wrote" in capsys.readouterr().out
    # --table-only runs nothing and rebuilds the same table from the cached runs
    again = tmp_path / "again"
    assert main([*args[:3], str(again), *args[4:], "--table-only"]) == 0
    assert (again / "table.csv").read_text() == (out / "table.csv").read_text()


def _runs():
    rows = []
    for seed in range(3):
        for cell, method, acc in (
            ("base", "dwp:dwp", 0.70 + 0.01 * seed),
            ("base", "normal:xavier", 0.72),
            ("x", "dwp:dwp", 0.70 + 0.01 * seed),  # the base runs, shared
            ("x", "normal:xavier", 0.72),
            ("x", "normal:dwp", 0.75),
        ):
            rows.append({"cell": cell, "level": cell, "method": method, "n": "50",
                         "seed": str(seed), "accuracy": str(acc), "nll_end": str(10 + seed)})  # fmt: skip
    return rows


def test_forest_rows_list_each_distinct_contrast_once():
    rows = ablation.forest_rows(_runs())
    pairs = [(r["cell"], r["a"], r["b"]) for r in rows]
    assert pairs == [("base", "dwp:dwp", "normal:xavier"), ("x", "normal:dwp", "normal:xavier"),
                     ("x", "dwp:dwp", "normal:dwp")]  # fmt: skip
    base = rows[0]
    assert base["seeds"] == [0, 1, 2] and [round(d, 6) for d in base["diffs"]] == [-2.0, -1.0, 0.0]
    assert base["mean"] == pytest.approx(-1.0) and base["wins"] == 0


def test_forest_and_fit_plots_draw_every_row():

    rows = ablation.forest_rows(_runs())
    fig = plots.plot_forest(rows)
    ax = fig.axes[0]
    assert len(ax.get_yticks()) == len(rows)
    lo, hi = ax.get_xlim()
    assert lo < min(d for r in rows for d in r["diffs"]) and hi > 0
    fig = plots.plot_fit_vs_accuracy(_runs())
    dots = sum(len(c.get_offsets()) for c in fig.axes[0].collections)
    assert dots == 6  # the dwp:dwp runs of both cells at n = 50
    with pytest.raises(ValueError, match="no runs of normal:dwp at n = 100"):
        plots.plot_fit_vs_accuracy(_runs(), "normal:dwp", 100)
