"""The fault table: what a careful user or a flaky machine does wrong, one row per fault.

Every row ends in one of two ways, and the test says which: a clear error (its type and the words
that name what was wrong and what to do), or a rebuild that gives the same bytes as before. The
last test kills a real seeded ``reproduce --preset tiny`` at several points and checks that the
resumed run writes the rows an uninterrupted run writes.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from support import micro_config

from dwp_lib import artifacts
from dwp_lib import experiment as ex
from dwp_lib.bayes import BayesConfig, BayesianCNN, train_bayesian_cnn
from dwp_lib.data import ImageSet, balanced_subset
from dwp_lib.experiment import Experiment, ExperimentError, config_from
from dwp_lib.kernel_layers import KernelVAEConfig
from dwp_lib.kernel_vae import KernelVAE, KernelVAETrainConfig, train_kernel_vae
from dwp_lib.priors import StandardNormal
from dwp_lib.train import NonFiniteLossError

# --------------------------------------------------------------------------------------------
# Settings: refused when the config is built, with the dotted path of the field
# --------------------------------------------------------------------------------------------

BAD_SETTINGS = [
    ("init.test_images=0", r"init.test_images=0: must be >= 1 \(or None\)"),
    ("init.test_images=-5", r"init.test_images=-5: must be >= 1"),
    ("grid.test_images=0", r"grid.test_images=0: must be >= 1"),
    ("bayes.batch_size=20.5", r"bayes.batch_size is an integer, got 20.5"),
    ("grid.steps_by_size.50=-3", r"grid.steps_by_size.50=-3: must be >= 1"),
    ("grid.steps_by_size.fifty=30", r"'fifty' is not a size"),
    ("grid.split_seeds=[-1]", r"grid.split_seeds\[0\]=-1: must be >= 0"),
    ("grid.sizes=[55]", r"multiple of 10"),
    ("num_threads=abc", r"num_threads is an integer, got 'abc'"),
    ("num_threads=0", r"num_threads=0: must be >= 1"),
    ("init.seeds=[1.5]", r"init.seeds\[0\] is an integer, got 1.5"),
    ("source.seed=-3", r"source.seed=-3: must be >= 0"),
    ("source.test_fraction=1.5", r"source.test_fraction=1.5: must be between 0 and 1"),
    ("bayes.channels=[0,3]", r"bayes.channels\[0\]=0: must be >= 1"),
    ("bayes.lr=-1", r"bayes.lr=-1.0: must be > 0"),
    ("bayes.lr=abc", r"bayes.lr is a number, got 'abc'"),
    ("bayes.kl_weight=true", r"bayes.kl_weight is a number, got True"),
    ("vae.conv2.train.batch_size=0", r"vae.conv2.train.batch_size=0: must be >= 1"),
    ("grid.methods=dwp:nope", r"unknown init 'nope'"),
    ("bayes.stpes=3", r"no field 'stpes' \(did you mean 'steps'\?\)"),
]


@pytest.mark.parametrize(("setting", "message"), BAD_SETTINGS, ids=[s for s, _ in BAD_SETTINGS])
def test_a_bad_setting_is_refused_when_the_config_is_built(setting, message):
    with pytest.raises(ExperimentError, match=message):
        config_from("tiny", overrides=[setting])


def test_a_bad_value_in_a_config_file_names_its_field(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('preset = "tiny"\n[bayes]\nlr = nan\n')  # TOML has nan; JSON does not
    with pytest.raises(ExperimentError, match=r"bayes.lr=nan: expected a finite number"):
        config_from(None, path)
    path = tmp_path / "run.yaml"
    path.write_text("bayes:\n  steps: 3\n")
    with pytest.raises(ExperimentError, match=r"only .toml and .json files are read, not .yaml"):
        config_from(None, path)


def test_a_library_config_built_directly_is_checked_too():
    with pytest.raises(ValueError, match=r"batch_size=20.5: expected an integer"):
        BayesConfig(batch_size=20.5)
    with pytest.raises(ValueError, match=r"steps=True: expected an integer"):
        KernelVAETrainConfig(steps=True)


# --------------------------------------------------------------------------------------------
# Data: refused before any training, with what is wrong
# --------------------------------------------------------------------------------------------


def _digits(n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 255, (n, 28, 28), dtype=torch.uint8, generator=g), torch.arange(n) % 10


def _nan_pixel():
    x = torch.rand(20, 1, 28, 28)
    x[4, 0, 3, 3] = float("nan")
    cfg = BayesConfig(channels=(4, 8), steps=3, eval_samples=1)
    train_bayesian_cnn(BayesianCNN(cfg), StandardNormal(), x, torch.arange(20) % 10, cfg, 0, "cpu")


def _diverging_lr():
    x, cfg = torch.rand(20, 1, 28, 28), BayesConfig(channels=(4, 8), steps=30, lr=1e4)
    train_bayesian_cnn(BayesianCNN(cfg), StandardNormal(), x, torch.arange(20) % 10, cfg, 0, "cpu")


def _nan_slice():
    slices = torch.randn(200, 7, 7) * 0.1
    slices[17, 3, 3] = float("nan")
    vae = KernelVAE(KernelVAEConfig.for_kernel(7, hidden=4))
    train_kernel_vae(vae, slices, KernelVAETrainConfig(steps=3, batch_size=50), seed=0)


BAD_DATA = [
    ("label 42", lambda: ImageSet(_digits()[0], torch.where(_digits()[1] == 3, 42, _digits()[1])),
     ValueError, r"labels run from 0 to 42, but there are 10 classes"),
    ("lengths differ", lambda: ImageSet(_digits()[0], _digits()[1][:30]),
     ValueError, r"40 images but 30 labels"),
    ("float images", lambda: ImageSet(_digits()[0].float(), _digits()[1]),
     ValueError, r"images must be a uint8 tensor"),
    ("n = 20.0", lambda: balanced_subset(ImageSet(*_digits()), 20.0),
     TypeError, r"n must be an integer, got 20.0"),
    ("seed 1.5", lambda: balanced_subset(ImageSet(*_digits()), 20, 1.5),
     TypeError, r"seed must be an integer, got 1.5"),
    ("NaN pixel", _nan_pixel, ValueError, r"Bayesian CNN: 1 pixel\(s\) are NaN or infinite.*4"),
    ("lr 1e4", _diverging_lr, NonFiniteLossError, r"the loss is (nan|inf) at step \d+.*smaller"),
    ("NaN slice", _nan_slice, ValueError, r"1 of 200 training examples hold NaN.*example 17"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("fault", "make", "kind", "message"), BAD_DATA, ids=[r[0] for r in BAD_DATA]
)
def test_bad_data_is_refused_with_what_is_wrong(fault, make, kind, message):
    with pytest.raises(kind, match=message):
        make()


def test_an_unreadable_notmnist_tarball_of_the_right_size_says_what_to_do(tmp_path, monkeypatch):
    from dwp_lib.data import DataUnavailableError, notmnist

    monkeypatch.setenv("DWP_CACHE", str(tmp_path))
    monkeypatch.setenv("DWP_OFFLINE", "1")
    tarball = notmnist.tarball_path("small")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    tarball.write_bytes(b"\0" * notmnist.SIZES["small"])
    with pytest.raises(DataUnavailableError, match=r"(?s)not a readable notMNIST tarball.*offline, "
                       r"put a good copy"):  # fmt: skip
        notmnist.load_real_notmnist("train", "small")
    assert not tarball.exists()  # deleted: the next try starts clean


# --------------------------------------------------------------------------------------------
# The cache folder and the files in it
# --------------------------------------------------------------------------------------------


def test_a_cache_that_is_a_file_names_the_variable(tmp_path, monkeypatch):
    (tmp_path / "cache").write_text("not a folder")
    monkeypatch.setenv("DWP_CACHE", str(tmp_path / "cache"))
    with pytest.raises(
        artifacts.CacheError, match=r"a file stands where a folder is needed.*under DWP_CACHE="
    ):
        artifacts.cache_dir("kernel_vaes")


def test_a_cache_that_cannot_be_created_names_the_variable(monkeypatch):
    monkeypatch.setenv("DWP_CACHE", "/proc/no-such-folder/cache")  # not creatable, even by root
    with pytest.raises(artifacts.CacheError, match=r"cannot be created.*export DWP_CACHE="):
        artifacts.cache_dir("data")


def test_a_read_only_cache_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("DWP_CACHE", str(tmp_path))

    def refused(*a, **k):  # what a read-only folder answers (root ignores chmod, so: simulated)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    with pytest.raises(
        artifacts.CacheError, match=r"cannot be written: Permission denied.*DWP_CACHE"
    ):
        artifacts.save_artifact(artifacts.cache_dir("x") / "a.pt", {"a": 1})


class _Killed(BaseException):
    """Stands for a SIGKILL: nothing after it runs, no ``except Exception`` catches it."""


@pytest.mark.parametrize("kill_at", [0, 1, 2, 3])
def test_an_artifact_killed_between_its_writes_is_complete_or_absent(
    tmp_path, monkeypatch, kill_at
):
    """save_artifact writes two files (record, then data; over an older pair). Killed after any
    number of its steps, what is left is the old pair, the new pair, or no file: never a file
    without its record, which a resumed stage could not read (seen when a kill in
    ``reproduce`` landed between the two writes of a source net)."""
    path = tmp_path / "net_001.pt"
    artifacts.save_artifact(path, {"w": torch.zeros(3)}, {"v": 0})
    steps = {"n": 0}
    real_unlink, real_write = Path.unlink, artifacts.atomic_write_bytes

    def step():
        if steps["n"] == kill_at:
            raise _Killed
        steps["n"] += 1

    def unlink(self, *a, **k):
        step()
        return real_unlink(self, *a, **k)

    def write(p, data):
        step()
        return real_write(p, data)

    monkeypatch.setattr(Path, "unlink", unlink)
    monkeypatch.setattr(artifacts, "atomic_write_bytes", write)
    try:
        artifacts.save_artifact(path, {"w": torch.ones(3)}, {"v": 1})
    except _Killed:
        pass
    monkeypatch.undo()
    if path.exists():
        obj, record = artifacts.load_artifact(path)  # verifies: the file matches its record
        assert record["provenance"]["v"] == (1 if kill_at == 3 else 0)
        assert torch.equal(obj["w"], torch.full((3,), float(record["provenance"]["v"])))
    else:
        assert 0 < kill_at < 3
        assert not artifacts.is_valid_artifact(path)
    artifacts.save_artifact(path, {"w": torch.ones(3)}, {"v": 1})  # what the resumed stage does
    assert artifacts.load_artifact(path)[1]["provenance"]["v"] == 1


def test_another_layers_vae_file_in_place_of_this_ones_is_refused(fake_world, tmp_path):
    cfg = micro_config(**{"init.enabled": "false", "grid.enabled": "false"})
    exp = Experiment(cfg, tmp_path / "run", "cpu", verbose=False)
    exp.kernel_vaes()
    one, two = exp.vae_path("conv1"), exp.vae_path("conv2")
    two.write_bytes(one.read_bytes())  # copied over, with its record
    artifacts.sidecar_path(two).write_bytes(artifacts.sidecar_path(one).read_bytes())
    with pytest.raises(
        ExperimentError, match=rf"{two.name} holds a kernel VAE for conv1.*Delete it"
    ):
        Experiment(cfg, tmp_path / "run", "cpu", verbose=False).kernel_vaes()


# --------------------------------------------------------------------------------------------
# The run folder
# --------------------------------------------------------------------------------------------


def test_rows_of_other_settings_are_refused_when_config_json_is_gone(fake_world, tmp_path):
    out = tmp_path / "run"
    cfg = micro_config(**{"grid.methods": "normal:xavier", "init.enabled": "false"})
    Experiment(cfg, out, "cpu", verbose=False).prior_grid()
    (out / "config.json").unlink()
    other = ex.apply_overrides(cfg, ["bayes.steps=4"])
    with pytest.raises(ExperimentError, match=r"2 row\(s\) made with other settings.*new --out"):
        Experiment(other, out, "cpu", verbose=False)
    assert len(Experiment(cfg, out, "cpu", verbose=False).prior_grid()) == 2  # its own: fine


def test_curves_without_config_json_are_refused(fake_world, tmp_path):
    out = tmp_path / "run"
    cfg = micro_config(**{"grid.enabled": "false"})
    Experiment(cfg, out, "cpu", verbose=False).init_experiment()
    (out / "config.json").unlink()
    with pytest.raises(ExperimentError, match=r"init_curves.csv but no config.json"):
        Experiment(cfg, out, "cpu", verbose=False)


# --------------------------------------------------------------------------------------------
# Killed at any point, resumed: the same rows as a run that was never interrupted
# --------------------------------------------------------------------------------------------

TIMING = {"seconds"}  # the only columns that may differ between two runs of the same cells


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        rows = [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(f)]
    return sorted(rows, key=lambda r: sorted(r.items()))


def _reproduce(out: Path, env: dict) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "dwp_lib", "reproduce", "--preset", "tiny", "--out", str(out)]
    cmd += ["--set", "num_threads=1", "--set", "source.workers=0"]
    # the tiny 5x5 VAE would train in milliseconds, too short a window to kill the run "between
    # the two VAEs" on a quiet machine; more steps (in every run alike) make it a second or two
    cmd += ["--set", "vae.conv2.train.steps=300"]
    err = tempfile.TemporaryFile("w+")  # a file, not a pipe: a chatty run never blocks on it
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True
    )
    proc.err = err
    return proc


def _finished(proc: subprocess.Popen, timeout: float = 300) -> int:
    """Wait for a run; a failed one fails the test with the end of what it printed."""
    code = proc.wait(timeout=timeout)
    proc.err.seek(0)
    assert code == 0, f"reproduce --preset tiny failed (exit {code}):\n{proc.err.read()[-2000:]}"
    return code


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 240) -> bool:
    """SIGKILL the run's whole process group as soon as ``ready()`` holds; False if it ended
    first (having succeeded: a run that fails fails the test, with its last words)."""
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        if ready():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.02)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("reproduce --preset tiny took too long")
    _finished(proc)
    return False


def _csv_rows(path: Path) -> int:
    return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0


def test_a_run_killed_anywhere_resumes_to_the_rows_of_an_uninterrupted_run(tmp_path):
    # the uninterrupted run fills its data cache (the fonts of the synthetic letters come from
    # Debian's archive); the killed runs then share those files offline
    env = dict(os.environ, DWP_PROGRESS="0", DWP_CACHE=str(tmp_path / "a"))
    env.pop("DWP_OFFLINE", None)
    whole = _reproduce(tmp_path / "whole", env)
    assert _finished(whole) == 0
    env["DWP_OFFLINE"] = "1"
    # the second run starts from the same data files, and from nothing else
    (tmp_path / "b").mkdir()
    os.symlink(tmp_path / "a" / "data", tmp_path / "b" / "data")
    env["DWP_CACHE"] = str(tmp_path / "b")
    out = tmp_path / "killed"
    nets = lambda: sorted((tmp_path / "b" / "source_nets").glob("*/net_*.pt"))  # noqa: E731
    vaes = lambda: sorted((tmp_path / "b" / "kernel_vaes").glob("*.pt"))  # noqa: E731
    points = {
        "during the source nets": lambda: len(nets()) >= 2,
        "between the two VAEs": lambda: [p.name[:5] for p in vaes()] == ["conv1"],
        "during the init experiment": lambda: _csv_rows(out / "init_curves.csv") >= 2,
        "mid-grid": lambda: _csv_rows(out / "results.csv") >= 3,
    }
    killed = []
    for where, ready in points.items():
        if _kill_when(_reproduce(out, env), ready):
            killed.append(where)
    assert killed == list(points), (
        f"the run ended before it could be killed {set(points) - set(killed)}"
    )
    assert _finished(_reproduce(out, env)) == 0
    for name in ("results.csv", "init_curves.csv"):
        assert _rows(out / name) == _rows(tmp_path / "whole" / name), name


def test_hashes_and_keys_in_a_results_file_stay_text(tmp_path):
    """A hash of digits only (or of the form 1e5...) is not a number: read back, it must still
    equal the hash of the artifact it names."""
    path = tmp_path / "results.csv"
    row = {"config_key": "1e5123456789", "bank_sha256": "012345678901", "vae_sha256": "conv1=9"}
    row |= {"n": 50, "acc_ensemble": 0.5}
    columns = list(row)
    ex.append_row(path, row, columns)
    (back,) = ex.read_rows(path, columns)
    assert back == row


def test_rows_from_another_bank_are_refused_before_the_vaes_train(
    fake_world, tmp_path, monkeypatch
):
    """The bank was rebuilt with other bits (another host's CPU rounds differently): the folder
    is refused as soon as the bank is known, not after an hour of kernel-VAE training."""
    out = tmp_path / "run"
    cfg = micro_config(**{"grid.methods": "dwp:dwp", "init.enabled": "false"})
    Experiment(cfg, out, "cpu", verbose=False).prior_grid()
    rows = (out / "results.csv").read_text().splitlines()
    col = rows[0].split(",").index("bank_sha256")
    edited = [rows[0]] + [
        ",".join(f if i != col else "012345678901" for i, f in enumerate(r.split(",")))
        for r in rows[1:]
    ]
    (out / "results.csv").write_text("\n".join(edited) + "\n")

    def no_training(self):
        raise AssertionError("the kernel VAEs were asked for before the bank was checked")

    monkeypatch.setattr(Experiment, "kernel_vaes", no_training)
    more = ex.apply_overrides(cfg, ["grid.split_seeds=[0,1,2]"])
    for stage in ("prior_grid", "run"):
        with pytest.raises(ExperimentError, match=r"other artifacts.*bank: rows 012345678901"):
            getattr(Experiment(more, out, "cpu", verbose=False), stage)()


def test_cells_that_use_no_bank_of_ours_resume_beside_another_banks_rows(fake_world, tmp_path):
    """N(0, 1) from Xavier (like the released files) never touches the bank: a folder whose
    rows of our prior came from another bank still takes more of its seeds, and its own rows'
    bank hashes refuse nothing."""
    out = tmp_path / "run"
    cfg = micro_config(**{"grid.methods": "dwp:dwp,normal:xavier", "init.enabled": "false"})
    Experiment(cfg, out, "cpu", verbose=False).prior_grid()
    rows = (out / "results.csv").read_text().splitlines()
    col = rows[0].split(",").index("bank_sha256")
    (out / "results.csv").write_text(
        "\n".join([rows[0]] + [",".join(f if i != col else "012345678901"
                                       for i, f in enumerate(r.split(","))) for r in rows[1:]])
        + "\n"
    )  # fmt: skip
    normal = ex.apply_overrides(cfg, ["grid.methods=normal:xavier", "grid.split_seeds=[0,1,2]"])
    got = Experiment(normal, out, "cpu", verbose=False).prior_grid()
    assert sorted(int(r["seed"]) for r in got if r["prior"] == "normal") == [0, 1, 2]
    ours = ex.apply_overrides(cfg, ["grid.split_seeds=[0,1,2]"])
    with pytest.raises(ExperimentError, match=r"other artifacts.*bank: rows 012345678901"):
        Experiment(ours, out, "cpu", verbose=False).prior_grid()


def test_rows_from_other_artifacts_are_not_mixed_in(fake_world, tmp_path):
    """Same settings, but the cached kernel VAE was rebuilt with other bits in between (another
    machine or thread count): a run that would add rows to the folder is refused."""
    out = tmp_path / "run"
    cfg = micro_config(**{"grid.methods": "dwp:dwp", "init.enabled": "false"})
    exp = Experiment(cfg, out, "cpu", verbose=False)
    exp.prior_grid()
    path = exp.vae_path("conv2")
    vae = KernelVAE.load(path)
    with torch.no_grad():
        next(vae.parameters()).add_(1e-6)  # a rounding-level difference, as another run gives
    vae.save(path, vae.record["provenance"])
    more = ex.apply_overrides(cfg, ["grid.split_seeds=[0,1,2]"])
    with pytest.raises(ExperimentError, match=r"other artifacts than the cache holds now \(conv2"):
        Experiment(more, out, "cpu", verbose=False).prior_grid()
    fresh = Experiment(more, tmp_path / "new", "cpu", verbose=False).prior_grid()
    assert len(fresh) == 3  # a new folder takes them
