"""The table of the search for a prior of our own: read from run folders, never typed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from support import micro_config

from dwp_lib import nets
from dwp_lib.experiment import ExperimentError
from dwp_lib.experiment.results import RESULT_COLUMNS, append_row
from studies.own_prior import own_prior, plots, source_curve
from studies.own_prior.__main__ import main

FINDINGS = Path(__file__).with_name("FINDINGS.md")


def row(prior: str, init: str, seed: int, acc: float, **changes) -> dict:
    r = {c: "" for c in RESULT_COLUMNS}
    r.update(own_prior.SETTING)
    r.update(prior=prior, init=init, seed=seed, acc_ensemble=acc, seconds=1800.0)
    r.update(log_sigma2_conv2=-8.0, nll=0.01 * seed, device="cpu")
    r.update(changes)
    return r


def write(root: Path, folder: str, rows: list[dict]) -> None:
    (root / folder).mkdir(parents=True, exist_ok=True)
    for r in rows:
        append_row(root / folder / "results.csv", r, RESULT_COLUMNS)


CELLS = (
    own_prior.PriorCell("released", own_prior.REFERENCE, own_prior.RELEASED),
    own_prior.PriorCell("mine", "mine", "dwp:dwp"),
    own_prior.PriorCell("absent", "absent", "dwp:dwp"),
)


@pytest.fixture
def root(tmp_path):
    write(
        tmp_path,
        own_prior.REFERENCE,
        [row("dwp@released", "dwp@released", s, a) for s, a in ((0, 0.80), (1, 0.82), (2, 0.78))]
        + [row("normal", "xavier", s, a) for s, a in ((0, 0.70), (1, 0.72), (2, 0.74))],
    )
    # seed 3 has no reference row: it counts in the mean but not in the paired differences
    write(
        tmp_path,
        "mine",
        [row("dwp", "dwp", s, a, seconds=600.0) for s, a in ((0, 0.75), (1, 0.76), (3, 0.90))]
        + [row("dwp", "dwp", 0, 0.1, n=100)],  # another size: not this table's
    )
    return tmp_path


def test_rows_are_paired_by_split_seed_with_the_released_prior_and_normal(root):
    released, mine, absent = own_prior.table_rows(root, CELLS)
    assert released["vs_released"] == 0 and released["below_released"] == 0
    assert released["vs_normal"] == pytest.approx(0.08) and released["above_normal"] == 3
    assert mine["seeds"] == [0, 1, 3] and mine["mean"] == pytest.approx((0.75 + 0.76 + 0.90) / 3)
    assert mine["released_seeds"] == [0, 1]
    assert mine["vs_released"] == pytest.approx(((0.75 - 0.80) + (0.76 - 0.82)) / 2)
    assert mine["below_released"] == 2
    assert mine["vs_normal"] == pytest.approx(((0.75 - 0.70) + (0.76 - 0.72)) / 2)
    assert mine["above_normal"] == 2 and mine["minutes"] == pytest.approx(10)
    assert absent["seeds"] == [] and absent["mean"] is None

    table = own_prior.markdown([released, mine, absent])
    assert (
        "| mine | `mine` | 0,1,3 | 0.803 ± 0.084 | -5.5 (2/2) | +4.5 (2/2) | -8.00 | 0.01 | 10 (cpu) |"
    ) in table
    assert "| absent | `absent` | no row yet |" in table


def test_each_rows_vae_steps_come_from_its_runs_config(root):
    config = {"vae": {"conv1": {"train": {"steps": 600}}, "conv2": {"train": {"steps": 18000}}}}
    (root / "mine" / "provenance.json").write_text(json.dumps({"config": config}))
    released, mine, absent = own_prior.table_rows(root, CELLS)
    assert mine["vae_steps"] == {"conv1": 600, "conv2": 18000}
    assert released["vae_steps"] == {} and absent["vae_steps"] == {}  # no provenance: none


def test_the_search_plot_draws_each_prior_but_the_released_one_against_it(root):
    import matplotlib

    matplotlib.use("Agg")

    cells = (
        *CELLS,
        own_prior.PriorCell("N(0, 1)", own_prior.REFERENCE, own_prior.NORMAL, own=False),
    )
    released, mine, absent, normal = rows = own_prior.table_rows(root, cells)
    assert mine["released_differences"] == pytest.approx([-0.05, -0.06])
    fig = plots.plot_prior_search(rows)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["mine (2)", "N(0, 1) (3)"]
    means = [c.lines[0].get_xdata()[0] for c in ax.containers]  # each line's mean, in points
    assert means == pytest.approx([-5.5, -8.0])
    with pytest.raises(ValueError, match="no prior with rows"):
        plots.plot_prior_search([released, absent])


def test_a_row_run_at_another_setting_is_refused(root):
    write(root, "other", [row("dwp", "dwp", 0, 0.7, steps=2000)])
    cells = (*CELLS, own_prior.PriorCell("other", "other", "dwp:dwp"))
    with pytest.raises(ExperimentError, match=r"not run at the authors' setting.*'steps': 2000"):
        own_prior.table_rows(root, cells)


def test_two_rows_for_one_seed_are_refused(root):
    write(root, "mine", [row("dwp", "dwp", 1, 0.5)])
    with pytest.raises(ExperimentError, match="two different rows of one cell"):
        own_prior.table_rows(root, CELLS)


def test_update_writes_between_the_markers_and_check_sees_a_stale_table(root, tmp_path, capsys):
    note = tmp_path / "note.md"
    note.write_text(f"# Note\n\nbefore\n\n{own_prior.BEGIN}\nold table\n{own_prior.END}\n\nafter\n")
    assert main(["--results", str(root), "--check", str(note)]) == 1
    assert "is not the one the committed runs give" in capsys.readouterr().err
    assert main(["--results", str(root), "--update", str(note)]) == 0
    text = note.read_text()
    assert "old table" not in text and text.startswith("# Note\n\nbefore\n\n")
    assert text.endswith(f"{own_prior.END}\n\nafter\n") and "| N(0, 1), Xavier |" in text
    assert main(["--results", str(root), "--check", str(note)]) == 0
    note.write_text("no markers here\n")
    assert main(["--results", str(root), "--update", str(note)]) == 2
    assert "needs one pair of markers" in capsys.readouterr().err


def test_the_findings_table_is_the_one_the_committed_runs_give():
    """studies/own_prior/FINDINGS.md's table against the committed results/ folders."""
    if not FINDINGS.exists():
        pytest.skip("no results/ in this installation (a plain pip install)")
    assert main(["--check", str(FINDINGS)]) == 0


