"""Shared test settings."""

import base64
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

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
def fake_digits(monkeypatch):
    """MNIST replaced by 300 train and 100 test fake digits in every :class:`Experiment`."""
    digits = (_fake_digits(300, 0), _fake_digits(100, 1))
    monkeypatch.setattr(Experiment, "mnist", lambda self: digits)
    return digits


@pytest.fixture
def fake_world(monkeypatch, tmp_path, fake_digits):
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
    return calls


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _make_notmnist_tarball(path: Path, n_fonts: int = 12) -> None:
    """notMNIST's layout: notMNIST_small/<letter>/<base64 font name>.png, plus one bad PNG.
    Each image is noise with a bright bar whose place depends on the letter (learnable)."""
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:

        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for c, letter in enumerate("ABCDEFGHIJ"):
            for k in range(n_fonts):
                stem = base64.b64encode(f"Font{k}.ttf".encode()).decode()
                a = rng.integers(0, 80, (28, 28)).astype(np.uint8)
                a[2 + 2 * c : 4 + 2 * c, 4:24] = 255
                add(f"notMNIST_small/{letter}/{stem}.png", _png(a))
        add("notMNIST_small/C/RGFtYWdlZC50dGY=.png", b"\x89PNG\r\n\x1a\n truncated")


@pytest.fixture
def make_tarball():
    """``make_tarball(path, n_fonts=12)``: a small fake of notMNIST_small.tar.gz at ``path``."""
    return _make_notmnist_tarball


@pytest.fixture
def fake_release(monkeypatch, tmp_path):
    """A fake release of the authors' files, placed in a temporary cache (``release_fakes``)."""
    from release_fakes import place_fake_release

    return place_fake_release(monkeypatch, tmp_path)
