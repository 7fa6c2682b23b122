"""The sparse-regime curve (studies.sparse_regime) on FConv(4, 8), 2 epochs, 300 random images."""

from __future__ import annotations

import json

import pytest
import torch
from support import fake_data

from dwp_lib import artifacts
from dwp_lib import release as rel
from dwp_lib.nets import FConv
from dwp_lib.source_nets import SourceNetsConfig, latest_checkpoint
from studies.sparse_regime import curve, figure
from studies.sparse_regime.__main__ import main

ARGS = ["--widths", "4", "8", "--epochs", "2", "--notmnist", "synthetic"]


@pytest.fixture
def world(monkeypatch, tmp_path):
    """A cache in ``tmp_path``, no network, and 300 + 100 random images for the letters."""
    monkeypatch.setenv("DWP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DWP_OFFLINE", "1")
    monkeypatch.setenv("DWP_PROGRESS", "0")
    data = fake_data(300, 100)
    monkeypatch.setattr(curve, "load_source_data", lambda cfg: data)
    return tmp_path


def run(out, *extra):
    return main(["curve", "--out", str(out), *ARGS, *extra])


def numbers(rows):
    """The rows without their clock (the only column a rerun may change)."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_a_row_per_epoch_measured_on_the_net(world):
    out = world / "curve"
    assert run(out) == 0
    rows = curve.read_rows(out)
    assert [(r["epoch"], r["step"]) for r in rows] == [("1", "2"), ("2", "4")]  # 300 / 256
    cfg = curve.source_config((4, 8), 2, "synthetic")
    assert (cfg.batch_size, cfg.lr, cfg.l2) == (256, 1e-3, 1e-3)  # the authors' recipe
    # the last row is the trained net's: its checkpoint, measured again
    net = FConv(4, 8)
    net.load_state_dict(latest_checkpoint(curve.checkpoint_path(out, cfg), cfg, 0)[0]["net"])
    again = curve.slice_measures(net, cfg)
    assert {k: float(rows[-1][k]) for k in again} == pytest.approx(again, rel=1e-12)
    for layer, slices in (("conv1", 4), ("conv2", 32)):
        live = int(rows[-1][f"{layer}_live"])
        assert float(rows[-1][f"{layer}_live_fraction"]) == live / slices
    assert 0 < float(rows[0]["seconds"]) <= float(rows[1]["seconds"])
    prov = json.loads((out / curve.PROVENANCE).read_text())
    assert prov["settings"] == curve.settings(cfg) and prov["config"]["widths"] == [4, 8]
    assert prov["data"] == {"label": "random prototypes (test data)"}
    (run_,) = prov["runs"]
    assert run_["command"] == "python -m studies.sparse_regime curve --out " + " ".join(
        [str(out), *ARGS]
    )
    assert run_["from_epoch"] == run_["rows_before"] == 0 and run_["threads"] == 1
    assert {"cpu", "torch", "dwp_lib"} <= set(run_["environment"]) and "commit" in run_["git"]


class Stop(Exception):
    """An interruption (a kill) at a chosen place."""


@pytest.mark.parametrize("where", ["before the second row", "before the first checkpoint"])
def test_a_resumed_folder_has_each_row_once_with_the_same_numbers(world, monkeypatch, where):
    whole = world / "whole"
    assert run(whole) == 0
    out = world / "resumed"
    with monkeypatch.context() as m:
        if where == "before the second row":
            write, calls = curve.write_rows, []

            def stop_second(folder, rows):
                calls.append(1)
                if len(calls) == 2:
                    raise Stop
                write(folder, rows)

            m.setattr(curve, "write_rows", stop_second)
        else:  # the row is written, the epoch's checkpoint is not: the epoch is trained again

            def stop(*a, **k):
                raise Stop

            m.setattr(artifacts, "save_artifact", stop)
        with pytest.raises(Stop):
            run(out)
    assert len(curve.read_rows(out)) == 1
    assert run(out) == 0
    rows = curve.read_rows(out)
    assert numbers(rows) == numbers(curve.read_rows(whole))
    runs = json.loads((out / curve.PROVENANCE).read_text())["runs"]
    assert [(r["rows_before"], r["from_epoch"]) for r in runs] == [
        (0, 0),
        (1, 1 if where.endswith("row") else 0),
    ]
    assert run(out) == 0  # a finished folder: nothing trained, nothing added
    assert curve.read_rows(out) == rows


def test_a_folder_of_other_settings_is_refused(world, capsys):
    out = world / "curve"
    assert run(out) == 0
    before = (out / curve.CURVE).read_bytes()
    capsys.readouterr()
    assert main(["curve", "--out", str(out), *ARGS, "--widths", "4", "6"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "widths [4, 8] there, [4, 6] here" in err
    assert (out / curve.CURVE).read_bytes() == before
    assert main(["figure", "--out", str(world / "empty")]) == 2
    assert "run `python -m studies.sparse_regime curve" in capsys.readouterr().err


def test_the_figure_without_the_released_banks(world, capsys):
    out = world / "curve"
    assert run(out) == 0
    assert figure.released_reference() is None  # not in the cache: nothing is fetched
    assert main(["figure", "--out", str(out)]) == 0
    assert "no reference lines" in capsys.readouterr().out
    assert (out / figure.FIGURE).read_bytes().startswith(b"\x89PNG")


def test_the_figure_with_the_released_banks(fake_release, world, capsys):
    _, files = fake_release
    ref = figure.released_reference()
    paper = SourceNetsConfig.paper()
    c1, c2 = paper.widths
    # the fake's banks: 30 slices a file, every one of them above the thresholds
    assert ref["conv1"]["live"] == 60 and ref["conv1"]["splits"] == ["test", "train"]
    assert ref["conv1"]["live_fraction"] == pytest.approx(60 / (paper.n_nets * c1))
    assert ref["conv2"]["live"] == 30 and ref["conv2"]["splits"] == ["test"]
    produced = paper.n_nets * c1 * c2 * paper.test_fraction  # of which the test file is a share
    assert ref["conv2"]["live_fraction"] == pytest.approx(30 / produced)
    bank = rel.load_released_bank()
    norms = torch.cat(list(bank["conv1"].values())).flatten(1).norm(dim=1).double()
    assert ref["conv1"]["live_median_norm"] == pytest.approx(float(norms.quantile(0.5)))
    out = world / "curve"
    assert run(out) == 0
    assert main(["figure", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "released conv1" in said and "released conv2" in said
    assert (out / figure.FIGURE).exists()


def test_a_checkpoint_ahead_of_the_rows_is_trained_again(world, capsys):
    out = world / "curve"
    assert run(out) == 0
    rows = curve.read_rows(out)
    (out / curve.CURVE).unlink()  # the rows are gone, the checkpoint of both epochs is not
    assert run(out) == 0
    assert "training from the start again" in capsys.readouterr().out
    assert numbers(curve.read_rows(out)) == numbers(rows)