def test_only_priors_ours_on_both_layers_are_candidates():
    own = {c.label: c.own for c in own_prior.CELLS}
    assert not own["released prior (their VAEs, their bank)"] and not own["N(0, 1), Xavier"]
    assert [c.method for c in own_prior.CELLS if "released" in c.method.split(":")[0]] == [
        c.method for c in own_prior.CELLS if not c.own and c.method != own_prior.NORMAL
    ]


def test_observations_group_the_trained_networks_by_the_prior_on_conv2(root):
    write(root, "mixed", [row("dwp@released/dwp", "dwp@released", 0, 0.6, nll=0.7)])
    cells = (*CELLS, own_prior.PriorCell("mixed", "mixed", "dwp@released/dwp:dwp@released"))
    write(
        root,
        "spread",
        [row("dwp", "dwp", s, 0.5, log_sigma2_conv2=v) for s, v in ((0, -8.0), (1, -7.95))],
    )
    cells = (*cells, own_prior.PriorCell("spread", "spread", "dwp:dwp"))
    rows = own_prior.table_rows(root, cells)
    text = own_prior.observations(rows)
    assert "differs by at most 0.050 between the split seeds" in text
    assert "the released 5x5 VAE: log sigma^2 -8.00, train nll 0.01 nats" in text
    assert "one of our 5x5 VAEs: log sigma^2 -8.00 to -7.97, train nll 0.01 to 0.70 nats" in text
    assert "N(0, 1)" not in text
    assert [
        own_prior.conv2_prior(m) for m in ("dwp/dwp@released:dwp@released", "normal:xavier")
    ] == [
        "dwp@released",
        "normal",
    ]


