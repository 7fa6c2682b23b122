"""The real notMNIST sample (``variant="sample"``), on small fake idx files built here.

The registry (:data:`dwp_lib.data.notmnist_sample.SAMPLE`) is replaced by one whose SHA-256s
and count are the fakes'; the cache is a temporary folder, and downloads come from a server on
the loopback address or not at all (``DWP_OFFLINE=1``).
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import http.server
import json
import threading

import numpy as np
import pytest
import torch

from dwp_lib import artifacts
from dwp_lib.cli import build_parser, main
from dwp_lib.data import VARIANTS, DataUnavailableError, ImageSet, load_notmnist, mnist
from dwp_lib.data import notmnist_sample as ns
from dwp_lib.experiment import sources
from dwp_lib.experiment.overrides import with_notmnist
from dwp_lib.source_nets import DATA_LABELS, SourceNetsConfig, load_source_data

REAL = ns.SAMPLE  # the pinned registry, before any test replaces it
N = 200  # fake images, 20 per letter


def fake_files(n: int = N, *, size: int = 28, labels: np.ndarray | None = None) -> dict:
    """``{file name: gz bytes}`` of ``n`` random images and balanced (or given) labels."""
    rng = np.random.default_rng(n + size)
    images = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
    if labels is None:
        labels = rng.permutation(np.arange(n) % 10)
    return {
        REAL.images: gzip.compress(mnist.idx_bytes(images)),
        REAL.labels: gzip.compress(mnist.idx_bytes(np.asarray(labels, dtype=np.uint8))),
    }


def registry(files: dict, count: int = N, **kw) -> ns.SampleSource:
    sha = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    return dataclasses.replace(REAL, sha256=sha, count=count, **kw)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DWP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DWP_OFFLINE", "1")
    monkeypatch.setenv("DWP_PROGRESS", "0")
    return tmp_path / "cache"


@pytest.fixture
def fake(cache, monkeypatch):
    """Fake files that the (replaced) registry pins; ``place()`` puts them in the cache folder."""
    files = fake_files()
    monkeypatch.setattr(ns, "SAMPLE", registry(files))

    def place():
        for name, data in files.items():
            (ns.sample_dir() / name).write_bytes(data)

    return files, place


def test_a_placed_copy_is_verified_split_and_labelled(fake):
    files, place = fake
    place()
    train, test = load_notmnist("train", variant="sample"), load_notmnist("test", variant="sample")
    assert (len(train), len(test)) == (170, 30)  # 85% / 15%, stratified by letter
    assert train.class_counts().tolist() == [17] * 10 and test.class_counts().tolist() == [3] * 10
    assert train.classes == tuple("ABCDEFGHIJ") and train.images.shape[1:] == (28, 28)
    # the two splits are the file's images, each once
    x = mnist.parse_idx(gzip.decompress(files[REAL.images]))
    both = {bytes(im) for im in torch.cat([train.images, test.images]).numpy()}
    assert both == {bytes(im) for im in x} and len(both) == N
    p = test.provenance
    assert p["variant"] == "sample" and p["split"] == "test" and p["count"] == 30
    assert "not split by font" in p["label"] and "not split by font" in p["split_rule"]
    assert "stratified by letter" in p["split_rule"] and "seed 0" in p["split_rule"]
    assert p["commit"] == REAL.commit and p["licence"].startswith("MIT")
    assert "Yaroslav Bulatov" in p["credits"] and "David Flanagan" in p["credits"]
    assert p["checksum"] == f"sha256:{hashlib.sha256(files[REAL.images]).hexdigest()}"
    assert "found in the cache folder" in p["source"]
    record = json.loads((ns.sample_dir() / ns.RECORD).read_text())
    assert record["label"] == ns.SAMPLE.label and record["commit"] == REAL.commit
    assert set(record["files"]) == set(files) and "Bulatov" in record["credits"]
    # warm: the tensor files, not the idx files; and the same split
    for name in files:
        (ns.sample_dir() / name).unlink()
    assert torch.equal(load_notmnist("test", variant="sample").images, test.images)


def test_the_real_registry_and_its_split():
    assert REAL.count == 10_000 and REAL.per_letter == 1_000
    assert REAL.url == f"https://raw.githubusercontent.com/{REAL.repo}/{REAL.commit}/"
    assert REAL.label == DATA_LABELS["sample"]  # every result names it the same way
    labels = np.arange(REAL.count) % 10
    split = ns.split_indices(labels, REAL)
    assert (len(split["train"]), len(split["test"])) == (8_500, 1_500)
    assert np.bincount(labels[split["test"]]).tolist() == [150] * 10
    again = ns.split_indices(labels, REAL)
    assert all(np.array_equal(split[k], again[k]) for k in split)  # fixed seed


def test_a_corrupted_byte_names_the_file_and_its_hash(fake):
    files, place = fake
    place()
    path = ns.sample_dir() / REAL.images
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DataUnavailableError) as info:
        load_notmnist("train", variant="sample")
    msg = str(info.value)
    assert (
        f"{REAL.images} in {ns.sample_dir()}: damaged (SHA-256 {artifacts.sha256_file(path)})"
        in msg
    )
    assert f"{REAL.images} (SHA-256 {ns.SAMPLE.sha256[REAL.images]})" in msg
    assert REAL.labels not in msg.split("How to fix:")[1]  # the good file is not asked for
    assert not ns.cache_path("train").exists()


def test_offline_without_the_files_names_each_file_and_the_folder(cache, fake, capsys, monkeypatch):
    with pytest.raises(DataUnavailableError) as info:
        load_notmnist("test", variant="sample")
    msg = str(info.value)
    assert str(ns.sample_dir()) in msg and "skipped (DWP_OFFLINE=1)" in msg
    for name, sha in ns.SAMPLE.sha256.items():
        assert f"{name} (SHA-256 {sha})" in msg
    assert "data prepare --notmnist sample" in msg
    # the command line: the error, no traceback
    import dwp_lib.data

    def tiny_mnist(split):
        return ImageSet(torch.zeros(10, 28, 28, dtype=torch.uint8), torch.arange(10))

    monkeypatch.setattr(dwp_lib.data, "load_mnist", tiny_mnist)
    assert main(["data", "prepare", "--notmnist", "sample"]) == 2  # as for small and large
    out, err = capsys.readouterr()
    assert (
        "error: notMNIST sample train could not be prepared" in err and str(ns.sample_dir()) in err
    )
    assert "Traceback" not in out + err
    args = ["source-nets", "--preset", "tiny", "--notmnist", "sample", "--out", str(cache / "nets")]
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and REAL.images in err and "Traceback" not in out + err


@pytest.mark.parametrize(
    "files, count, found",
    [
        (fake_files(labels=np.r_[np.zeros(21), np.arange(179) % 9 + 1]), N, "A: 21"),
        (fake_files(size=32), N, f"shape ({N}, 32, 32)"),
        (fake_files(n=190), N, "shape (190, 28, 28)"),
        (fake_files(labels=np.arange(N) % 11), N, "labels run up to 10"),
    ],
    ids=["unbalanced", "32x32", "too-few", "eleven-labels"],
)
def test_wrong_content_is_refused_saying_what_was_found(cache, monkeypatch, files, count, found):
    monkeypatch.setattr(ns, "SAMPLE", registry(files, count))
    for name, data in files.items():
        (ns.sample_dir() / name).write_bytes(data)
    with pytest.raises(DataUnavailableError) as info:
        load_notmnist("train", variant="sample")
    msg = str(info.value)
    assert found in msg and f"must hold {N} images of 28x28" in msg and "20 of each" in msg
    assert not ns.cache_path("train").exists() and not ns.cache_path("test").exists()


@pytest.fixture
def server(tmp_path):
    """An HTTP server on the loopback address serving ``tmp_path / "www"``."""
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(root), **k)

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def test_the_download_is_pinned_by_sha256(cache, monkeypatch, server):
    monkeypatch.delenv("DWP_OFFLINE")
    root, url = server
    files = fake_files()
    monkeypatch.setattr(ns, "SAMPLE", registry(files, base_url=url))
    damaged = bytearray(files[REAL.images])
    damaged[100] ^= 0xFF
    (root / REAL.images).write_bytes(bytes(damaged))  # the server serves a damaged copy
    (root / REAL.labels).write_bytes(files[REAL.labels])
    with pytest.raises(DataUnavailableError) as info:
        load_notmnist("train", variant="sample")
    assert "does not match the known hash" in str(info.value)
    assert not (ns.sample_dir() / REAL.images).exists()  # nothing unverified is kept
    (root / REAL.images).write_bytes(files[REAL.images])
    ds = load_notmnist("train", variant="sample")
    assert len(ds) == 170 and f"downloaded from {url}" in ds.provenance["source"]
    record = json.loads((ns.sample_dir() / ns.RECORD).read_text())
    assert record["files"][REAL.images]["how"] == f"downloaded from {url}{REAL.images}"


def test_every_place_that_chooses_a_variant_knows_the_sample(cache, fake, capsys, monkeypatch):
    _, place = fake
    assert "sample" in VARIANTS and set(DATA_LABELS) == set(VARIANTS)
    parser = build_parser()
    for command in (["data", "prepare"], ["source-nets"], ["reproduce"]):
        assert parser.parse_args([*command, "--notmnist", "sample"]).notmnist == "sample"
    assert with_notmnist("sample", ["bayes.steps=5"]) == [
        "source.data_variant=sample",
        "bayes.steps=5",
    ]
    assert main(["reproduce", "--preset", "tiny", "--notmnist", "sample", "--print-config"]) == 0
    assert '"data_variant": "sample"' in capsys.readouterr().out
    cfg = dataclasses.replace(SourceNetsConfig.tiny(), data_variant="sample")
    assert cfg.training_dict()["data_variant"] == "sample" and "sample-" in cfg.default_dir().name
    with pytest.raises(ValueError, match=r"data_variant='medium' must be in \['synthetic'"):
        SourceNetsConfig(data_variant="medium")
    place()
    data = load_source_data(cfg)
    assert data.provenance["label"] == DATA_LABELS["sample"]
    assert data.provenance["train"]["variant"] == "sample" and len(data.y_test) == 30
    # the source stage's command line asks for the same data (nothing is trained here)
    seen = []

    class Bank:
        def summary(self):
            return "bank"

    monkeypatch.setattr(sources, "get_kernel_bank", lambda c, out: seen.append(c) or Bank())
    args = argparse.Namespace(preset="tiny", out=str(cache / "nets"), notmnist="sample")
    assert sources.cli(args) == 0 and [c.data_variant for c in seen] == ["sample"]
