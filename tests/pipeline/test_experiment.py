"""Tests of dwp_lib.experiment: the config and its overrides, the results files, the summaries,
and the pipeline end to end on a fake bank and fake digits (seconds, no data needed): resuming
after an interruption, refusing a folder made with other settings, reproducibility."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
from support import micro_config

from dwp_lib import artifacts
from dwp_lib import experiment as ex
from dwp_lib.artifacts import is_valid_artifact
from dwp_lib.cli import main as cli_main
from dwp_lib.experiment import (
    PAPER_RESULTS,
    RESULT_COLUMNS,
    Experiment,
    ExperimentConfig,
    ExperimentError,
    apply_overrides,
    config_from,
    paired_difference,
    parse_method,
    read_rows,
    results_table,
    summarise,
)
from dwp_lib.inits import initialise
from dwp_lib.nets import FConv
from dwp_lib.source_nets import SourceNetsConfig

# --------------------------------------------------------------------------------------------
# Config and overrides
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny", "book", "paper"])
def test_presets_build_and_name_every_stage(name):
    cfg = ExperimentConfig.preset(name)
    assert cfg.from_preset == name
    assert set(cfg.vae.layers()) == {"conv1", "conv2"}
    assert cfg.vae.conv1.arch.kernel_size == 7 and cfg.vae.conv2.arch.kernel_size == 5
    for m in cfg.grid.methods:
        parse_method(m)


def test_paper_preset_is_the_authors_grid():
    cfg = ExperimentConfig.paper()
    assert cfg.grid.sizes == (50, 100, 200, 500, 1000)
    assert len(cfg.grid.split_seeds) == 10 and cfg.grid.test_images is None
    assert cfg.bayes.steps == 10_000 and cfg.bayes.log_sigma2_init == -10
    assert cfg.source.n_nets == 100 and cfg.source.widths == (256, 512)
    assert {parse_method(m)[0] for m in cfg.grid.methods} == {"dwp", "normal", "log-uniform", "det"}


def test_overrides_are_typed_by_the_field():
    cfg = apply_overrides(
        ExperimentConfig.tiny(),
        [
            "bayes.steps=2000",  # int
            "bayes.lr=1",  # an int given to a float field becomes a float
            "bayes.batch_size=None",  # optional
            "bayes.dwp_train_reverse=true",
            "source.prune_norms=[0.3, 0.1]",  # a list for a tuple
            "grid.sizes=50,100,200",  # comma-separated text for a tuple
            "grid.methods=dwp:dwp,normal:dwp",
            "vae.conv2.arch.logvar_floor=-6",  # nested dataclasses
            "vae.conv1.train.steps=7",
            "grid.steps_by_size.50=10000",  # a dict key
            "source.widths.1=128",  # a tuple index
        ],
    )
    assert cfg.bayes.steps == 2000 and isinstance(cfg.bayes.lr, float) and cfg.bayes.lr == 1.0
    assert cfg.bayes.batch_size is None and cfg.bayes.dwp_train_reverse is True
    assert cfg.source.prune_norms == (0.3, 0.1)
    assert cfg.grid.sizes == (50, 100, 200)
    assert cfg.grid.methods == ("dwp:dwp", "normal:dwp")
    assert cfg.vae.conv2.arch.logvar_floor == -6.0 and cfg.vae.conv1.train.steps == 7
    assert cfg.grid.steps_for(50, 1) == 10_000 and cfg.grid.steps_for(100, 1) == 1
    assert cfg.source.widths == (8, 128)
    # the original preset is untouched
    assert ExperimentConfig.tiny().bayes.steps != 2000


@pytest.mark.parametrize(
    "item, message",
    [
        ("bayes.stepz=3", "did you mean 'steps'"),
        ("bayes.steps=2.5", "is an integer"),
        ("bayes.steps=many", "is an integer"),
        ("grid.sizes=[55]", "multiple of 10"),
        ("grid.methods=dwp:magic", "unknown init"),
        ("grid.methods=flat:xavier", "unknown prior"),
        ("bayes.steps", "PATH=VALUE"),
        ("bayes=3", "is a section"),
        ("source.prune_norms.5=0.1", "not an index"),
    ],
)
def test_bad_overrides_say_what_is_wrong(item, message):
    with pytest.raises(ExperimentError, match=message):
        apply_overrides(ExperimentConfig.tiny(), [item])


def test_config_files_json_and_toml_equal_the_command_line(tmp_path):
    (tmp_path / "a.json").write_text(
        json.dumps({"preset": "tiny", "bayes": {"steps": 77}, "grid.sizes": [50, 100]})
    )
    (tmp_path / "a.toml").write_text(
        'preset = "tiny"\n[bayes]\nsteps = 77\n[grid]\nsizes = [50, 100]\n'
        "[grid.steps_by_size]\n100 = 9\n"
    )
    cli = config_from("tiny", None, ["bayes.steps=77", "grid.sizes=[50,100]"])
    from_json = config_from(None, tmp_path / "a.json")
    from_toml = config_from(None, tmp_path / "a.toml")
    assert from_json == cli
    assert from_toml.grid.steps_by_size == {"100": 9}
    assert from_toml.bayes == cli.bayes and from_toml.grid.sizes == cli.grid.sizes
    # --set applies after the file; an explicit preset wins over the file's
    assert config_from(None, tmp_path / "a.json", ["bayes.steps=5"]).bayes.steps == 5
    assert config_from("book", tmp_path / "a.json").from_preset == "book"
    with pytest.raises(ExperimentError, match="does not exist"):
        config_from(None, tmp_path / "missing.json")


def test_a_committed_run_is_rerun_at_its_own_setting_or_at_the_tiny_scale(tmp_path):
    run = apply_overrides(ExperimentConfig.book(), ["bayes.steps=777", "grid.methods=dwp:dwp"])
    (tmp_path / "config.json").write_text(json.dumps(run.to_dict()))
    again = ex.rerun_config(tmp_path, "book", ["grid.split_seeds=[0]"])
    assert again.key() == run.key() and again.grid.split_seeds == (0,)
    tiny = ex.rerun_config(tmp_path, "tiny")
    assert tiny.grid.methods == ("dwp:dwp",) and tiny.bayes == ExperimentConfig.tiny().bayes
    with pytest.raises(ExperimentError, match="is not a run folder"):
        ex.rerun_config(tmp_path / "nothing", "book")


def test_key_changes_with_a_result_setting_but_not_with_the_grid_extent():
    base = ExperimentConfig.tiny()
    assert apply_overrides(base, ["bayes.steps=31"]).key() != base.key()
    assert apply_overrides(base, ["source.prune_norms=[0.1,0.1]"]).key() != base.key()
    assert (
        apply_overrides(base, ["grid.sizes=50,100", "grid.split_seeds=0,1,2"]).key() == base.key()
    )


def test_parse_method():
    assert parse_method("dwp:dwp") == ("dwp", "dwp")
    assert parse_method("dwp/normal:xavier") == ("dwp/normal", "xavier")
    for bad in ("dwp", "dwp:dwp:dwp", "log-uniform/dwp:xavier", "dwp/dwp/dwp:xavier"):
        with pytest.raises(ValueError):
            parse_method(bad)


def test_cli_prints_the_resolved_config(capsys):
    rc = cli_main(
        ["reproduce", "--preset", "tiny", "--out", "unused", "--set", "bayes.steps=12"]
        + ["--name", "probe", "--print-config"]
    )
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["bayes"]["steps"] == 12 and printed["name"] == "probe"
    assert cli_main(["reproduce", "--out", "x", "--set", "bayes.nope=1"]) == 2


# --------------------------------------------------------------------------------------------
# Results files and summaries
# --------------------------------------------------------------------------------------------


def _row(prior, init, n, seed, acc):
    return {"prior": prior, "init": init, "n": n, "seed": seed, "acc_ensemble": acc}


def test_append_and_read_rows_drop_a_torn_line(tmp_path, capsys):
    path = tmp_path / "r.csv"
    cols = ("prior", "init", "n", "seed", "acc_ensemble")
    ex.append_row(path, _row("dwp", "dwp", 50, 0, 0.5), cols)
    ex.append_row(path, _row("normal", "xavier", 50, 0, 0.25), cols)
    with open(path, "a") as f:
        f.write("dwp,dwp,50")  # an interrupted write
    rows = read_rows(path, cols)
    assert [r["acc_ensemble"] for r in rows] == [0.5, 0.25]
    assert isinstance(rows[0]["n"], int)
    assert "dropped 1 incomplete row" in capsys.readouterr().err
    with pytest.raises(ExperimentError, match="columns"):
        read_rows(path, ("a", "b"))


def test_summaries_and_paired_differences():
    rows = [
        _row("dwp", "dwp", 50, 0, 0.80),
        _row("dwp", "dwp", 50, 1, 0.70),
        _row("dwp", "dwp", 50, 2, 0.60),
        _row("normal", "xavier", 50, 0, 0.75),
        _row("normal", "xavier", 50, 1, 0.72),
        _row("normal", "xavier", 50, 3, 0.10),  # no partner seed: not in the paired test
    ]
    s = summarise(rows)[("dwp", "dwp", 50)]
    assert s["count"] == 3 and math.isclose(s["mean"], 0.70) and math.isclose(s["std"], 0.10)
    d = paired_difference(rows, "dwp:dwp", "normal:xavier", 50)
    assert d["seeds"] == [0, 1] and d["wins"] == 1
    assert [round(x, 6) for x in d["differences"]] == [0.05, -0.02]
    assert d["by_seed"] == dict(zip(d["seeds"], d["differences"], strict=True))
    assert math.isclose(d["mean"], 0.015)
    table = results_table(rows)
    assert "0.700 ± 0.100 (3)" in table and f"[paper {PAPER_RESULTS['dwp'][50]:.3f}]" in table
    assert table.index("DWP") < table.index("N(0, 1)")


# --------------------------------------------------------------------------------------------
# The pipeline end to end, on a fake bank and fake digits
# --------------------------------------------------------------------------------------------


def test_pipeline_writes_rows_curves_figures_and_provenance(fake_world, tmp_path):
    out = tmp_path / "run"
    exp = Experiment(micro_config(), out, "cpu", verbose=False, command="test")
    result = exp.run()
    rows = read_rows(out / "results.csv", RESULT_COLUMNS)
    assert len(rows) == len(result["rows"]) == 5 * 2  # methods x seeds
    assert {(r["prior"], r["init"]) for r in rows} >= {("dwp/normal", "filters"), ("det", "xavier")}
    for r in rows:
        assert 0 <= r["acc_ensemble"] <= 1 and 0 <= r["acc_mean"] <= 1
        assert r["steps"] == 3 and r["test_images"] == 40 and r["config_key"] == exp.cfg.key()
        if r["prior"] == "det":
            assert r["log_sigma2_conv1"] is None and r["eval_samples"] == 1
        else:
            assert r["log_sigma2_conv1"] is not None and r["eval_samples"] == 2
        if "dwp" in r["prior"] or r["init"] == "dwp":
            assert "conv1=" in r["vae_sha256"]
    curves = read_rows(out / "init_curves.csv")
    assert {c["init"] for c in curves} == {"default", "xavier", "filters", "dwp"}
    assert sorted({c["step"] for c in curves}) == [0, 2, 4]
    for name in ("kernel_examples", "latent_space", "init_curves", "accuracy_vs_n"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["complete"] and prov["rows"] == 10 and prov["command"] == "test"
    assert prov["config"]["bayes"]["steps"] == 3 and prov["preset"] == "tiny"
    assert set(prov["kernel_vaes"]) == {"conv1", "conv2"}
    assert prov["kernel_vaes"]["conv2"]["held_out"]["num_samples"] == 2
    assert {"kernel_vaes", "prior_grid", "init_experiment"} <= set(prov["stage_seconds"])
    costs = json.loads((out / "init_costs.json").read_text())
    assert costs["layers"]["conv2"]["kernels_drawn"] == 4 * 8
    assert costs["layers"]["conv2"]["vae_bytes"] > 0 and costs["layers"]["conv2"]["bank_bytes"] > 0


def test_an_interrupted_grid_resumes_and_the_vaes_come_from_the_cache(
    fake_world, tmp_path, monkeypatch
):
    out = tmp_path / "run"
    cfg = micro_config(**{"init.enabled": "false", "grid.methods": "normal:xavier,dwp:dwp"})
    first = Experiment(cfg, out, "cpu", verbose=False).prior_grid()
    assert len(first) == 4
    # interrupt: the last row is lost (and a torn half line is left behind)
    lines = (out / "results.csv").read_text().splitlines(keepends=True)
    (out / "results.csv").write_text("".join(lines[:-1]) + lines[-1][:20])
    ran = []
    original = Experiment.run_cell

    def counting(self, method, n, seed, *a):
        ran.append((method, n, seed))
        return original(self, method, n, seed, *a)

    monkeypatch.setattr(Experiment, "run_cell", counting)
    again = Experiment(cfg, out, "cpu", verbose=False)
    rows = again.prior_grid()
    assert len(ran) == 1 and len(rows) == 4
    assert again.stage_loaded["kernel_vaes"] is True  # both VAEs loaded, hash-checked
    # the redone cell equals the lost one (seeded): same accuracy
    lost = next(
        r
        for r in first
        if (r["prior"], r["init"], r["n"], r["seed"])
        == (*parse_method(ran[0][0]), ran[0][1], ran[0][2])
    )
    redone = next(
        r
        for r in rows
        if (r["prior"], r["init"], r["seed"]) == (lost["prior"], lost["init"], lost["seed"])
    )
    assert redone["acc_ensemble"] == lost["acc_ensemble"] and redone["nll"] == lost["nll"]
    # more seeds in the same folder: only the new cells run
    ran.clear()
    more = apply_overrides(cfg, ["grid.split_seeds=[0,1,2]"])
    assert len(Experiment(more, out, "cpu", verbose=False).prior_grid()) == 6 and len(ran) == 2


def test_a_folder_made_with_other_settings_is_refused(fake_world, tmp_path):
    out = tmp_path / "run"
    Experiment(micro_config(), out, "cpu", verbose=False)
    with pytest.raises(ExperimentError, match=r"bayes.steps: 3 -> 4.*new --out"):
        Experiment(micro_config(**{"bayes.steps": 4}), out, "cpu", verbose=False)


def test_a_corrupted_kernel_vae_is_retrained_not_trusted(fake_world, tmp_path):
    cfg = micro_config(**{"init.enabled": "false", "grid.enabled": "false"})
    exp = Experiment(cfg, tmp_path / "a", "cpu", verbose=False)
    exp.kernel_vaes()
    path = exp.vae_path("conv1")
    path.write_bytes(path.read_bytes()[:-10])  # truncated
    again = Experiment(cfg, tmp_path / "a", "cpu", verbose=False)
    again.kernel_vaes()
    assert again.stage_loaded["kernel_vaes"] is False
    assert is_valid_artifact(path)


def test_source_config_is_the_source_nets_preset():
    assert ExperimentConfig.book().source == SourceNetsConfig.book()


def test_find_results_picks_grid_runs_only_largest_first(tmp_path):
    small, big, other = tmp_path / "small", tmp_path / "big", tmp_path / "ablation"
    for folder, k in ((small, 1), (big, 3)):
        folder.mkdir()
        for seed in range(k):
            row = dict.fromkeys(RESULT_COLUMNS, 0) | _row("dwp", "dwp", 50, seed, 0.5)
            ex.append_row(folder / "results.csv", row, RESULT_COLUMNS)
    other.mkdir()
    ex.append_row(other / "results.csv", {"cell": "x", "diff": 1}, ("cell", "diff"))
    assert ex.find_results(tmp_path) == [big, small]
    assert ex.find_results(tmp_path / "nowhere") == []
    rows, prov = ex.load_results(big)
    assert len(rows) == 3 and prov is None
    assert "no provenance.json" in ex.describe_run("big", rows, prov)
    text = ex.describe_run("big", rows, {"command": "c", "wall_seconds": 120, "environment": {}})
    assert "command: c" in text and "last run: 2 min" in text
    short = ex.describe_run("big", rows, {"command": "c", "wall_seconds": 7, "environment": {}})
    assert "last run: 7 s" in short  # a run that only recorded its rows is not "0 min"
    timed = [dict(r, seconds=5400.0) for r in rows]
    assert "3 cells, added up: 4.5 h" in ex.describe_run("big", timed, {"environment": {}})


def test_estimate_cost_counts_steps_and_cells():
    cfg = micro_config(**{"grid.sizes": "[10,20,40]", "source.epochs": 2, "source.n_nets": 3})
    est = ex.estimate_cost(cfg, "cpu", repeats=1, source_images=1000)
    assert est["source_steps"] == 3 * 2 * math.ceil(1000 / cfg.source.batch_size)
    assert est["grid_cells"] == 5 * 3 * 2
    assert set(est["grid_step_seconds"]) == set(cfg.grid.methods)
    assert all(t > 0 for per_n in est["grid_step_seconds"].values() for t in per_n.values())
    assert est["total_seconds"] == pytest.approx(est["source_seconds"] + est["grid_seconds"])
    assert est["bank_bytes_unpruned"] == 4 * 3 * 4 * (49 + 25 * 8)


def test_inits_with_one_seed_differ_in_their_kernels_only(fake_world, tmp_path):
    exp = Experiment(micro_config(), tmp_path / "run", "cpu", verbose=False)
    bank, vaes = exp.kernel_bank(), exp.kernel_vaes()
    nets = {
        name: initialise(FConv(4, 8), ex.make_init(name, bank, vaes), seed=3)
        for name in ex.PIPELINE_INITS  # dwp@released: tests/test_release.py
    }
    heads = [n.fc.weight for n in nets.values()]
    assert all(torch.equal(heads[0], h) for h in heads[1:])
    kernels = [n.conv2.weight for n in nets.values()]
    assert not any(torch.equal(kernels[0], k) for k in kernels[1:])
    # PyTorch's default conv init is a Kaiming-uniform: bounded by 1 / sqrt(fan_in)
    bound = 1 / math.sqrt(4 * 25)
    assert nets["default"].conv2.weight.abs().max() <= bound


def test_grid_workers_give_the_same_rows_as_one_process(tmp_path, monkeypatch):
    """Cells trained in worker processes (spawned: they see the real tiny bank and VAEs through
    the cache, not this test's monkeypatches) equal the cells trained one after another."""
    monkeypatch.setenv("DWP_PROGRESS", "0")
    base = ["init.enabled=false", "grid.split_seeds=[0,1]", "bayes.steps=5", "num_threads=1"]
    rows = {}
    for workers in (0, 2):
        # the workers also send their trained networks back (grid.save_models)
        cfg = ex.config_from(
            "tiny", overrides=[*base, f"grid.workers={workers}", f"grid.save_models={workers > 0}"]
        )
        got = Experiment(cfg, tmp_path / f"w{workers}", "cpu", verbose=False).prior_grid()
        rows[workers] = {(r["prior"], r["init"], r["n"], r["seed"]): r for r in got}
    assert len(rows[0]) == 8 and rows[0].keys() == rows[2].keys()
    assert len(list((tmp_path / "w2" / "models").glob("*.pt"))) == 8
    assert not (tmp_path / "w0" / "models").exists()
    for key, r in rows[0].items():
        assert rows[2][key]["acc_ensemble"] == r["acc_ensemble"], key
        assert rows[2][key]["nll"] == pytest.approx(r["nll"], rel=1e-5), key


def test_reproduce_notmnist_small_trains_the_source_nets_on_the_tarball(
    fake_digits, make_tarball, tmp_path, monkeypatch, capsys
):
    """``reproduce --notmnist small`` (a reader with the real tarball; a small fake of it here):
    without the file the error says where to put it; with it, the source nets train on it and
    the run folder says so."""
    from dwp_lib.data import notmnist

    monkeypatch.setenv("DWP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DWP_OFFLINE", "1")
    monkeypatch.setenv("DWP_PROGRESS", "0")
    out = tmp_path / "run"
    sets = [
        "source.widths=[4,8]",
        "source.n_nets=2",
        "source.epochs=1",
        "source.prune_norms=[0,0]",
        "vae.conv1.arch.hidden=4",
        "vae.conv2.arch.hidden=4",
        "vae.conv1.train.steps=2",
        "vae.conv2.train.steps=2",
        "vae.conv1.eval_samples=2",
        "vae.conv2.eval_samples=2",
        "init.enabled=false",
        "bayes.channels=[4,8]",
        "bayes.steps=2",
        "bayes.eval_samples=2",
        "grid.sizes=[10]",
        "grid.split_seeds=[0]",
        "grid.test_images=40",
        "grid.methods=dwp:dwp",
    ]
    args = ["reproduce", "--preset", "tiny", "--notmnist", "small", "--out", str(out)]
    args += [a for s in sets for a in ("--set", s)]
    tarball = notmnist.tarball_path("small")
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert "notMNIST_small.tar.gz" in err and str(tarball.parent) in err

    make_tarball(tarball, n_fonts=10)
    monkeypatch.setitem(notmnist.SIZES, "small", tarball.stat().st_size)
    assert cli_main(args) == 0
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["config"]["source"]["data_variant"] == "small"
    assert prov["overrides"][0] == "source.data_variant=small"
    data = prov["data"]["source"]
    assert data["label"] == "notMNIST (small, real)"
    assert data["train"]["checksum"] == f"md5:{artifacts.md5_file(tarball)}"
    assert "/small-" in prov["bank"]["file"].replace("\\", "/")  # the nets' folder names it
    assert len(read_rows(out / "results.csv", RESULT_COLUMNS)) == 1

    # a --set that names another variant is refused, not silently preferred
    assert cli_main([*args, "--set", "source.data_variant=synthetic"]) == 2
    assert "name different notMNIST variants" in capsys.readouterr().err


def test_reproduce_without_out_says_so(capsys):
    assert cli_main(["reproduce", "--preset", "tiny"]) == 2
    assert "--out" in capsys.readouterr().err


def test_a_retrained_kernel_vae_is_bit_identical_whatever_ran_before(fake_world, tmp_path):
    exp = Experiment(micro_config(), tmp_path / "run", "cpu", verbose=False)
    first = {k: v.state_dict() for k, v in exp.kernel_vaes().items()}
    path = exp.vae_path("conv1")
    path.write_bytes(path.read_bytes()[:1000])  # a truncated file (a fault mid-write elsewhere)
    torch.rand(1000)  # other work in the same process draws from the global generator
    again = Experiment(micro_config(), tmp_path / "run", "cpu", verbose=False).kernel_vaes()
    for layer, state in first.items():
        for key, value in state.items():
            assert torch.equal(again[layer].state_dict()[key], value), (layer, key)


@pytest.mark.parametrize("path", sorted((ex.results_dir().parent / "configs").glob("*.toml")))
def test_committed_config_files_resolve(path):
    """Every config under configs/ builds a valid experiment (the commands in results/ use them)."""
    cfg = config_from(None, path)
    for m in cfg.grid.methods:
        parse_method(m)
    assert cfg.name == path.stem


def test_a_second_writer_of_a_run_folder_is_refused(fake_world, tmp_path):
    from filelock import FileLock

    out = tmp_path / "run"
    cfg = micro_config(**{"grid.methods": "normal:xavier", "init.enabled": "false"})
    exp = Experiment(cfg, out, "cpu", verbose=False)
    held = FileLock(str(out / ".lock"))
    held.acquire()  # another process writing (the lock is per file handle, like a second process)
    (out / ".lock.owner").write_text("process 4242 on somewhere\n")
    try:
        with pytest.raises(ExperimentError, match="being written by process 4242"):
            exp.prior_grid()
    finally:
        held.release()
    assert not (out / "results.csv").exists()
    rows = exp.prior_grid()  # free again: runs, and a rerun adds nothing
    assert len(rows) == 2 and len(Experiment(cfg, out, "cpu", verbose=False).prior_grid()) == 2
    assert len(read_rows(out / "results.csv")) == 2


def test_a_folder_from_before_a_new_setting_resumes_but_a_damaged_config_is_refused(
    fake_world, tmp_path
):
    out = tmp_path / "run"
    cfg = micro_config(**{"grid.methods": "normal:xavier", "init.enabled": "false"})
    Experiment(cfg, out, "cpu", verbose=False).prior_grid()
    old = json.loads((out / "config.json").read_text())
    for layer in ("conv1", "conv2"):  # as written before the layer lists existed
        for field in ("encoder", "decoder", "variance", "w_var_floor"):
            del old["vae"][layer]["arch"][field]
    (out / "config.json").write_text(json.dumps(old))
    assert len(Experiment(cfg, out, "cpu", verbose=False).prior_grid()) == 2
    # a new field set to something else than its preset value is a different run
    (out / "config.json").write_text(json.dumps(old))
    other = apply_overrides(cfg, ["vae.conv1.arch.variance=softplus"])
    with pytest.raises(ExperimentError, match="other settings.*variance"):
        Experiment(other, out, "cpu", verbose=False)
    (out / "config.json").write_text('{"name": ')
    with pytest.raises(ExperimentError, match="config.json is damaged"):
        Experiment(cfg, out, "cpu", verbose=False)


def test_a_grid_worker_ends_when_its_parent_is_killed(tmp_path):
    """The parent runs a worker that watches it, then dies without cleaning up (as on SIGKILL or
    SIGTERM): the worker must end on its own, not compute on as an orphan."""
    import subprocess
    import sys
    import time

    script = tmp_path / "parent.py"
    pidfile = tmp_path / "worker.pid"
    script.write_text(
        "import multiprocessing as mp, os, sys, time\n"
        "def work(path):\n"
        "    from dwp_lib.device import exit_with_parent\n"
        "    exit_with_parent(os.getppid(), every=0.1)\n"
        "    open(path, 'w').write(str(os.getpid()))\n"
        "    time.sleep(60)\n"
        "if __name__ == '__main__':\n"
        "    p = mp.get_context('spawn').Process(target=work, args=(sys.argv[1],))\n"
        "    p.start()\n"
        "    while not os.path.exists(sys.argv[1]): time.sleep(0.05)\n"
        "    time.sleep(0.3)\n"
        "    os._exit(0)\n"
    )
    subprocess.run([sys.executable, str(script), str(pidfile)], timeout=60, check=True)
    pid = int(pidfile.read_text())
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, 9)
    pytest.fail("the worker outlived its parent")


