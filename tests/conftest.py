"""Shared test settings."""

import pytest
import torch

from dwp_lib import experiment as ex
from dwp_lib.data import ImageSet
from dwp_lib.experiment import Experiment
from dwp_lib.kernel_bank import KernelBank, build_kernel_bank
from dwp_lib.nets import FConv, xavier_normal_init


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """The tests' tensors are tiny: extra intra-op threads only add overhead, and on a machine
    whose two cores are shared they make torch many times slower. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _fake_digits(n: int, seed: int) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    images = torch.randint(0, 40, (n, 28, 28), generator=g, dtype=torch.uint8)
    for c in range(10):  # a class-dependent bright bar, so a net can learn something
        images[labels == c, 2 + 2 * c : 4 + 2 * c, 4:24] = 255
    return ImageSet(images, labels.to(torch.int64), {"dataset": "fake digits", "split": "x"})


@pytest.fixture
def fake_world(monkeypatch, tmp_path):
    """The experiment on a bank cut from 3 random nets and on 300 fake digits."""
    monkeypatch.setenv("DWP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DWP_PROGRESS", "0")
    calls = {"bank": 0}

    def fake_bank(cfg, out_dir=None, device=None, **kw):
        calls["bank"] += 1
        nets = [
            xavier_normal_init(FConv(*cfg.widths), torch.Generator().manual_seed(i))
            for i in range(3)
        ]
        recs = [{"index": i, "seed": i, "test_accuracy": 0.5} for i in range(3)]
        path = out_dir / cfg.bank_file()
        build_kernel_bank(nets, cfg, recs).save(path)
        return KernelBank.load(path)

    monkeypatch.setattr(ex.runner, "get_kernel_bank", fake_bank)
    digits = (_fake_digits(300, 0), _fake_digits(100, 1))
    monkeypatch.setattr(Experiment, "mnist", lambda self: digits)
    return calls
