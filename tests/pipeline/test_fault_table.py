"""The fault table, second part: run folders whose files were edited, copied or cut short, a
notMNIST tarball of the right size and the wrong content, fonts offline, orphaned renderer
workers and the modes of the files the project writes. One test per row; each ends in a clear
error (for the command line: exit 2, no traceback), a refusal, or the identical rebuild.

Everything runs on fakes (a bank of random nets, fake digits, tarballs and font folders built
here): seconds a row, no download.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from support import micro_config

from dwp_lib import artifacts
from dwp_lib import experiment as ex
from dwp_lib.cli import main as cli_main
from dwp_lib.data import DataUnavailableError, fonts, load_notmnist, notmnist, synthetic
from dwp_lib.experiment import Experiment, ExperimentError, load_cell_model, load_results

# --------------------------------------------------------------------------------------------
# Run folders: `reproduce` on a small pipeline (fake bank, fake digits), then a fault
# --------------------------------------------------------------------------------------------

MICRO = [
    "source.widths=[4,8]",
    "vae.conv1.arch.hidden=4",
    "vae.conv2.arch.hidden=4",
    "vae.conv1.train.steps=3",
    "vae.conv2.train.steps=3",
    "vae.conv1.eval_samples=2",
    "vae.conv2.eval_samples=2",
    "init.inits=[xavier]",
    "init.channels=[4,8]",
    "init.steps=4",
    "init.eval_every=2",
    "init.batch_size=8",
    "init.test_images=50",
    "init.draw_repeats=1",
    "bayes.channels=[4,8]",
    "bayes.steps=3",
    "bayes.eval_samples=2",
    "grid.sizes=[10]",
    "grid.split_seeds=[0,1]",
    "grid.test_images=40",
    "grid.methods=normal:xavier",
]


def reproduce(out: Path, capsys, *extra: str) -> tuple[int, str, str]:
    """``python -m dwp_lib reproduce --preset tiny`` at the micro size: (exit code, out, err)."""
    args = ["reproduce", "--preset", "tiny", "--out", str(out)]
    for item in [*MICRO, *extra]:
        args += ["--set", item]
    code = cli_main(args)
    printed = capsys.readouterr()
    return code, printed.out, printed.err


def refused(out: Path, capsys, message: str, *extra: str) -> str:
    """Rerun the folder: exit 2, the message on stderr, no traceback."""
    code, _, err = reproduce(out, capsys, *extra)
    assert code == 2, err
    assert "Traceback" not in err
    assert message in err or re.search(message, err), err
    return err


@pytest.fixture
def base_out(fake_world, tmp_path, capsys):
    """A finished micro run (its results.csv: 2 rows, its init_curves.csv: 3)."""
    out = tmp_path / "run"
    code, _, err = reproduce(out, capsys)
    assert code == 0, err
    return out


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def test_a_repeated_row_is_dropped_with_a_warning_and_the_folder_rebuilt_identically(
    base_out, capsys
):
    results = base_out / "results.csv"
    before = results.read_text()
    results.write_text(before + lines(results)[1])  # sed -n 2p results.csv >> results.csv
    code, printed, err = reproduce(base_out, capsys)
    assert code == 0, err
    assert f"warning: {results}: line 4 repeats line 2 (prior normal, init xavier" in printed
    assert results.read_text() == before  # the file as the run left it
    assert "(2)" in printed and "(3)" not in printed  # the table counts 2 seeds, not 3


def test_a_repeated_curve_row_is_dropped_too(base_out, capsys):
    curves = base_out / "init_curves.csv"
    before = curves.read_text()
    curves.write_text(before + lines(curves)[2])
    code, printed, err = reproduce(base_out, capsys)
    assert code == 0, err
    assert f"{curves}: line 5 repeats line 3 (init xavier, seed 0, step 2); dropped" in printed
    assert curves.read_text() == before


def test_two_different_rows_of_one_cell_are_refused(base_out, capsys):
    results = base_out / "results.csv"
    row = lines(results)[1].split(",")
    row[5] = "0.123"  # acc_ensemble
    results.write_text(results.read_text() + ",".join(row))
    refused(
        base_out,
        capsys,
        rf"{results}: lines 2 and 4 are two different rows of one cell \(prior normal, init "
        r"xavier, n 10, seed 0; acc_ensemble .* / 0.123.*\)\. Delete the line that is wrong",
    )


@pytest.mark.parametrize(
    ("file", "column", "value"),
    [
        ("results.csv", "acc_ensemble", "nan"),
        ("results.csv", "loss", "inf"),
        ("results.csv", "kl", "abc"),
        ("results.csv", "seed", "0.5"),
        ("init_curves.csv", "test_acc", "nan"),
    ],
)
def test_a_value_that_is_not_a_finite_number_is_refused(base_out, capsys, file, column, value):
    path = base_out / file
    text = lines(path)
    header = text[0].rstrip("\n").split(",")
    row = text[2].rstrip("\n").split(",")
    row[header.index(column)] = value
    text[2] = ",".join(row) + "\n"
    path.write_text("".join(text))
    err = refused(base_out, capsys, f"{path}, line 3: column {column} is '{value}', not a")
    assert "Delete that line (the next run recomputes its cell)" in err


def test_another_runs_config_json_copied_in_does_not_pass_its_rows_off(
    fake_world, base_out, capsys, tmp_path
):
    other = tmp_path / "other"
    assert reproduce(other, capsys, "bayes.steps=4")[0] == 0
    shutil.copy(other / "config.json", base_out / "config.json")
    refused(base_out, capsys, "holds 2 row(s) made with other settings", "bayes.steps=4")
    # the init curves carry no key: the provenance record says which run made them
    (base_out / "results.csv").unlink()
    refused(base_out, capsys, "provenance.json records a run of other settings", "bayes.steps=4")


def test_rows_keyed_before_the_library_gained_a_field_are_rekeyed_explicitly(
    fake_world, tmp_path, capsys
):
    """The one key a folder accepts besides this run's: its own config.json's, when that file
    lacks a field the library has since gained (at its old behaviour). The rows are rewritten
    with the new key, and the run says so."""
    out = tmp_path / "run"
    cfg = micro_config(**{"grid.methods": "normal:xavier", "init.enabled": "false"})
    Experiment(cfg, out, "cpu", verbose=False).prior_grid()
    old = json.loads((out / "config.json").read_text())
    del old["bayes"]["eval_batch_size"]  # as written before the library had the field
    (out / "config.json").write_text(json.dumps(old))
    old_key, results = ex.key_of(old), out / "results.csv"
    results.write_text(results.read_text().replace(cfg.key(), old_key))
    capsys.readouterr()
    rows = Experiment(cfg, out, "cpu", verbose=False).prior_grid()
    assert f"2 row(s) re-keyed from config key {old_key} to {cfg.key()}" in capsys.readouterr().out
    assert [r["config_key"] for r in rows] == [cfg.key()] * 2
    assert old_key not in results.read_text()


def test_a_saved_network_copied_over_another_cells_is_refused(fake_world, tmp_path):
    out = tmp_path / "run"
    cfg = micro_config(
        **{"grid.methods": "normal:xavier", "init.enabled": "false", "grid.save_models": "true"}
    )
    Experiment(cfg, out, "cpu", verbose=False).prior_grid()
    zero, one = (ex.cell_model_path(out, "normal", "xavier", 10, s) for s in (0, 1))
    model, row = load_cell_model(cfg, out, "normal:xavier", 10, 1)
    assert row["seed"] == 1
    shutil.copy(zero, one)
    with pytest.raises(
        ExperimentError,
        match=r"holds the network of normal:xavier, n = 10, split seed 0, not of normal:xavier, "
        r"n = 10, split seed 1 \(a file copied or renamed over it\); delete it and its row",
    ):
        load_cell_model(cfg, out, "normal:xavier", 10, 1)


def test_a_truncated_network_file_names_the_file_and_the_fix(fake_world, tmp_path):
    out = tmp_path / "run"
    cfg = micro_config(
        **{"grid.methods": "normal:xavier", "init.enabled": "false", "grid.save_models": "true"}
    )
    Experiment(cfg, out, "cpu", verbose=False).prior_grid()
    path = ex.cell_model_path(out, "normal", "xavier", 10, 0)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ExperimentError, match=rf"{path} is damaged or not a saved cell network"):
        load_cell_model(cfg, out, "normal:xavier", 10, 0)


def test_a_truncated_provenance_json_names_the_file_and_the_fix(base_out, capsys):
    prov = base_out / "provenance.json"
    prov.write_text(prov.read_text()[:200])
    says = rf"{prov} is damaged \(.*\); restore it from a copy .* or delete it and rerun"
    refused(base_out, capsys, says)
    with pytest.raises(ExperimentError, match=says):
        load_results(base_out)
    prov.unlink()  # what the message says: the run writes it again
    assert reproduce(base_out, capsys)[0] == 0
    assert json.loads(prov.read_text())["rows"] == 2


# --------------------------------------------------------------------------------------------
# notMNIST: a tarball of the published size is checked by content
# --------------------------------------------------------------------------------------------


def _png(seed: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (28, 28), np.uint8)).save(
        buf, format="PNG"
    )
    return buf.getvalue()


def _tarball(path: Path, members: list[str], padding: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for i, name in enumerate(members):
            data = _png(i) if name.endswith(".png") else os.urandom(padding)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _font(k: int) -> str:
    return base64.b64encode(f"Font{k}.ttf".encode()).decode()


WRONG_CONTENT = {
    "only letter A": (
        [f"notMNIST_small/A/{_font(k)}.png" for k in range(60)],
        0,
        r"no images of letter\(s\) B, C, D, E, F, G, H, I, J.*PNG files per folder: A: 60$",
    ),
    "digits filed under A-J": (
        [f"notMNIST_small/{c}/digit{c}{k}.png" for c in "ABCDEFGHIJ" for k in range(8)],
        0,
        r"only 0 of its 80 file names recur under another letter.*A: 8, B: 8",
    ),
    "far too few images for its size": (
        [f"notMNIST_small/{c}/{_font(k)}.png" for c in "ABCDEFGHIJ" for k in range(4)]
        + ["notMNIST_small/padding.bin"],
        2_000_000,
        r"an implausible number of images of A, B, .*J \(a notMNIST tarball of 2,0\d\d,\d\d\d "
        r"bytes holds about 4\d\d per letter; the published notMNIST_small about 1,872\)",
    ),
}


@pytest.mark.parametrize("fault", list(WRONG_CONTENT))
def test_a_tarball_of_the_right_size_and_other_content_is_refused(tmp_path, monkeypatch, fault):
    members, padding, found = WRONG_CONTENT[fault]
    monkeypatch.setenv("DWP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DWP_OFFLINE", "1")
    tarball = notmnist.tarball_path("small")
    _tarball(tarball, members, padding)
    monkeypatch.setitem(notmnist.SIZES, "small", tarball.stat().st_size)  # size is no check
    with pytest.raises(DataUnavailableError) as info:
        load_notmnist("train", variant="small")
    msg = str(info.value)
    assert f"{tarball} does not hold notMNIST: " in msg
    assert re.search(found, msg.split(" (deleted)")[0]), msg
    assert "not notMNIST's content, so it was deleted" in msg and not tarball.exists()


# --------------------------------------------------------------------------------------------
# Fonts: DWP_OFFLINE=1 fetches none
# --------------------------------------------------------------------------------------------


@pytest.fixture
def apt_calls(tmp_path, monkeypatch):
    """``apt-get`` and ``dpkg`` stand-ins on PATH that only log their calls (to a file)."""
    monkeypatch.setenv("DWP_CACHE", str(tmp_path / "cache"))
    bin_dir, log = tmp_path / "bin", tmp_path / "apt.log"
    bin_dir.mkdir()
    for name in ("apt-get", "dpkg"):
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\necho {name} "$@" >> {log}\nexit 100\n')
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return log


def test_offline_fonts_not_in_the_cache_are_an_error_not_a_download(apt_calls, monkeypatch):
    monkeypatch.setenv("DWP_OFFLINE", "1")
    cfg = synthetic.SyntheticConfig(packages=("fonts-a", "fonts-b"), min_fonts=1)
    with pytest.raises(DataUnavailableError) as info:
        load_notmnist("train", variant="synthetic", config=cfg)
    msg = str(info.value)
    assert "2 of 2 font packages are not in the cache" in msg and "fonts-a, fonts-b" in msg
    assert "DWP_OFFLINE=1 forbids fetching them" in msg
    assert "python -m dwp_lib data prepare --notmnist synthetic` without DWP_OFFLINE" in msg
    assert not apt_calls.exists()  # apt-get was never run


def test_offline_fonts_in_the_cache_are_used_without_apt(apt_calls, monkeypatch):
    faces = [f for f in fonts.matplotlib_fonts() if f.name.startswith("DejaVuSans")][:4]
    root = fonts.fonts_dir() / "root" / "fonts-a"
    root.mkdir(parents=True)
    for f in faces:
        shutil.copy(f, root / f.name)
    entry = {"deb": "fonts-a_1.0_all.deb", "version": "1.0", "sha256": "", "fonts": []}
    entry["fonts"] = [f"fonts-a/{f.name}" for f in faces]
    manifest = {"packages": {"fonts-a": entry}, "problems": {"fonts-x": "not in the archive"}}
    (fonts.fonts_dir() / fonts.MANIFEST).write_text(json.dumps(manifest))
    monkeypatch.setenv("DWP_OFFLINE", "1")
    got = fonts.prepare_fonts(("fonts-a", "fonts-x"))  # fonts-x: missing from the archive
    assert got == {"packages": {"fonts-a": entry}, "problems": {"fonts-x": "not in the archive"}}
    assert not apt_calls.exists()


# --------------------------------------------------------------------------------------------
# The renderer's workers end with their parent
# --------------------------------------------------------------------------------------------

RENDERER = textwrap.dedent(
    """
    import multiprocessing, sys, threading, time
    from pathlib import Path
    from dwp_lib.data import synthetic

    def slow(job):  # a font that takes a minute: the workers are busy when the parent dies
        time.sleep(60)

    slow.__module__, slow.__qualname__ = synthetic.__name__, "_render_font"
    synthetic._render_font = slow

    def say_workers():
        while len(multiprocessing.active_children()) < 2:
            time.sleep(0.05)
        time.sleep(0.5)  # their initialiser has run
        print(*(p.pid for p in multiprocessing.active_children()), flush=True)

    threading.Thread(target=say_workers, daemon=True).start()
    cfg = synthetic.SyntheticConfig(min_fonts=1, copies=1, workers=2)
    synthetic.render_set([("", Path(f"/no/font-{i}.ttf")) for i in range(20)], cfg)
    """
)


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status  # a zombie has ended (nobody reaped it yet)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_renderers_workers_end_within_2_s_of_a_killed_parent(tmp_path):
    env = dict(os.environ, DWP_PROGRESS="0", DWP_CACHE=str(tmp_path / "cache"))
    proc = subprocess.Popen(
        [sys.executable, "-c", RENDERER], env=env, stdout=subprocess.PIPE, text=True
    )
    workers: list[int] = []
    try:
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert len(workers) == 2, "the renderer did not start its 2 workers"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 2.0
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(map(_alive, workers)), "a worker outlived its parent by 2 s"
    finally:
        proc.kill()
        proc.wait()
        for pid in workers:  # only if the test failed: no orphan left behind
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------------------------
# Files the project writes get the umask's mode, not a temporary file's 0600
# --------------------------------------------------------------------------------------------


@pytest.fixture
def umask():
    def set_to(mask: int) -> None:
        os.umask(mask)

    before = os.umask(0o022)
    yield set_to
    os.umask(before)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_writes_get_the_mode_of_the_umask(tmp_path, umask):
    artifacts.atomic_write_json(tmp_path / "a.json", {"a": 1})
    artifacts.save_artifact(tmp_path / "b.pt", {"b": 2})
    for name in ("a.json", "b.pt", "b.pt.json"):
        assert _mode(tmp_path / name) == 0o644, name
    umask(0o077)
    artifacts.atomic_write_bytes(tmp_path / "c", b"c")
    assert _mode(tmp_path / "c") == 0o600  # what the user asked for


def test_a_runs_files_get_the_mode_of_the_umask(umask, base_out):
    written = ["config.json", "provenance.json", "results.csv", "init_curves.csv"]
    written += [f"figures/{p.name}" for p in (base_out / "figures").glob("*.png")]
    assert len(written) > 4
    for name in written:
        assert _mode(base_out / name) == 0o644, name
    cache = Path(os.environ["DWP_CACHE"])
    for path in cache.rglob("*.pt*"):
        assert _mode(path) == 0o644, path


# ------------------------------------------------------------------------------------------------
# The command line's one error boundary: the file system's errors as one line, rc 2
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "errno, strerror, hint",
    [
        (28, "No space left on device", "free some space there"),
        (13, "Permission denied", "choose a folder you may write to"),
        (30, "Read-only file system", "writable file system"),
        (21, "Is a directory", "a folder stands where a file is expected"),
    ],
)
def test_a_file_system_error_is_one_line_and_rc_2(
    monkeypatch, tmp_path, capsys, errno, strerror, hint
):
    def fail(self):
        raise OSError(errno, strerror, str(tmp_path / "out" / "results.csv"))

    monkeypatch.setattr(Experiment, "run", fail)
    assert cli_main(["reproduce", "--preset", "tiny", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {strerror} (") and hint in err and "Traceback" not in err
    with pytest.raises(OSError):  # --debug shows the traceback instead
        cli_main(["--debug", "reproduce", "--preset", "tiny", "--out", str(tmp_path / "out")])


def test_an_out_that_is_a_file_is_a_clear_error(tmp_path):
    out = tmp_path / "out"
    out.write_text("not a folder")
    run = subprocess.run(
        [sys.executable, "-m", "dwp_lib", "reproduce", "--preset", "tiny", "--out", str(out)],
        capture_output=True, text=True, env=dict(os.environ, DWP_PROGRESS="0"), timeout=120,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("error: ") and "Traceback" not in run.stderr


def test_a_bug_keeps_its_traceback(monkeypatch, tmp_path):
    monkeypatch.setattr(Experiment, "run", lambda self: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        cli_main(["reproduce", "--preset", "tiny", "--out", str(tmp_path / "out")])
