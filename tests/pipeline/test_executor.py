"""Where units run (dwp_lib.executor): the local processes and a local Ray cluster give the same
results, an interrupted Ray run resumes without resubmitting finished units, and Ray's absence
or a cluster without the resources asked for end in clear errors.

The Ray tests start a cluster on the loopback address of this machine (2 CPUs) and stop it at
the end of each stage; they are skipped only where Ray is not installed (``make test`` installs
it with the test extra).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

from dwp_lib.artifacts import read_record
from dwp_lib.cli import main as cli_main
from dwp_lib.experiment import ExperimentConfig, ExperimentError, config_from
from dwp_lib.experiment import executor as ex

#: The tiny preset, made smaller still: 2 source nets and 4 grid cells of 5 steps.
TINY = [
    "init.enabled=false",
    "source.n_nets=2",
    "source.train_images=400",
    "source.workers=2",
    "bayes.steps=5",
    "grid.methods=dwp:dwp,normal:xavier",
    "grid.split_seeds=[0,1]",
    "grid.test_images=200",
    "grid.workers=2",
    "num_threads=1",
]
TIME_COLUMNS = {"seconds"}  # the one column that says how long, not what


def _rows(path) -> list[dict]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return sorted(
        ({k: v for k, v in r.items() if k not in TIME_COLUMNS} for r in rows),
        key=lambda r: (r["prior"], r["init"], int(r["n"]), int(r["seed"])),
    )


def _reproduce(out, cache, monkeypatch, *extra) -> int:
    monkeypatch.setenv("DWP_CACHE", str(cache))
    monkeypatch.setenv("DWP_PROGRESS", "0")
    args = ["reproduce", "--preset", "tiny", "--out", str(out)]
    for item in [*TINY, *extra]:
        args += ["--set", item]
    return cli_main(args)


def test_executor_settings_are_checked_and_not_part_of_the_key():
    base = ExperimentConfig.preset("tiny")
    on_ray = config_from("tiny", overrides=["executor.kind=ray", "executor.address=auto"])
    assert on_ray.executor.kind == "ray" and on_ray.executor.address == "auto"
    assert on_ray.key() == base.key()  # where units run never changes a result
    for bad, says in [
        ("executor.kind=slurm", "expected one of local, ray"),
        ("executor.gpus_per_cell=-0.5", "gpus_per_cell"),
        ("executor.gpus_per_cell=1.5", "a share of one GPU"),
        ("executor.cpus_per_task=0", "cpus_per_task"),
    ]:
        with pytest.raises(ExperimentError, match=says):
            config_from("tiny", overrides=[bad])


def test_gpu_shares_default_to_the_cluster():
    cfg = ex.ExecutorConfig(kind="ray")
    assert cfg.share("cell", has_gpus=True) == 0.25 and cfg.share("net", has_gpus=True) == 1.0
    assert cfg.share("cell", has_gpus=False) == 0.0
    assert ex.ExecutorConfig(kind="ray", gpus_per_cell=0.5).share("cell", has_gpus=False) == 0.5
    assert ex.ExecutorConfig.slots(8, 0.25) == 32 and ex.ExecutorConfig.slots(2, 1.0) == 2


def test_estimated_wall_time_is_a_list_schedule():
    assert ex.estimate_wall([2.0, 3.0, 2.0, 2.0, 3.0, 2.0], 2) == 7.0  # 3+2+2 on each slot
    # longest first is greedy, not optimal ({3, 3} | {2, 2, 2} would take 6): within 4/3 of it
    assert ex.estimate_wall([3.0, 3.0, 2.0, 2.0, 2.0], 2) == 7.0
    assert ex.estimate_wall([5.0, 1.0, 1.0], 8) == 5.0
    assert ex.estimate_wall([], 4) == 0.0
    assert ex.estimate_wall([1.0] * 10, 1) == 10.0
    with pytest.raises(ValueError, match="slots"):
        ex.estimate_wall([1.0], 0)


def test_without_ray_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ex.ExecutorError, match=r"pip install 'dwp_lib\[ray\]'"):
        ex.import_ray()
    with pytest.raises(ex.ExecutorError, match="executor.kind=local"):
        list(ex.run_on_ray(ex.ExecutorConfig(kind="ray"), len, None, [()], unit="cell"))


@pytest.fixture
def ray_available():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'dwp_lib[ray]')")
    # this module's functions travel by value: the workers cannot import a test module
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    return ray


def _scaled_square(shared: int, x: int) -> int:
    if x < 0:
        raise ValueError(f"negative input {x}")
    return shared * x * x


def test_a_cluster_started_for_the_units_is_stopped_after_them(ray_available):
    cfg = ex.ExecutorConfig(kind="ray", num_cpus=2)
    got = sorted(ex.run_on_ray(cfg, _scaled_square, 10, [(1,), (2,), (3,)], unit="cell"))
    assert got == [10, 40, 90]
    assert not ray_available.is_initialized()  # the cluster this call started is gone


@pytest.fixture(scope="module")
def ray_cluster_2cpu():
    """One local Ray cluster (loopback, 2 CPUs) for the pipeline tests: the executor joins a
    cluster this process is connected to and leaves it running; this fixture stops it."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'dwp_lib[ray]')")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(**ex.init_options(ex.ExecutorConfig(kind="ray", num_cpus=2)))
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The tiny pipeline from an empty cache with the local executor (worker processes)."""
    root = tmp_path_factory.mktemp("executors")
    with pytest.MonkeyPatch.context() as mp:
        assert _reproduce(root / "local", root / "cache", mp, "executor.kind=local") == 0
    return root


def test_ray_and_local_processes_write_the_same_results(local_run, monkeypatch, ray_cluster_2cpu):
    """The same tiny pipeline with its source nets and grid cells as Ray tasks: the same nets
    (bit for bit), the same bank and kernel VAEs (the cache finds them by their slices), the same
    rows. The local run's nets are moved aside, so the Ray run trains its own."""
    cache = local_run / "cache"
    (folder,) = (cache / "source_nets").iterdir()
    local_nets = local_run / "local-nets"
    folder.rename(local_nets)
    assert _reproduce(local_run / "ray", cache, monkeypatch, "executor.kind=ray") == 0
    local, ray_ = (_rows(local_run / k / "results.csv") for k in ("local", "ray"))
    assert len(local) == 4 and local == ray_
    nets = {"local": sorted(local_nets.glob("net_*.pt")), "ray": sorted(folder.glob("net_*.pt"))}
    assert len(nets["local"]) == len(nets["ray"]) == 2
    for a, b in zip(nets["local"], nets["ray"], strict=True):
        wa, wb = (torch.load(p, weights_only=True)["state_dict"] for p in (a, b))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
        assert read_record(a)["sha256"] == read_record(b)["sha256"]


