"""The source stage (dwp_lib.experiment.sources): the source nets trained here or in worker
processes, resumed, cached as a kernel bank, and its command line."""

from __future__ import annotations

import argparse
import dataclasses

import pytest
import torch
from support import fake_data, tiny

from dwp_lib import artifacts
from dwp_lib.experiment import sources
from dwp_lib.experiment.sources import get_kernel_bank, train_source_nets
from dwp_lib.kernel_bank import KernelBank
from dwp_lib.source_nets import SourceData, SourceNetsConfig, load_source_nets


@pytest.fixture(scope="module")
def data() -> SourceData:
    return fake_data()


def test_resume_after_one_net(tmp_path, data):
    cfg = tiny(n_nets=2, train_images=300)
    done = []
    first = train_source_nets(cfg, tmp_path, "cpu", data=data, max_new=1, on_net_done=done.append)
    assert len(first) == 1 and len(done) == 1 and not first[0]["resumed"]
    path0 = tmp_path / "net_000.pt"
    sha0, mtime0 = artifacts.sha256_file(path0), path0.stat().st_mtime_ns
    second = train_source_nets(cfg, tmp_path, "cpu", data=data, on_net_done=done.append)
    assert [r["resumed"] for r in second] == [True, False]
    assert len(done) == 2  # only net 1 was trained the second time
    assert artifacts.sha256_file(path0) == sha0 and path0.stat().st_mtime_ns == mtime0
    assert second[0]["test_accuracy"] == first[0]["test_accuracy"]
    # a third run trains nothing
    third = train_source_nets(cfg, tmp_path, "cpu", data=data)
    assert all(r["resumed"] for r in third)
    # other training settings in the same folder: refused, not mixed
    with pytest.raises(artifacts.ArtifactError, match="trained with"):
        train_source_nets(dataclasses.replace(cfg, lr=1e-4), tmp_path, "cpu", data=data)


@pytest.mark.slow  # starting two processes that import torch takes seconds
def test_worker_processes_match_the_in_process_loop(tmp_path, data):
    cfg = tiny(n_nets=2, train_images=200)
    here = train_source_nets(cfg, tmp_path / "here", "cpu", data=data)
    pool = train_source_nets(
        dataclasses.replace(cfg, workers=2), tmp_path / "pool", "cpu", data=data
    )
    assert [r["test_accuracy"] for r in here] == [r["test_accuracy"] for r in pool]
    nets_here, _ = load_source_nets(tmp_path / "here", cfg)
    nets_pool, _ = load_source_nets(tmp_path / "pool", cfg)
    for a, b in zip(nets_here, nets_pool, strict=True):
        assert torch.equal(a.conv2.weight, b.conv2.weight)


def test_get_kernel_bank_and_cli(tmp_path, data, monkeypatch, capsys):
    monkeypatch.setattr(sources, "load_source_data", lambda cfg: data)
    monkeypatch.setenv("DWP_PROGRESS", "0")
    args = argparse.Namespace(preset="tiny", out=str(tmp_path))
    assert sources.cli(args) == 0
    out = capsys.readouterr().out
    n = SourceNetsConfig.tiny().n_nets
    assert f"Trained {n} source net(s)" in out and "conv2 5x5" in out
    assert sources.cli(args) == 0
    assert "Loaded the kernel bank" in capsys.readouterr().out
    bank = KernelBank.load(tmp_path / SourceNetsConfig.tiny().bank_file())
    assert bank.provenance["n_nets"] == n


def test_banks_cut_differently_from_the_same_nets_live_side_by_side(trained, data, capsys):
    """Two prunings of one set of nets get two bank files; neither overwrites the other, and a
    setting that does not change the bank (workers, threads) does not re-cut it."""
    cfg, out, _ = trained
    loose = dataclasses.replace(cfg, prune_norms=(0.0, 0.0))
    a = get_kernel_bank(loose, out, "cpu", data=data)
    median = float(a.slices("conv2", "all").flatten(1).norm(dim=1).median())
    strict = dataclasses.replace(cfg, prune_norms=(0.0, median))
    assert loose.bank_file() != strict.bank_file() and loose.default_dir() == strict.default_dir()
    b = get_kernel_bank(strict, out, "cpu", data=data)
    assert len(b.slices("conv2", "all")) < len(a.slices("conv2", "all"))
    sha = artifacts.read_record(out / loose.bank_file())["sha256"]
    capsys.readouterr()
    again = get_kernel_bank(dataclasses.replace(loose, workers=3, num_threads=2), out, data=data)
    assert "Loaded the kernel bank" in capsys.readouterr().out
    assert (
        again.provenance["sha256"]
        == sha
        == artifacts.read_record(out / loose.bank_file())["sha256"]
    )
    assert torch.equal(again.slices("conv2", "all"), a.slices("conv2", "all"))
    assert (out / loose.bank_file()).exists() and (out / strict.bank_file()).exists()


def test_cli_notmnist_picks_the_source_data_and_says_when_it_is_missing(
    tmp_path, data, monkeypatch, capsys
):
    monkeypatch.setenv("DWP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DWP_OFFLINE", "1")
    monkeypatch.setenv("DWP_PROGRESS", "0")
    args = argparse.Namespace(preset="tiny", out=str(tmp_path / "nets"), notmnist="small")
    assert sources.cli(args) == 2  # offline and no tarball: an error that says what to do
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "notMNIST_small.tar.gz" in err and "Traceback" not in err
    seen = []
    monkeypatch.setattr(
        sources, "load_source_data", lambda cfg: seen.append(cfg.data_variant) or data
    )
    assert sources.cli(args) == 0
    assert seen == ["small"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data):
    cfg = tiny(n_nets=3, train_images=600)
    out = tmp_path_factory.mktemp("nets")
    return cfg, out, train_source_nets(cfg, out, "cpu", data=data)
