"""Sources tried in order (each an :class:`Attempt`), verified downloads, cached tensor files. If
all fail, :class:`DataUnavailableError` lists each try and the fix (never another data set).
``DWP_OFFLINE=1`` skips the open internet (``apt-get download`` too; not the package index, MNIST's
offline route); ``DWP_DOWNLOAD_TIMEOUT`` (default 10 s) fails fast without internet."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

from .. import artifacts
from ..progress import progress
from .imageset import ImageSet

SPLITS: tuple[str, ...] = ("train", "test")


class DataUnavailableError(RuntimeError):
    """No source could provide a data set; the message lists each try and the fix."""

    def __init__(self, what: str, attempts: list[Attempt], fix: str):
        self.what, self.attempts, self.fix = what, list(attempts), fix
        lines = [f"{what} could not be loaded. Sources tried, in order:"]
        disk = disk_error(self.attempts) or low_space()
        if disk:  # no other source helps: said first, not as one more try among the advice
            lines.insert(0, f"{disk}. {what} could not be stored there; {DISK_FIX}")
        lines += [f"  {i}. {a.source}: {a.detail}" for i, a in enumerate(self.attempts, 1)]
        lines.append(f"How to fix: {fix}")
        super().__init__("\n".join(lines))


# a try that failed because the disk refused the file: full, over quota, or read-only
_DISK = re.compile(
    r"\[Errno (?:28|30|122)\] ([^:'\n]+?)(?::\s*'([^']*)'(?:\s*->\s*'([^']*)')?|$|[;)\n])"
)
DISK_FIX = (
    "free some space on that disk (or make it writable), or point DWP_CACHE at a folder on a "
    "disk that has room, e.g. `export DWP_CACHE=$HOME/dwp-cache`; then run the command again"
)


def disk_error(attempts: list[Attempt]) -> str | None:
    """``"<the OS's words> at <path>"`` for the first try that the disk refused, else None."""
    for a in attempts:
        if m := _DISK.search(a.detail):
            where = m.group(3) or m.group(2)
            return f"{m.group(1)}" + (f" at {where}" if where else f" (in {a.source})")
    return None


LOW_SPACE = 64 << 20  # bytes: less than one data set needs


def low_space() -> str | None:
    """``"Only N bytes free at <cache>"`` when the cache's disk is (nearly) full, else None
    (apt-get or pip may report a full disk as a damaged file)."""
    try:
        free = shutil.disk_usage(artifacts.cache_root()).free
    except OSError:  # no cache folder yet: nothing written, nothing full
        return None
    if free >= LOW_SPACE:
        return None
    return f"Only {free:,} bytes are free at {artifacts.cache_root()} (the tries below may have failed for that)"


@dataclass
class Attempt:
    """One source tried: its name and what happened."""

    source: str
    detail: str


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits are {', '.join(SPLITS)}")
    return split


def data_dir(*parts: str) -> Path:
    """``<cache>/data/...`` (created on demand)."""
    return artifacts.cache_dir("data", *parts)


def offline() -> bool:
    return os.environ.get("DWP_OFFLINE", "").strip().lower() in ("1", "true", "yes")


def download_timeout() -> float:
    return float(os.environ.get("DWP_DOWNLOAD_TIMEOUT", "10"))


def download(url: str, dest: Path, *, md5: str | None = None, size: int | None = None) -> Path:
    """Fetch ``url`` to ``dest`` atomically, checking its MD5 and/or size before it is kept;
    raises ``OSError`` (network, timeout) or ``ValueError`` (wrong size or checksum)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    timeout = download_timeout()
    with artifacts.atomic_path(dest) as tmp:
        req = urllib.request.Request(url, headers={"User-Agent": "dwp_lib"})
        with urllib.request.urlopen(req, timeout=timeout) as resp, open(tmp, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            h = hashlib.md5()
            with progress(total=total, unit="B", unit_scale=True, desc=dest.name) as bar:
                while block := resp.read(1 << 20):
                    out.write(block)
                    h.update(block)
                    bar.update(len(block))
        got = tmp.stat().st_size
        if size is not None and got != size:
            raise ValueError(f"{url}: got {got:,} bytes, expected {size:,}")
        if md5 is not None and h.hexdigest() != md5:
            raise ValueError(f"{url}: MD5 {h.hexdigest()}, expected {md5}")
    return dest


def describe_error(err: BaseException) -> str:
    """A short, readable reason for a failed try."""
    if isinstance(err, urllib.error.URLError) and not isinstance(err, urllib.error.HTTPError):
        err = err.reason if isinstance(err.reason, BaseException) else err
    if isinstance(err, (socket.timeout, TimeoutError)):
        return f"timed out after {download_timeout():g} s (no internet?)"
    if isinstance(err, socket.gaierror):
        return f"cannot resolve the host ({err.strerror or err}); no internet?"
    return f"{type(err).__name__}: {err}"


def check_cached_file(
    path: Path, *, md5: str | None = None, sha256: str | None = None, size: int | None = None
) -> str | None:
    """Verify a cached source file; delete it if it fails. Returns why it failed, or None."""
    if not path.exists():
        return "not in the cache"
    if not path.is_file():  # not deleted and fetched again: it may be the user's folder
        raise artifacts.ArtifactError(
            f"{path} is a folder (or another non-file) where the cached file {path.name} goes; "
            "move it away (the file is then fetched again), or put the file itself there"
        )
    why = None
    if size is not None and path.stat().st_size != size:
        why = f"{path.stat().st_size:,} bytes, expected {size:,}"
    elif md5 is not None and (got := artifacts.md5_file(path)) != md5:
        why = f"MD5 {got}, expected {md5}"
    elif sha256 is not None and (got := artifacts.sha256_file(path)) != sha256:
        why = f"SHA-256 {got}, expected {sha256}"
    if why:
        warnings.warn(
            f"{path} is corrupted or truncated ({why}); deleted, fetching it again", stacklevel=3
        )
        path.unlink()
        return f"cached copy was corrupted ({why}); deleted"
    return None


def save_imageset(path: Path, ds: ImageSet) -> None:
    """Write ``ds`` as a verified tensor file (atomic, with a SHA-256 sidecar)."""
    obj = {
        "images": ds.images.contiguous(),
        "labels": ds.labels.contiguous(),
        "groups": None if ds.groups is None else ds.groups.contiguous(),
        "classes": list(ds.classes),
        "group_names": list(ds.group_names),
        "provenance": ds.provenance,
    }
    artifacts.save_artifact(path, obj, ds.provenance)


def load_imageset(path: Path, expect: dict | None = None) -> ImageSet | None:
    """A cached set, or None: an unusable file (hash, or provenance not ``expect``) is removed."""
    if not path.exists():
        return None
    try:
        obj, _ = artifacts.load_artifact(path)
        ds = ImageSet(
            images=obj["images"],
            labels=obj["labels"],
            provenance=obj["provenance"],
            classes=tuple(obj["classes"]),
            groups=obj.get("groups"),
            group_names=tuple(obj.get("group_names", ())),
        )
        for key, value in (expect or {}).items():
            if ds.provenance.get(key) != value:
                raise artifacts.ArtifactError(
                    f"{path}: {key} is {ds.provenance.get(key)!r}, expected {value!r}"
                )
        if len(ds) != ds.provenance.get("count"):
            raise artifacts.ArtifactError(
                f"{path}: {len(ds)} images, the record says {ds.provenance.get('count')}"
            )
    except Exception as err:  # noqa: BLE001  (any unreadable file is rebuilt)
        warnings.warn(
            f"cached data {path} is unusable ({err}); deleting it and rebuilding", stacklevel=3
        )
        for p in (path, artifacts.sidecar_path(path)):
            p.unlink(missing_ok=True)
        return None
    return ds