def test_an_interrupted_ray_run_resumes_without_rerunning_its_cells(
    local_run, monkeypatch, ray_cluster_2cpu
):
    """A copy of the local run's folder with its last two rows cut (as a killed run leaves it):
    the Ray run adds those two cells again, equal to the local ones, and leaves the first two
    as they were (their times too: they were not run again)."""
    out = local_run / "resumed"
    shutil.copytree(local_run / "local", out)
    lines = (out / "results.csv").read_text().splitlines(keepends=True)
    (out / "results.csv").write_text("".join(lines[:3]))  # the header and two rows
    kept = list(csv.DictReader(open(out / "results.csv")))
    assert _reproduce(out, local_run / "cache", monkeypatch, "executor.kind=ray") == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 4 and rows[:2] == kept
    assert _rows(out / "results.csv") == _rows(local_run / "local" / "results.csv")


def test_a_units_error_comes_back_as_itself(ray_cluster_2cpu):
    cfg = ex.ExecutorConfig(kind="ray")
    with pytest.raises(ValueError, match="negative input -2"):
        list(ex.run_on_ray(cfg, _scaled_square, 1, [(1,), (-2,)], unit="cell"))
    too_big = ex.ExecutorConfig(kind="ray", gpus_per_cell=0.25)
    with pytest.raises(ex.ExecutorError, match="has 0; lower executor.gpus_per_cell"):
        list(ex.run_on_ray(too_big, _scaled_square, 1, [(1,)], unit="cell"))
    assert ray_cluster_2cpu.is_initialized()  # a cluster the executor joined stays up


def test_estimate_prints_wall_times_on_k_devices(tmp_path, capsys):
    from dwp_lib.experiment import estimate_cost, wall_from_saved_estimate

    cfg = config_from(
        "tiny", overrides=["bayes.steps=10", "grid.sizes=[50,100]", "bayes.channels=[4,8]"]
    )
    est = estimate_cost(cfg, "cpu", repeats=1, source_images=400, devices=(1, 2, 64))
    one, two, many = (est["wall_seconds_on"][k] for k in ("1", "2", "64"))
    assert one["source_seconds"] == pytest.approx(est["source_seconds"])
    assert one["grid_seconds"] == pytest.approx(est["grid_seconds"])
    assert two["grid_seconds"] < one["grid_seconds"] <= 2 * two["grid_seconds"] + 1e-9
    # more devices than units: as long as the longest unit
    assert many["source_seconds"] == pytest.approx(est["source_net_seconds"])
    assert many["grid_seconds"] == pytest.approx(est["grid_cell_seconds"]["max"])
    # an estimate printed on another machine (JSON, then a sentence) read back for other K
    path = tmp_path / "estimate.txt"
    path.write_text(json.dumps(est, indent=2) + "\nAbout 0.1 h for the source nets...\n")
    again = wall_from_saved_estimate(path, cfg, (1, 2))
    assert again["wall_seconds_on"]["2"] == pytest.approx(two)
    other = config_from("tiny", overrides=["grid.sizes=[50,200]"])
    with pytest.raises(ExperimentError, match="made for another grid"):
        wall_from_saved_estimate(path, other)
    path.write_text("no estimate here")
    with pytest.raises(ExperimentError, match="not the output of reproduce --estimate"):
        wall_from_saved_estimate(path, cfg)
    assert cli_main(["reproduce", "--preset", "tiny", "--estimate", "--devices", "0"]) == 2
    assert "device counts >= 1" in capsys.readouterr().err


def test_local_ray_workers_import_the_library_from_the_folder_above_it():
    """A local cluster's workers find ``dwp_lib`` (installed or not): the path given them is
    the folder that holds the package, not the package itself."""
    env = ex.init_options(ex.ExecutorConfig(kind="ray"))["runtime_env"]["env_vars"]
    first = Path(env["PYTHONPATH"].split(os.pathsep)[0])
    assert (first / "dwp_lib" / "__init__.py").exists()