def test_a_rescaled_bank_feeds_the_vae_scaled_slices_and_keeps_old_keys(fake_world, tmp_path):
    base = micro_config()
    scaled = apply_overrides(base, ["vae.conv1.slice_scale=2.5"])
    assert apply_overrides(base, ["vae.conv1.slice_scale=1.0"]).key() == base.key()
    assert scaled.key() != base.key()
    a = Experiment(base, tmp_path / "a", "cpu", verbose=False)
    b = Experiment(scaled, tmp_path / "b", "cpu", verbose=False)
    for split in ("train", "test"):
        assert torch.equal(b.vae_slices("conv1", split), 2.5 * a.vae_slices("conv1", split))
        assert torch.equal(b.vae_slices("conv2", split), a.vae_slices("conv2", split))
    assert a.vae_path("conv1") != b.vae_path("conv1") and a.vae_path("conv2") == b.vae_path("conv2")
    with pytest.raises(ExperimentError, match="slice_scale=0.0 must be > 0"):
        apply_overrides(base, ["vae.conv1.slice_scale=0"])


def test_the_figures_put_each_vae_beside_the_slices_it_was_fitted_to(
    fake_world, tmp_path, monkeypatch
):
    """A VAE fitted to rescaled (or released) slices is drawn beside those, not this bank's."""
    from dwp_lib import plots

    seen = {}

    def spy(name):
        def draw(bank, vaes, **kw):
            seen[name] = {layer: bank.slices(layer, "train") for layer in vaes}
            return plots.plot_image_samples(torch.zeros(1, 1, 28, 28))

        return draw

    monkeypatch.setattr(plots, "plot_kernel_examples", spy("examples"))
    monkeypatch.setattr(plots, "plot_latent_space", spy("latent"))
    cfg = apply_overrides(micro_config(), ["vae.conv1.slice_scale=2.5"])
    exp = Experiment(cfg, tmp_path / "run", "cpu", verbose=False)
    exp.write_figures(curves=[], rows=[])
    bank = exp.kernel_bank()
    for name in ("examples", "latent"):
        assert torch.equal(seen[name]["conv1"], 2.5 * bank.slices("conv1", "train"))
        assert torch.equal(seen[name]["conv2"], bank.slices("conv2", "train"))