def test_weight_noise_reads_the_decoder_variance_at_the_trained_weights(fake_world, tmp_path):
    """The noise table of a run's saved networks: the posterior's log sigma^2 is the row's, and
    the decoder's log-variance is what the VAE gives at those weights; a network saved with
    another VAE than the cache's is refused."""
    import torch

    from dwp_lib.experiment import Experiment

    cfg = micro_config(
        **{
            "grid.save_models": "true",
            "init.enabled": "false",
            "grid.methods": "dwp:dwp,dwp/normal:xavier",
        }
    )
    out = tmp_path / "run"
    exp = Experiment(cfg, out, "cpu", verbose=False)
    grid = {(r["prior"], r["seed"]): r for r in exp.prior_grid()}
    rows = own_prior.noise_rows(out, cfg)
    # dwp:dwp has two DWP layers, dwp/normal one: 2 seeds x (2 + 1)
    assert sorted((r["prior"], r["seed"], r["layer"]) for r in rows) == sorted(
        [("dwp", s, layer) for s in (0, 1) for layer in ("conv1", "conv2")]
        + [("dwp/normal", s, "conv1") for s in (0, 1)]
    )
    vaes = exp.kernel_vaes()
    for r in rows:
        g = grid[(r["prior"], r["seed"])]
        assert r["log_sigma2"] == pytest.approx(g[f"log_sigma2_{r['layer']}"], abs=1e-3)
        model, _ = experiment_model(cfg, out, r)
        mu, _ = model.bayes_layers()[r["layer"]].slices()
        with torch.no_grad():
            z, _ = vaes[r["layer"]].encode(mu)
            _, lv = vaes[r["layer"]].decode(z)
        assert r["decoder_logvar"] == pytest.approx(lv.mean().item(), abs=1e-3)
        assert 0 < r["residual_rms"] and 0 < r["weight_rms"]
    # a cache holding another conv2 VAE than the one the cells were trained with
    vae = vaes["conv2"]
    with torch.no_grad():
        vae.w_mean.bias.add_(0.1)
    vae.save(exp.vae_path("conv2"), {"layer": "conv2"})
    with pytest.raises(ExperimentError, match="restore that VAE file"):
        own_prior.noise_rows(out, cfg)
    with pytest.raises(ExperimentError, match="grid.save_models=true"):
        own_prior.noise_rows(tmp_path / "empty")


