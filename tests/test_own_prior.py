"""The table of the search for a prior of our own: read from run folders, never typed."""

from __future__ import annotations

from pathlib import Path

import pytest

from dwp_lib import own_prior
from dwp_lib.cli import main
from dwp_lib.experiment import ExperimentError
from dwp_lib.experiment.results import RESULT_COLUMNS, append_row, repo_results_dir

FINDINGS = repo_results_dir() / "own-prior-FINDINGS.md"


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


def test_a_row_run_at_another_setting_is_refused(root):
    write(root, "other", [row("dwp", "dwp", 0, 0.7, steps=2000)])
    cells = (*CELLS, own_prior.PriorCell("other", "other", "dwp:dwp"))
    with pytest.raises(ExperimentError, match=r"not run at the authors' setting.*'steps': 2000"):
        own_prior.table_rows(root, cells)


def test_two_rows_for_one_seed_are_refused(root):
    write(root, "mine", [row("dwp", "dwp", 1, 0.5)])
    with pytest.raises(ExperimentError, match="two rows of dwp:dwp for split seed 1"):
        own_prior.table_rows(root, CELLS)


def test_update_writes_between_the_markers_and_check_sees_a_stale_table(root, tmp_path, capsys):
    note = tmp_path / "note.md"
    note.write_text(f"# Note\n\nbefore\n\n{own_prior.BEGIN}\nold table\n{own_prior.END}\n\nafter\n")
    assert main(["own-prior", "--results", str(root), "--check", str(note)]) == 1
    assert "is not the one the committed runs give" in capsys.readouterr().err
    assert main(["own-prior", "--results", str(root), "--update", str(note)]) == 0
    text = note.read_text()
    assert "old table" not in text and text.startswith("# Note\n\nbefore\n\n")
    assert text.endswith(f"{own_prior.END}\n\nafter\n") and "| N(0, 1), Xavier |" in text
    assert main(["own-prior", "--results", str(root), "--check", str(note)]) == 0
    note.write_text("no markers here\n")
    assert main(["own-prior", "--results", str(root), "--update", str(note)]) == 2
    assert "needs one pair of markers" in capsys.readouterr().err


def test_the_findings_table_is_the_one_the_committed_runs_give():
    """results/own-prior-FINDINGS.md's table against the committed results/ folders."""
    if not FINDINGS.exists():
        pytest.skip("no results/ in this installation (a plain pip install)")
    assert main(["own-prior", "--check", str(FINDINGS)]) == 0


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
