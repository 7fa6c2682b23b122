"""The short setting's validation: pairing by seed and by VAE hashes, the three criteria, the
table's staleness check."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from dwp_lib.experiment import ExperimentError
from dwp_lib.experiment.results import RESULT_COLUMNS, append_row
from studies.short_setting import validation as v
from studies.short_setting.__main__ import main


def row(method: str, seed: int, acc: float, bank: str = "b1", vae: str = "v1", **extra) -> dict:
    prior, init = method.split(":")
    base = dict.fromkeys(RESULT_COLUMNS, "")
    base.update(experiment="x", prior=prior, init=init, n=50, seed=seed, acc_ensemble=acc,
                acc_mean=acc, seconds=60.0, kl=10.0, nll=1.0, bank_sha256=bank,
                vae_sha256=vae)  # fmt: skip
    base.update(extra)
    return base


def world(short_gain: float, ours_short: float, ours_auth: float = -0.25, seeds=range(5)):
    short, ref = [], []
    for s in seeds:
        short += [row("normal:xavier", s, 0.70), row("normal:dwp@released", s, 0.69),
                  row("dwp@released:dwp@released", s, 0.70 + short_gain),
                  row("dwp:dwp", s, 0.70 + ours_short)]  # fmt: skip
        ref += [row("normal:xavier", s, 0.72), row("normal:dwp@released", s, 0.71),
                row("dwp@released:dwp@released", s, 0.79),
                row("dwp:dwp", s, 0.72 + ours_auth)]  # fmt: skip
    return short, ref


def compare(short, ref, name):
    """The comparison with only the priors this world has as the required ones."""
    return v.compare(short, ref, name, required=(), elsewhere=())


def test_a_faithful_short_setting_qualifies():
    short, ref = world(0.07, -0.20)
    s = compare(short, ref, "good")
    assert s.gain_wins == 5 and s.rank_correlation == pytest.approx(1.0)
    ours = next(line for line in s.lines if line.method == "dwp:dwp")
    assert ours.short_diff == pytest.approx(-20.0) and ours.authors_diff == pytest.approx(-25.0)
    assert ours.sign_kept and ours.size_kept and s.verdict() == "qualifies"


def test_a_setting_that_forgives_a_bad_prior_does_not_qualify():
    s = compare(*world(0.07, -0.04), "forgiving")
    ours = next(line for line in s.lines if line.method == "dwp:dwp")
    assert ours.sign_kept and ours.size_kept is False
    assert "shrinks below half" in s.verdict()


def test_a_sign_flips_only_where_a_setting_resolves_it():
    """A difference within noise at both settings has no sign to keep; one resolved flips."""
    short, ref = world(0.07, -0.20)
    wobble = [+0.01, -0.01, +0.012, -0.008, +0.004]  # N(0, 1) from the released init: noise
    short = [dict(r, acc_ensemble=0.70 - w) if r["prior"] == "normal" and r["init"] != "xavier" else r
             for r, w in zip(short, [w for w in wobble for _ in range(4)], strict=True)]  # fmt: skip
    ref = [dict(r, acc_ensemble=0.72 + w) if r["prior"] == "normal" and r["init"] != "xavier" else r
           for r, w in zip(ref, [w for w in wobble for _ in range(4)], strict=True)]  # fmt: skip
    s = compare(short, ref, "noisy")
    line = next(x for x in s.lines if x.method == "normal:dwp@released")
    assert line.short_diff == pytest.approx(-0.16) and line.authors_diff == pytest.approx(0.16)
    assert line.sign_kept is None and line.within_noise and s.verdict() == "qualifies"
    assert "flips within noise (2 SE: " in v.markdown([s])
    # the same flip, resolved at the authors' setting (every seed +3 points), counts
    ref = [dict(r, acc_ensemble=0.75) if r["prior"] == "normal" and r["init"] != "xavier" else r
           for r in ref]  # fmt: skip
    line = next(x for x in compare(short, ref, "flip").lines if x.method == "normal:dwp@released")
    assert line.sign_kept is False and not line.within_noise
    assert "a prior's sign flips" in compare(short, ref, "flip").verdict()
    assert not v.resolved(5.0, None) and v.resolved(-2.0, 1.0) and not v.resolved(1.9, 1.0)


def test_too_few_seeds_and_a_small_gain_are_named():
    assert "3 of 5 seeds" in compare(*world(0.07, -0.2, seeds=range(3)), "few").verdict()
    assert "on 0 of 5 seeds" in compare(*world(0.02, -0.2), "small").verdict()


def test_a_screen_that_can_no_longer_reach_four_seeds_says_so():
    short, ref = world(0.07, -0.2, seeds=range(3))
    short = [dict(r, acc_ensemble=0.72) if r["prior"] == "dwp@released" and r["seed"] < 2 else r
             for r in short]  # fmt: skip
    why = compare(short, ref, "screen").reasons()
    assert why[:2] == ["3 of 5 seeds", "released gain under 5 points on 2 of 3 seeds run, so >= 5 on at most 3 of 5"]  # fmt: skip
    one = [dict(r, acc_ensemble=0.72) if r["prior"] == "dwp@released" and r["seed"] == 0 else r
           for r in world(0.07, -0.2, seeds=range(3))[0]]  # fmt: skip
    assert compare(short, ref, "screen").verdict().startswith("cannot qualify: 3 of 5 seeds;")
    assert not any("at most" in w for w in compare(one, ref, "screen").reasons())
    assert compare(one, ref, "screen").verdict().startswith("not yet: ")
    assert compare(*world(0.02, -0.2), "small").verdict().startswith("cannot qualify: ")


def test_rows_whose_vaes_differ_are_not_paired():
    short, ref = world(0.07, -0.20)
    short = [dict(r, vae_sha256="other") if r["prior"] == "dwp" else r for r in short]
    ours = next(line for line in compare(short, ref, "rebuilt").lines if line.method == "dwp:dwp")
    assert ours.seeds == [] and ours.unpaired == [0, 1, 2, 3, 4] and ours.short_diff is None
    assert (
        "not paired with the authors' setting (other VAEs): dwp:dwp"
        in compare(short, ref, "rebuilt").verdict()
    )


def test_a_prior_rerun_with_other_vaes_pairs_with_its_own_rows():
    short, ref = world(0.07, -0.20)
    short = [dict(r, vae_sha256="here") if r["prior"] == "dwp" else r for r in short]
    # the authors' setting holds our prior twice: built on another host (v1) and rerun here
    ref += [dict(r, vae_sha256="here", acc_ensemble=0.40) for r in ref if r["prior"] == "dwp"]
    ours = next(line for line in compare(short, ref, "rerun").lines if line.method == "dwp:dwp")
    assert ours.seeds == [0, 1, 2, 3, 4] and ours.unpaired == []
    assert ours.authors_diff == pytest.approx(-32.0)


def test_a_mixed_layer_prior_is_keyed_by_our_layers_bits():
    """A prior with the released VAE on one layer and ours on the other pairs by our bits."""
    mixed = row("dwp@released/dwp:dwp@released", 0, 0.6, bank="here", vae="ours")
    assert v.vae_key(mixed) == "ours"
    assert v.vae_key(row("dwp/dwp@released:dwp@released", 0, 0.7)) == "v1"
    assert v.vae_key(row("dwp@released:xavier", 0, 0.6)) == "released"
    assert v.vae_key(row("normal:xavier", 0, 0.7)) == "-"
    # the same VAEs from a bank file written by another version of the code: the same prior
    assert v.vae_key(row("dwp:dwp", 0, 0.6, bank="old")) == v.vae_key(row("dwp:dwp", 0, 0.6))


def test_priors_not_run_at_the_setting_are_named():
    s = v.compare(*world(0.07, -0.20), "partial", required=("dwp:dwp", "dwp/dwp@released:x"),
                  elsewhere=("a line on another bank",))  # fmt: skip
    assert s.missing == ["dwp/dwp@released:x", "a line on another bank"]
    assert "not run: dwp/dwp@released:x, a line on another bank" in s.verdict()


def test_spearman_on_known_ranks():
    assert v.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert v.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(v.spearman([1, 2], [1, 2]))


def test_the_note_is_written_checked_and_refused_without_rows(tmp_path):
    short, ref = world(0.07, -0.20)
    (tmp_path / "released-authors-setting").mkdir()
    (tmp_path / "short-setting-search" / "s1").mkdir(parents=True)
    for r in ref:
        append_row(tmp_path / "released-authors-setting" / "results.csv", r, RESULT_COLUMNS)
    note = tmp_path / "note.md"
    note.write_text(f"# Note\n\n{v.BEGIN}\n{v.END}\n")
    args = ["--results", str(tmp_path)]
    assert main([*args, "--update", str(note)]) == 2  # no candidate setting yet
    for r in short:
        append_row(tmp_path / "short-setting-search" / "s1" / "results.csv", r, RESULT_COLUMNS)
    assert main([*args, "--check", str(note)]) == 1
    assert main([*args, "--update", str(note)]) == 0
    assert main([*args, "--check", str(note)]) == 0
    assert "| s1 | 5 |" in note.read_text() and "not run: dwp@released:xavier" in note.read_text()
    with pytest.raises(ExperimentError, match="no normal:xavier"):
        v.compare([r for r in short if r["init"] != "xavier"], ref, "x")


def test_the_bound_sentence_follows_the_two_medians():
    short, ref = world(0.07, -0.20)
    far = compare([dict(r, kl=1e9) for r in short], [dict(r, kl=3e4) for r in ref], "far")
    assert "accuracy proxy" in far.bound_sentence() and "33,333 times" in far.bound_sentence()
    near = compare([dict(r, kl=4e4) for r in short], [dict(r, kl=3e4) for r in ref], "near")
    assert "near the authors' setting's" in near.bound_sentence()


def test_the_committed_validation_table_is_current():
    note = Path(__file__).resolve().parents[2] / "results" / "short-setting-search" / "README.md"
    assert main(["--check", str(note)]) == 0, "run python -m studies.short_setting --update"


def test_the_chapter_and_the_own_prior_study_train_the_course_setting():
    """Chapter 5's live cell and the own-prior study's short runs pair with the setting the
    validation names for the course (the chapter cannot import the studies, so it names it)."""
    import re

    from studies.own_prior import own_prior

    repo = Path(__file__).resolve().parents[2]
    course = v.course_setting(v.settings(repo / "results")).name
    chapter = (repo / "book" / "05_experiment.md").read_text()
    named = re.findall(r'short_run = runs / "short-setting-search" / "([^"]+)"', chapter)
    assert named == [course], f"chapter 5 trains {named}, the validation names {course}"
    assert own_prior.SHORT_REFERENCE == f"short-setting-search/{course}"


def test_a_seed_run_with_two_hosts_vaes_pairs_once_per_vaes():
    short, ref = world(0.07, -0.20)
    # another host rebuilt the bank with other bits and ran seeds 0-1 on it at both settings
    short += [row("dwp:dwp", s, 0.60, vae="v2") for s in (0, 1)]
    ref += [row("dwp:dwp", s, 0.52, vae="v2") for s in (0, 1)]
    ours = next(line for line in compare(short, ref, "two").lines if line.method == "dwp:dwp")
    assert ours.seeds_text() == "0,1,2,3,4 + 0,1" and ours.unpaired == []
    # 5 pairs at -20 and -25 points, 2 at -10 and -20
    assert ours.short_diff == pytest.approx((5 * -20 + 2 * -10) / 7)
    assert ours.authors_diff == pytest.approx((5 * -25 + 2 * -20) / 7)


def _write(folder: Path, rows) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for r in rows:
        append_row(folder / "results.csv", r, RESULT_COLUMNS)


def test_sibling_folders_add_lines_on_other_banks_and_rows_on_other_hosts(tmp_path):
    short, ref = world(0.07, -0.20)
    _write(tmp_path / "released-authors-setting", ref)
    _write(tmp_path / "short-setting-search" / "s1", short)
    line = "source-width-128-256"
    _write(tmp_path / line, [row("dwp:dwp", s, 0.62, vae="wide") for s in range(3)])
    _write(tmp_path / "short-setting-search" / f"s1--{line}",
           [row("dwp:dwp", s, 0.66, vae="wide") for s in range(3)])  # fmt: skip
    _write(tmp_path / "short-setting-search" / "s1--another-host",
           [row("dwp:dwp", s, 0.55, vae="v2") for s in range(2)])  # fmt: skip
    (s,) = v.settings(tmp_path)
    lines = {line.method: line for line in s.lines}
    wide = lines[f"dwp:dwp ({line})"]
    assert wide.seeds == [0, 1, 2] and wide.short_diff == pytest.approx(-4.0)
    assert wide.authors_diff == pytest.approx(-10.0) and wide.sign_kept and wide.size_kept is False
    assert lines["dwp:dwp"].unpaired == [0, 1]  # the other host's bank has no authors' rows
    assert v.ELSEWHERE[line][0] not in s.missing
    assert v.ELSEWHERE["released-bank-vaes-long"][0] in s.missing
    assert s.cell_minutes == {"DWP": 1.0, "N(0, 1)": 1.0}  # the own folder's cells only
    # a sibling adds seeds; a seed the setting already has, run again with another result, raises
    _write(tmp_path / "short-setting-search" / "s1--another-host", [row("normal:xavier", 0, 0.1)])
    with pytest.raises(ExperimentError, match="two rows of normal:xavier, split seed 0"):
        v.settings(tmp_path)


def test_the_same_row_twice_with_two_accuracies_is_refused():
    short, ref = world(0.07, -0.20)
    with pytest.raises(ExperimentError, match="two rows of dwp:dwp, split seed 0"):
        compare([*short, row("dwp:dwp", 0, 0.1)], ref, "twice")
    compare([*short, row("dwp:dwp", 0, 0.70 - 0.20)], ref, "the same row again")  # a copy: accepted


def test_the_proxy_is_the_cheapest_setting_that_keeps_the_released_sign_on_five_seeds():
    slow = compare(*world(0.07, -0.04), "slow")  # forgives a bad prior: does not qualify
    fast_rows, ref = world(0.07, -0.04)
    fast = compare([dict(r, seconds=30.0) for r in fast_rows], ref, "fast")
    few = compare(*world(0.07, -0.04, seeds=range(3)), "few")  # 3 seeds: not eligible
    lost_rows, _ = world(0.07, -0.04)
    lost_rows = [  # the released prior loses on seed 4
        dict(r, acc_ensemble=0.5, seconds=1.0) if method_seed(r) == (v.RELEASED_PAIR[0], 4) else
        dict(r, seconds=1.0) for r in lost_rows
    ]  # fmt: skip
    lost = compare(lost_rows, ref, "lost")
    assert v.proxy([slow, fast, few, lost]) is fast
    text = v.proxy_sentence([slow, fast, few, lost])
    assert "No setting qualifies yet" in text and "**fast**" in text and "0.5 min" in text
    good = compare(*world(0.07, -0.20), "good")
    assert v.proxy_sentence([slow, good]) == "**Chosen**: good, which qualifies."
    assert "None has kept" in v.proxy_sentence([few])
    # the closest: the fewest reasons not to qualify, then the cheapest (lost: one reason, 1 s)
    assert "closest to qualifying is **lost** (not yet: a large difference" in text
    assert "closest to qualifying is **slow**" in v.proxy_sentence([few, slow])
    # a screen that failed nothing yet is not closer than a setting measured in full
    screen = compare(*world(0.07, -0.20, seeds=range(2)), "screen")
    assert screen.reasons()[0] == "2 of 5 seeds" and "shrinks" not in screen.verdict()
    assert "closest to qualifying is **slow**" in v.proxy_sentence([screen, slow])
    assert "closest to qualifying is **screen**" in v.proxy_sentence([screen, few])


def test_a_setting_that_fails_nothing_but_lacks_a_prior_is_named_with_what_it_waits_for():
    slow = compare(*world(0.07, -0.04), "slow")  # measured in full, fails criterion c
    waiting = v.compare(*world(0.07, -0.20), "waiting", required=("dwp/dwp:xavier",), elsewhere=())
    assert waiting.failures() == [] and waiting.pending() == ["not run: dwp/dwp:xavier"]
    text = v.proxy_sentence([slow, waiting])
    assert "closest to qualifying is **slow**" in text  # only settings with every prior run
    assert text.endswith("**waiting** fails no criterion on the rows it has; it waits for: "
                         "not run: dwp/dwp:xavier.")  # fmt: skip
    assert "**slow** fails no criterion" not in text
    # a screen on fewer seeds is not named: criterion a is not measured yet
    screen = compare(*world(0.07, -0.20, seeds=range(2)), "screen")
    assert "**screen** fails no criterion" not in v.proxy_sentence([slow, screen])


def method_seed(r) -> tuple[str, int]:
    return v.method(r), int(r["seed"])


def test_a_sibling_folder_adds_the_released_pairs_seeds(tmp_path):
    short, ref = world(0.07, -0.20, seeds=range(2))
    _write(tmp_path / "released-authors-setting", ref)
    _write(tmp_path / "short-setting-search" / "s1", short)
    more = [row(m, s, a) for s in (2, 3, 4) for m, a in zip(v.RELEASED_PAIR, (0.75, 0.70), strict=True)]  # fmt: skip
    _write(tmp_path / "short-setting-search" / "s1--more-seeds", more)
    (s,) = v.settings(tmp_path)
    assert sorted(s.released_gain) == [0, 1, 2, 3, 4] and s.released_gain[4] == pytest.approx(5.0)
    assert s.seeds == [0, 1]  # N(0, 1) from Xavier: only the setting's own two seeds


def test_the_forgiven_prior_sentence_names_the_share_each_setting_keeps():
    forgiving = compare(*world(0.07, -0.04), "forgiving")
    faithful = compare(*world(0.07, -0.20), "faithful")
    text = v.forgiven_sentence([forgiving], "dwp:dwp")
    assert "forgiving: -4.0 against -25.0 points (16% of it, split seeds 0,1,2,3,4)" in text
    assert "None keeps the half" in text
    text = v.forgiven_sentence([forgiving, faithful], "dwp:dwp")
    assert "faithful: -20.0 against -25.0 points (80%" in text
    assert text.endswith("Half of it or more is kept by faithful.")
    assert v.forgiven_sentence([faithful], "a prior no setting ran") == ""


def test_the_drift_table_says_which_side_of_the_released_pair_moved():
    short, ref = world(0.10, -0.20)  # the released prior 1 point above the authors' setting
    short = [dict(r, acc_ensemble=0.75) if v.method(r) == "normal:dwp@released" else r
             for r in short]  # fmt: skip
    s = compare(short, ref, "held")
    assert v.drift(s) == ([0, 1, 2, 3, 4], pytest.approx(1.0), pytest.approx(4.0))
    text = v.drift_markdown([s])
    assert "| held | 0,1,2,3,4 | +1.0 | +4.0 |" in text and "within 1.0 points" in text
    dropped = compare(*world(0.05, -0.20), "dropped")  # the released prior 4 points lower
    assert v.drift(dropped)[1] == pytest.approx(-4.0)
    assert "ends higher" not in v.drift_markdown([dropped])


def test_the_harms_paragraph_has_one_sentence_per_prior_some_setting_ran():
    short, ref = world(0.07, -0.04)  # our prior's harm forgiven
    s = compare(short, ref, "forgiving")
    text = v.harms_markdown([s], ("dwp:dwp", "a prior no setting ran"))
    assert text == v.forgiven_sentence([s], "dwp:dwp") and "forgiving: -4.0 against -25.0" in text
    assert v.harms_markdown([s], ("a prior no setting ran",)) == ""