def test_weight_noise_keeps_the_rows_of_networks_saved_elsewhere(fake_world, tmp_path):
    """models/ is not committed: rewriting the table on a machine that holds only some of the
    networks keeps the earlier rows of the others, if they still match results.csv."""
    from dwp_lib.experiment import Experiment

    cfg = micro_config(
        **{"grid.save_models": "true", "init.enabled": "false", "grid.methods": "dwp:dwp"}
    )
    out = tmp_path / "run"
    Experiment(cfg, out, "cpu", verbose=False).prior_grid()
    assert own_prior.noise_cli(out, "cmd", cfg) == 0
    table = (out / "weight-noise.csv").read_text()
    assert len(table.splitlines()) == 1 + 2 * 2  # 2 seeds x 2 layers
    assert "kept from an earlier writing" not in (out / "weight-noise.md").read_text()
    for path in (out / "models").glob("*seed0*"):
        path.unlink()
    assert own_prior.noise_cli(out, "cmd", cfg) == 0
    assert (out / "weight-noise.csv").read_text() == table
    assert (
        "split seed(s) 0 are kept from an earlier writing" in (out / "weight-noise.md").read_text()
    )
    lines = table.splitlines()
    seed0 = next(i for i, line in enumerate(lines) if line.split(",")[3] == "0")
    fields = lines[seed0].split(",")
    fields[4] = "0.0001"  # an accuracy results.csv does not hold
    lines[seed0] = ",".join(fields)
    (out / "weight-noise.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ExperimentError, match=r"split seed 0 \(accuracy 0.0001\) is not a cell"):
        own_prior.noise_cli(out, "cmd", cfg)


def experiment_model(cfg, out, r):
    from dwp_lib.experiment import load_cell_model

    return load_cell_model(cfg, out, f"{r['prior']}:{r['init']}", r["n"], r["seed"])


# --------------------------------------------------------------------------------------------
# The source-compute curve
# --------------------------------------------------------------------------------------------


def stage(root: Path, folder: str, epochs: int, accs: dict[int, float], cached=False) -> None:
    """A folder of one source stage: its config.json, provenance.json and dwp:dwp rows."""
    import json

    write(root, folder, [row("dwp", "dwp", s, a) for s, a in accs.items()])
    source = {"n_nets": 8, "epochs": epochs, "widths": [32, 64], "train_images": None}
    (root / folder / "config.json").write_text(json.dumps({"source": source}))
    prov = {
        "data": {"source": {"label": "letters", "train": {"count": 1000}}},
        "stage_loaded_from_cache": {"source_nets_and_bank": cached},
        "stage_seconds": {"source_nets_and_bank": 120.0},
    }
    (root / folder / "provenance.json").write_text(json.dumps(prov))


STAGES = (
    source_curve.SourceStage("none", "s1"),
    source_curve.SourceStage("2x", "s2"),
    source_curve.SourceStage("4x", "s4"),
    source_curve.SourceStage("not run", "s8"),
)


def test_the_curve_pairs_each_stage_by_seed_and_reads_its_compute(root):
    # released: 0.80, 0.82, 0.78 on seeds 0-2; the gap closes 10 points per doubling
    stage(root, "s1", 3, {0: 0.50, 1: 0.52}, cached=True)
    stage(root, "s2", 6, {0: 0.60, 1: 0.62, 2: 0.58})
    stage(root, "s4", 12, {0: 0.70, 2: 0.68})
    first, two, four, absent = source_curve.curve_rows(root, STAGES)
    assert [r["ratio"] for r in (first, two, four)] == [1.0, 2.0, 4.0]
    assert first["compute"] == 8 * 3 * 1000 * (22 * 22 * 32 * 49 + 7 * 7 * 64 * 32 * 25 + 5760)
    assert first["source_minutes"] is None and two["source_minutes"] == 2.0  # cached: not timed
    assert two["vs_released"] == pytest.approx(-0.20) and two["released_seeds"] == [0, 1, 2]
    assert four["vs_first"] == pytest.approx(0.20) and four["first_seeds"] == [0]
    assert absent["seeds"] == [] and absent["ratio"] is None
    fit = source_curve.curve_fit([first, two, four, absent])
    assert fit["slope"] == pytest.approx(0.10) and fit["intercept"] == pytest.approx(-0.30)
    assert fit["points"] == 7 and fit["se"] == pytest.approx(0, abs=1e-9)
    text = source_curve.curve_markdown([first, two, four, absent])
    assert "| 2x | `s2` | 2.0 | 0,1,2 | 0.600 | -20.0 | +10.0 (0,1) | 2 |" in text
    assert "| not run | `s8` | | no row yet |" in text
    # (-2 - (-30)) / 10 = 2.8 doublings, 2^2.8 = 7 times the first stage's compute
    assert "needs 2.8 doublings: 7 times the book's source compute" in text
    # in wall time at the speed of the timed stage of the widest nets, the largest compute among
    # equals (s4: 4 times the book's compute in 2 minutes; s1 came from the cache: no clock)
    assert source_curve.speed_reference([first, two, four, absent]) is four
    assert source_curve.wall_hours([first, two, four, absent], 120.0) == pytest.approx(1.0)
    assert (
        "(4x: 4.0 times the book's compute in 2 minutes), that compute is about 3 minutes" in text
    )
    assert source_curve.speed_reference([first]) is None
    # a stage whose nets trained over several runs has no stage minutes, though not cached
    resumed = (STAGES[0], source_curve.SourceStage("2x", "s2", timed=False))
    assert source_curve.curve_rows(root, resumed)[1]["source_minutes"] is None


def test_a_flat_curve_is_not_extrapolated(root):
    stage(root, "s1", 3, {0: 0.50, 1: 0.55, 2: 0.45})
    stage(root, "s2", 6, {0: 0.55, 1: 0.45, 2: 0.50})
    rows = source_curve.curve_rows(root, STAGES[:2])
    fit = source_curve.curve_fit(rows)
    assert abs(fit["slope"]) < 2 * fit["se"]
    text = source_curve.curve_markdown(rows)
    assert "no trend that could be extrapolated" in text and "doublings:" not in text
    assert "no curve yet" in source_curve.curve_markdown(rows[:1])


def test_stages_at_the_same_compute_that_differ_are_named(root):
    stages = (*STAGES[:2], source_curve.SourceStage("2x other factor", "s2b"))
    stage(root, "s1", 3, {0: 0.50, 1: 0.52})
    stage(root, "s2", 6, {0: 0.60, 1: 0.62})
    stage(root, "s2b", 6, {0: 0.50, 1: 0.54})  # the same compute, 9 points lower
    rows = source_curve.curve_rows(root, stages)
    hi, lo = source_curve.equal_compute_pair(rows)
    assert (hi["folder"], lo["folder"]) == ("s2", "s2b")
    assert "differ by up to 9.0 points (2x at 2.0 times" in source_curve.curve_markdown(rows)
    # stages a doubling apart are not "the same compute"
    assert source_curve.equal_compute_pair(rows[:2]) is None
    assert "differ by up to" not in source_curve.curve_markdown(rows[:2])


def test_update_writes_the_curve_where_the_note_has_its_markers(root, tmp_path, capsys):
    stage(root, "s1", 3, {0: 0.50})
    note = tmp_path / "note.md"
    blocks = f"{own_prior.BEGIN}\nSTALE\n{own_prior.END}\n\n{source_curve.CURVE_BEGIN}\nSTALE\n"
    note.write_text(blocks + source_curve.CURVE_END + "\n")
    assert main(["--results", str(root), "--update", str(note)]) == 0
    text = note.read_text()
    assert "STALE" not in text and "| change to the book's source stage |" in text
    assert main(["--results", str(root), "--check", str(note)]) == 0
    note.write_text(text.replace(source_curve.CURVE_END, "a stale line\n" + source_curve.CURVE_END))
    assert main(["--results", str(root), "--check", str(note)]) == 1


def test_the_curve_draws_with_the_authors_compute(root):

    stage(root, "s1", 3, {0: 0.50, 1: 0.52})
    stage(root, "s2", 6, {0: 0.60})
    rows = source_curve.curve_rows(root, STAGES)
    lo, hi = source_curve.authors_ratio(rows)
    assert hi / lo == pytest.approx(529_000 / 18_724)
    fig = plots.plot_source_curve(rows, (lo, hi))
    (ax,) = fig.axes
    assert ax.get_xscale() == "log" and ax.get_xlim()[1] > hi
    assert len(ax.collections) >= 2  # the two stages' points
    with pytest.raises(ValueError, match="no source stage with rows"):
        plots.plot_source_curve(rows[2:])


def test_each_factor_gets_its_own_line_and_its_extrapolation_to_the_authors_value(root):
    """Two stages of one factor beside the base: a fit of that factor alone, continued to the
    authors' value of the factor (here width, FConv(256, 512)); a factor with one stage gets none."""
    import json

    stage(root, "s1", 3, {0: 0.50, 1: 0.52})
    stage(root, "w2", 3, {0: 0.60, 1: 0.62})
    stage(root, "w4", 3, {0: 0.70, 1: 0.72})
    stage(root, "e2", 6, {0: 0.40})
    for folder, widths in (("w2", [64, 128]), ("w4", [128, 256])):
        cfg = root / folder / "config.json"
        cfg.write_text(
            json.dumps({"source": {**json.loads(cfg.read_text())["source"], "widths": widths}})
        )
    stages = (
        source_curve.SourceStage("none", "s1"),
        source_curve.SourceStage("w2", "w2", "widths"),
        source_curve.SourceStage("w4", "w4", "widths"),
        source_curve.SourceStage("e2", "e2", "epochs"),
    )
    rows = source_curve.curve_rows(root, stages)
    fits = source_curve.factor_fits(rows)
    assert set(fits) == {"widths"}  # one epochs stage: no line of its own
    f = fits["widths"]
    assert f["stages"] == 3 and f["points"] == 6 and f["measured"] is None
    ratio = nets.fconv_macs((256, 512)) / nets.fconv_macs((32, 64))
    assert f["authors"] == pytest.approx(ratio)
    x = [math.log2(r["ratio"]) for r in rows[:3]]
    slope = 0.10 / (x[1] - x[0])  # 10 points per step of width, whatever its compute ratio
    assert f["slope"] == pytest.approx(slope, rel=0.2) and f["se"] < f["slope"] / 2
    assert f["at_authors"] == pytest.approx(f["intercept"] + f["slope"] * math.log2(ratio))
    text = source_curve.curve_markdown(rows)
    assert "- Along width alone (3 stages, 6 per-seed differences)" in text
    assert f"the line gives {100 * f['at_authors']:+.1f} ± {100 * f['at_authors_se']:.1f}" in text
    # stage by stage: 10 points per step of width over that step's doublings of the compute
    steps = [0.10 / (x[1] - x[0]), 0.10 / (x[2] - x[1])]
    assert f["step_slopes"] == pytest.approx(steps)
    verdict = "the steps shrink" if steps[1] < steps[0] else "the steps do not shrink"
    assert f"Stage by stage the gap moved {100 * steps[0]:+.1f}, then {100 * steps[1]:+.1f}" in text
    assert verdict in text
    # the line's standard error is smallest at the stages' mean and grows away from it
    assert source_curve.line_se(f, f["mean_x"]) == pytest.approx(math.sqrt(f["s2"] / 6))
    assert f["at_authors_se"] > source_curve.line_se(f, x[2]) > source_curve.line_se(f, f["mean_x"])

    fig = plots.plot_source_curve(rows, fits=fits)
    (dashed,) = [ln for ln in fig.axes[0].lines if ln.get_linestyle() == "--"]
    assert dashed.get_xdata()[-1] == pytest.approx(ratio)


def test_a_factor_run_at_the_authors_value_is_reported_as_measured(root):
    """Once a stage runs at the authors' value of its factor, the factor's line states that
    stage's measured gap, and the line's value there only beside it."""
    import json

    stage(root, "s1", 3, {0: 0.50, 1: 0.52})
    for folder, widths, accs in (
        ("w4", [128, 256], {0: 0.70, 1: 0.72}),
        ("w8", [256, 512], {0: 0.74, 1: 0.70, 2: 0.76}),
    ):
        stage(root, folder, 3, accs)
        cfg = root / folder / "config.json"
        cfg.write_text(
            json.dumps({"source": {**json.loads(cfg.read_text())["source"], "widths": widths}})
        )
    stages = (
        source_curve.SourceStage("none", "s1"),
        source_curve.SourceStage("w4", "w4", "widths"),
        source_curve.SourceStage("w8", "w8", "widths"),
    )
    rows = source_curve.curve_rows(root, stages)
    f = source_curve.factor_fits(rows)["widths"]
    assert f["measured"] is rows[2]
    # released 0.80, 0.82, 0.78 on seeds 0-2: -6, -12, -2 points, mean -6.7
    assert rows[2]["vs_released"] == pytest.approx(-0.2 / 3)
    text = source_curve.curve_markdown(rows)
    assert "At the authors' FConv(256, 512) itself" in text
    assert "the gap is measured: -6.7 points over 3 split seed(s)" in text
    assert "nothing is left to extrapolate" in text and "not a measurement" not in text

    fig = plots.plot_source_curve(rows, fits=source_curve.factor_fits(rows))
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert "along width alone: fit of 3 stages, out to FConv(256, 512)" in labels


def test_the_steps_sentence_says_when_the_gap_stopped_closing():
    says = source_curve._steps_sentence
    assert says([0.08, 0.02]).endswith(
        "the steps shrink, so a straight line is the optimistic reading."
    )
    assert says([0.02, 0.08]).endswith("the steps do not shrink.")
    stopped = says([0.08, 0.02, -0.02])
    assert "+8.0, then +2.0, then -2.0 points" in stopped and "stopped closing" in stopped


def test_short_lines_pair_with_the_short_settings_own_released_prior_and_normal(root):
    short = own_prior.SHORT_SETTING
    write(
        root,
        own_prior.SHORT_REFERENCE,
        [row("dwp@released", "dwp@released", s, 0.79, **short) for s in (0, 1)]
        + [row("normal", "xavier", s, 0.71, **short) for s in (0, 1)],
    )
    write(root, "short-mine", [row("dwp", "dwp", s, 0.66, **short) for s in (0, 1)])
    cells = (
        own_prior.PriorCell("short mine", "short-mine", "dwp:dwp", short=True),
        own_prior.PriorCell("mine", "mine", "dwp:dwp"),
    )
    short_mine, mine = own_prior.table_rows(root, cells)
    assert short_mine["vs_released"] == pytest.approx(-0.13)
    assert short_mine["vs_normal"] == pytest.approx(-0.05)
    assert mine["vs_normal"] == pytest.approx(((0.75 - 0.70) + (0.76 - 0.72)) / 2)
    assert "short setting" in own_prior.markdown([short_mine], own_prior.SHORT_TITLE)
    assert own_prior.observations([short_mine]) == ""  # its trained networks ran 2,000 steps
    # a row at the authors' setting in a short line's folder is refused, and the other way round
    write(root, "short-mine", [row("dwp", "dwp", 2, 0.66)])
    with pytest.raises(ExperimentError, match="not run at the short setting"):
        own_prior.table_rows(root, cells[:1])


def test_a_line_screened_at_another_short_setting_pairs_with_that_settings_folder(root):
    other = next(f for f in own_prior.SHORT_SETTINGS if f != own_prior.SHORT_REFERENCE)
    setting = own_prior.SHORT_SETTINGS[other]
    for folder, acc in ((own_prior.SHORT_REFERENCE, 0.70), (other, 0.80)):
        at = own_prior.SHORT_SETTINGS[folder]
        write(root, folder, [row("dwp@released", "dwp@released", s, acc, **at) for s in (0, 1)])
        write(root, folder, [row("normal", "xavier", s, acc - 0.1, **at) for s in (0, 1)])
    write(root, "old-screen", [row("dwp", "dwp", s, 0.66, **setting) for s in (0, 1)])
    cell = own_prior.PriorCell("screened", "old-screen", "dwp:dwp", short=other)
    (screened,) = own_prior.table_rows(root, (cell,))
    assert screened["reference"] == other
    assert screened["vs_released"] == pytest.approx(-0.14)  # that setting's released prior
    title = own_prior.setting_title(setting)
    assert f"screened (at {title})" in own_prior.markdown([screened], own_prior.SHORT_TITLE)
    # the course's setting is refused for its rows, and an unknown short setting is named
    with pytest.raises(ExperimentError, match="not run at the short setting"):
        own_prior.table_rows(root, (own_prior.PriorCell("s", "old-screen", "dwp:dwp", short=True),))
    with pytest.raises(ExperimentError, match="not a short setting the study knows"):
        own_prior.table_rows(root, (own_prior.PriorCell("s", "old-screen", "dwp:dwp", short="x"),))


def test_the_builds_sentence_names_the_spread_and_the_builds_that_share_a_bank(root):
    norms = {"conv1": {"median": 0.7}}
    for folder, accs, bank in (
        ("released-authors-setting", (0.40, 0.44, 0.42), {"conv1": {"median": 0.6}}),
        ("book-prior-authors-setting", (0.50, 0.52, 0.54), norms),
        ("paper-bnn-gpu", (0.55, 0.55, 0.60), norms),
    ):
        write(
            root, folder, [row("dwp", "dwp", s, a, vae_sha256=folder) for s, a in enumerate(accs)]
        )
        held = {"conv1": {"held_out": {"log_likelihood_iw": len(folder)}}}
        prov = {"bank": {"norms": bank}, "kernel_vaes": held}
        (root / folder / "provenance.json").write_text(json.dumps(prov))
    cells = tuple(own_prior.PriorCell(f, f, "dwp:dwp") for f in own_prior.BOOK_BUILDS)
    text = own_prior.builds_sentence(own_prior.table_rows(root, cells))
    # against N(0, 1) (0.70, 0.72, 0.74): -30.0, -20.0 and -15.3 points
    assert "-30.0 (`released-authors-setting`), -20.0 (`book-prior-authors-setting`)" in text
    assert "The builds lie 14.7 points apart" in text
    assert "`book-prior-authors-setting` and `paper-bnn-gpu` cut the same bank" in text
    assert "+4.7 points from one to the other over split seeds 0,1,2" in text
    assert "held-out log p(w) of conv1 26.00 against 13.00 nats per slice" in text
    assert own_prior.builds_sentence(own_prior.table_rows(root, cells[:1])) == ""


def test_a_line_paired_with_n01_from_its_own_init_reads_it_from_its_own_folder(root):
    write(root, "ours", [row("dwp", "dwp", 0, 0.60), row("normal", "dwp", 0, 0.64)])
    cell = own_prior.PriorCell("ours", "ours", "dwp:dwp", normal=own_prior.NORMAL_SAME_INIT)
    (ours,) = own_prior.table_rows(root, (cell,))
    assert ours["vs_normal"] == pytest.approx(-0.04) and ours["normal_seeds"] == [0]
    assert "| -4.0 (0/1) (same) |" in own_prior.markdown([ours])


def test_adoption_is_met_failed_or_open_by_the_seeds_measured():
    assert own_prior.adoption([0.05, 0.04, 0.031, 0.03]) == (4, "met")
    assert own_prior.adoption([0.05, 0.02, 0.01]) == (1, "failed")  # two of five missed already
    assert own_prior.adoption([0.05, 0.02]) == (1, "open")
    assert own_prior.adoption([]) == (0, "open")


def test_the_trainings_sentence_pairs_two_vae_trainings_of_one_bank(root):
    a, b = own_prior.SPARSE_TRAININGS
    for folder, accs, same in ((a, (0.70, 0.66), (0.72, 0.70)), (b, (0.74, 0.69), (0.70, 0.71))):
        write(
            root,
            folder,
            [row("dwp", "dwp", s, x, vae_sha256=folder) for s, x in enumerate(accs)]
            + [row("normal", "dwp", s, x) for s, x in enumerate(same)],
        )
        (root / folder / "provenance.json").write_text(json.dumps({"bank": {"norms": {"m": 1}}}))
    cells = tuple(
        own_prior.PriorCell(f, f, "dwp:dwp", normal=own_prior.NORMAL_SAME_INIT)
        for f in own_prior.SPARSE_TRAININGS
    )
    text = own_prior.trainings_sentence(own_prior.table_rows(root, cells))
    # the first: -2.0 and -4.0 against its own N(0, 1); the second: +4.0 and -2.0
    assert (
        f"-3.0 (`{a}`, split seeds 0,1: -2.0, -4.0; 0 of 2 at or above 3 points, so it "
        "cannot meet the adoption rule" in text
    )
    assert f"+1.0 (`{b}`, split seeds 0,1: +4.0, -2.0; 1 of 2" in text and "still open" in text
    assert "+3.5 points over split seeds 0,1 (per seed +4.0, +3.0)" in text
    assert own_prior.trainings_sentence(own_prior.table_rows(root, cells[:1])) == ""
    # every split seed run: the rule has failed, there is nothing left to give
    (root / a / "results.csv").unlink()
    write(
        root,
        a,
        [row("dwp", "dwp", s, 0.60, vae_sha256=a) for s in range(5)]
        + [row("normal", "dwp", s, 0.70) for s in range(5)],
    )
    text = own_prior.trainings_sentence(own_prior.table_rows(root, cells))
    assert "0 of 5 at or above 3 points, so it fails the adoption rule)" in text
    (root / b / "provenance.json").write_text(json.dumps({"bank": {"norms": {"m": 2}}}))
    with pytest.raises(ExperimentError, match="norm statistics of their banks differ"):
        own_prior.trainings_sentence(own_prior.table_rows(root, cells))
