"""The bank fingerprint (studies.bank_fingerprint): distances with known answers, the rank
correlation on a made-up table, the refusals, and the committed folder up to date."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import pytest

from dwp_lib.experiment import ExperimentError
from studies import RESULTS_DIR
from studies.bank_fingerprint import fingerprint as fp
from studies.bank_fingerprint.__main__ import main

FOLDER = RESULTS_DIR / "bank-fingerprint"
COLUMNS = ("bank", "layer", "slices", *fp.NUMBERS, "kept_fraction")


def stats_row(bank: str, layer: str, scale: float = 1.0, kept: float | None = 0.5) -> dict:
    """A made-up stats.csv row; ``scale`` moves every number."""
    numbers = dict(zip(fp.NUMBERS, (0.2, 0.3, 0.1, 0.5, 0.4), strict=True))
    return {
        "bank": bank,
        "layer": layer,
        "slices": 100,
        **{k: v * scale for k, v in numbers.items()},
        "kept_fraction": "" if kept is None else kept,
    }


def write_stats(root: Path, folder: str, rows: list[dict]) -> None:
    (root / folder).mkdir(parents=True, exist_ok=True)
    with open(root / folder / "stats.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(COLUMNS))
        w.writeheader()
        w.writerows(rows)


def world(root: Path, mine_scale: float = 1.5) -> None:
    """Two stats folders: released, Xavier and one bank of ours, the reference rows in both."""
    ref = [
        stats_row(name, layer, scale, None)
        for name, scale in ((fp.RELEASED, 1.0), (fp.XAVIER, 2.0))
        for layer in ("conv1", "conv2")
    ]
    mine = [stats_row("ours (a)", layer, mine_scale) for layer in ("conv1", "conv2")]
    write_stats(root, "one", ref + mine)
    write_stats(root, "two", ref)


def prints(root: Path, folders=("one", "two"), renamed=None) -> dict:
    banks = fp.read_banks(root, folders, renamed or {})
    live = {layer: 0.1 for layer in ("conv1", "conv2")}
    fp.with_live(banks, {fp.RELEASED: live, fp.XAVIER: {k: 0.3 for k in live}})
    return {name: fp.fingerprint(b) for name, b in banks.items()}


def test_the_released_bank_is_at_0_and_noise_at_1_per_feature(tmp_path):
    world(tmp_path)
    p = prints(tmp_path)
    rel, noise = p[fp.RELEASED], p[fp.XAVIER]
    zero, one = fp.units(rel, rel, noise), fp.units(noise, rel, noise)
    assert all(v == 0 for layer in zero.values() for v in layer.values())
    assert all(v == pytest.approx(1) for layer in one.values() for v in layer.values())
    assert fp.distance(zero) == 0 and fp.distance(one) == pytest.approx(1)
    assert len(one["conv1"]) == len(fp.FEATURES) == 6 and set(one) == {"conv1", "conv2"}
    mine = fp.units(p["ours (a)"], rel, noise)
    # 1.5x the released numbers, noise 2x: half way on every number, the norms on a log scale
    assert mine["conv1"]["dc_share"] == pytest.approx(0.5)
    assert mine["conv2"]["log_median_norm"] == pytest.approx(math.log(1.5) / math.log(2))
    assert mine["conv1"]["live"] == pytest.approx(2.0)  # kept 0.5, released 0.1, noise 0.3
    assert fp.distance(mine, ("live",)) < fp.distance(mine)


def test_the_committed_reference_rows_give_0_and_1():
    banks = fp.read_banks(RESULTS_DIR)
    fp.with_live(
        banks, {fp.RELEASED: {"conv1": 0.1, "conv2": 0.2}, fp.XAVIER: {"conv1": 0.0, "conv2": 0.5}}
    )
    rel, noise = fp.fingerprint(banks[fp.RELEASED]), fp.fingerprint(banks[fp.XAVIER])
    assert fp.distance(fp.units(rel, rel, noise)) == 0
    assert fp.distance(fp.units(noise, rel, noise)) == pytest.approx(1)


def test_spearman_and_its_exact_p_on_a_made_up_table():
    table = [(1.0, 2.0), (2.0, 1.0), (3.0, 4.0), (4.0, 3.0), (5.0, 5.0)]
    c = fp.rank_correlation(table)
    assert c["n"] == 5 and c["rho"] == pytest.approx(1 - 6 * 4 / (5 * 24))  # 0.8
    perfect = fp.rank_correlation([(0.0, 3.0), (1.0, 2.0), (2.0, 1.0)])
    assert perfect["rho"] == pytest.approx(-1) and perfect["p"] == pytest.approx(2 / 6)
    assert fp.ranks([3.0, 1.0, 3.0]) == [1.5, 0.0, 1.5]
    assert fp.permutation_p([1, 2], [1, 2]) is None


def test_a_bank_missing_or_two_banks_under_one_name_are_refused(tmp_path):
    world(tmp_path)
    write_stats(tmp_path, "three", [stats_row("ours (a)", layer, 1.7) for layer in ("conv1",)])
    with pytest.raises(ExperimentError, match=r"three/stats.csv: its conv1 row of 'ours \(a\)'"):
        fp.read_banks(tmp_path, ("one", "three"), {})
    renamed = {("three", "ours (a)"): "ours (a), rebuilt"}
    with pytest.raises(ExperimentError, match=r"ours \(a\), rebuilt: rows of \['conv1'\]"):
        fp.read_banks(tmp_path, ("one", "three"), renamed)
    write_stats(
        tmp_path, "four", [stats_row("ours (a)", layer, 1.5 + 1e-9) for layer in ("conv1",)]
    )
    assert fp.read_banks(tmp_path, ("one", "four"), {})["ours (a)"].folders == ["one", "four"]
    write_stats(tmp_path, "alone", [stats_row("ours (a)", "conv1"), stats_row("ours (a)", "conv2")])
    with pytest.raises(ExperimentError, match="no 'released' rows"):
        fp.read_banks(tmp_path, ("alone",), {})
    with pytest.raises(ExperimentError, match=r"missing/stats.csv does not exist"):
        fp.read_banks(tmp_path, ("one", "missing"), {})
    with pytest.raises(ExperimentError, match=r"VALIDATION names 'ours \(book\)', which no"):
        fp.validation(RESULTS_DIR, fp.read_banks(tmp_path, ("one",), {}))


def test_the_committed_folder_is_up_to_date(capsys):
    assert main(["--out", str(FOLDER), "--check"]) == 0, capsys.readouterr().err
    assert "up to date" in capsys.readouterr().out


def test_a_stale_folder_fails_the_check_and_the_cache_need_not_hold_the_release(
    tmp_path, monkeypatch, capsys
):
    copy = tmp_path / "copy"
    shutil.copytree(FOLDER, copy)
    monkeypatch.setenv("DWP_CACHE", str(tmp_path / "empty-cache"))  # the release is not there
    assert main(["--out", str(copy), "--check"]) == 0
    assert "not in the cache" in capsys.readouterr().out
    md = copy / "fingerprint.md"
    md.write_text(md.read_text().replace("rho = ", "rho = 0"))
    assert main(["--out", str(copy), "--check"]) == 1
    assert "fingerprint.md" in capsys.readouterr().err