# --------------------------------------------------------------------------------------------
# Behaviour pinned across refactoring
# --------------------------------------------------------------------------------------------

GOLDEN = os.path.join(os.path.dirname(__file__), os.pardir, "golden", "micro_pipeline.json")
UNTIMED = [c for c in RESULT_COLUMNS if c not in ("seconds", "device", "threads")]


def _untimed_csv(path, columns) -> list[dict]:
    return [{c: r[c] for c in columns} for r in read_rows(path, None)]


def test_the_seeded_micro_pipeline_reproduces_its_committed_rows(fake_world, tmp_path):
    """The whole pipeline (bank -> kernel VAEs -> init experiment -> prior grid), seeded, gives
    the rows committed in ``tests/golden/micro_pipeline.json`` - bit for bit (the files' hashes
    too) on the CPU model and torch that wrote them, to 1e-4 elsewhere (other kernels round
    differently, so other hashes). A refactor that changes
    what is computed, the config key or the files' hashes fails here. After an intended change:
    ``DWP_WRITE_GOLDEN=1 pytest tests/test_experiment.py -k committed_rows`` rewrites the file
    (and the commit says why)."""
    out = tmp_path / "run"
    exp = Experiment(micro_config(), out, "cpu", verbose=False, command="test")
    exp.run()
    got = {
        "results": _untimed_csv(out / "results.csv", UNTIMED),
        "init_curves": _untimed_csv(
            out / "init_curves.csv", ["init", "seed", "step", "test_acc", "train_loss"]
        ),
    }
    here = {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu": artifacts.cpu_model(),  # two AVX512 CPUs (Intel, AMD) can round differently
    }
    if os.environ.get("DWP_WRITE_GOLDEN"):
        os.makedirs(os.path.dirname(GOLDEN), exist_ok=True)
        with open(GOLDEN, "w") as f:
            json.dump({**here, **got}, f, indent=1, sort_keys=True)
            f.write("\n")
    with open(GOLDEN) as f:
        want = json.load(f)
    exact = all(want[k] == v for k, v in here.items())
    for part in ("results", "init_curves"):
        assert len(got[part]) == len(want[part]), part
        for g, w in zip(got[part], want[part], strict=True):
            assert g.keys() == w.keys(), part
            for col, value in w.items():
                if not exact and col.endswith("_sha256"):
                    continue  # the files' bits differ where the numbers round differently
                if exact or not isinstance(value, float):
                    assert g[col] == value, (part, col, w)
                else:
                    assert g[col] == pytest.approx(value, rel=1e-4, abs=1e-6), (part, col, w)


def test_every_committed_results_command_still_resolves_to_a_config_its_folder_accepts(tmp_path):
    """The ``reproduce`` command in each ``results/*/README.md`` parses, builds its config, and
    that config is accepted by (a copy of) the folder it wrote: resuming it would add cells, not
    be refused for other settings."""
    import glob
    import shlex
    import shutil
    from pathlib import Path

    from dwp_lib.cli import build_parser
    from dwp_lib.experiment.folder import RunFolder

    root = Path(__file__).resolve().parents[2]
    checked = 0
    for readme in sorted(glob.glob(str(root / "results" / "*" / "README.md"))):
        text = Path(readme).read_text().replace("\\\n", " ")
        for line in (raw.strip() for raw in text.splitlines()):
            if not line.startswith("python -m dwp_lib reproduce") or "<" in line:
                continue
            if "--estimate" in line:
                continue
            args = build_parser().parse_args(shlex.split(line)[3:])
            cfg = config_from(args.preset, args.config, args.set or [], args.name)
            copy = tmp_path / f"{checked}-{Path(args.out).name}"
            shutil.copytree(root / args.out, copy)
            RunFolder(copy).check_settings(cfg)
            checked += 1
    assert checked >= 5


def test_every_committed_results_folder_is_in_the_readme_table():
    """A reader finds each ``results/*/`` folder in the README's table of committed runs, and
    each has its own README (the exact command) or, for the ablation, its table and findings."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    for folder in sorted(p for p in (root / "results").iterdir() if p.is_dir()):
        assert f"| `results/{folder.name}/` |" in readme, folder.name
        assert (folder / "README.md").exists() or (folder / "FINDINGS.md").exists(), folder.name


def test_a_run_folders_record_counts_each_row_as_it_lands(fake_world, tmp_path):
    """provenance.json follows the rows one by one, so a run killed between two cells leaves a
    record of how far it got (not the zero rows it had at the start)."""
    exp = Experiment(micro_config(**{"init.enabled": "false"}), tmp_path / "run", "cpu")
    exp.kernel_bank()
    exp.write_provenance()
    seen = []
    real = exp.write_provenance
    exp.write_provenance = lambda *a, **k: seen.append(
        json.loads(real(*a, **k).read_text())["rows"]
    )
    rows = exp.prior_grid()
    assert seen == list(range(1, len(rows) + 1))


def test_saved_cell_networks_give_back_their_rows_accuracy(fake_world, tmp_path):
    """grid.save_models writes each cell's trained network; loaded again, it gives the row's
    ensemble accuracy to the bit. The option changes neither the config key nor the rows."""
    import torch

    from dwp_lib.bayes import ensemble_accuracy
    from dwp_lib.experiment import cell_model_path, load_cell_model

    cfg = micro_config(**{"grid.save_models": "true", "init.enabled": "false"})
    assert cfg.key() == micro_config(**{"init.enabled": "false"}).key()
    exp = Experiment(cfg, tmp_path / "run", "cpu", verbose=False)
    rows = exp.prior_grid()
    assert len(rows) == 10 and all("_state_dict" not in r for r in rows)
    xt, yt = exp._test_xy()
    for r in rows:
        method = f"{r['prior']}:{r['init']}"
        assert cell_model_path(tmp_path / "run", r["prior"], r["init"], 10, r["seed"]).exists()
        model, saved = load_cell_model(cfg, tmp_path / "run", method, 10, r["seed"])
        assert saved == r
        torch.manual_seed(r["seed"])  # as the cell seeds its evaluation
        acc = ensemble_accuracy(model, xt, yt, r["eval_samples"], cfg.bayes.eval_batch_size)
        assert acc == pytest.approx(r["acc_ensemble"], abs=1e-6), method
    with pytest.raises(ex.ExperimentError, match="grid.save_models=true"):
        load_cell_model(cfg, tmp_path / "run", "normal:xavier", 10, 7)
    other = micro_config(**{"bayes.lr": "0.5"})
    with pytest.raises(ex.ExperimentError, match="pass the run's own config"):
        load_cell_model(other, tmp_path / "run", "normal:xavier", 10, 0)
