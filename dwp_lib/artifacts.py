"""The cache: atomic writes, a sidecar ``<name>.json`` (SHA-256, provenance), verified loads."""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import io
import json
import os
import platform
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from . import __version__

CACHE_ENV = "DWP_CACHE"


class ArtifactError(RuntimeError):
    """An artifact is missing, unreadable or does not match its record."""


class CorruptArtifactError(ArtifactError):
    """A cached file's bytes do not match the hash recorded when it was written."""


def cache_root() -> Path:
    """``$DWP_CACHE``, else ``$XDG_CACHE_HOME/dwp_lib`` (``~/.cache/dwp_lib``); not created."""
    if root := os.environ.get(CACHE_ENV):
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "dwp_lib"


def cache_dir(*parts: str) -> Path:
    """The cache folder (created on demand), or a sub-folder of it."""
    path = cache_root().joinpath(*parts)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CacheError(_cache_problem(path, "cannot be created", err)) from None
    return path


def shown(path: str | os.PathLike) -> str:
    """``path`` as messages show it: ``$DWP_CACHE/...`` for a file in the cache, else as given."""
    path = Path(path)
    try:
        return f"${CACHE_ENV}/{path.resolve().relative_to(cache_root().resolve()).as_posix()}"
    except ValueError:
        return str(path)


class CacheError(ArtifactError, OSError):
    """The cache folder (``$DWP_CACHE``) cannot be created or written."""


def _in_cache(path: Path) -> bool:
    try:
        return path.resolve().is_relative_to(cache_root().resolve())
    except OSError:
        return False


# the errors of writing a file (not, say, of the network a download reads from)
_WRITING = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO,
            errno.EFBIG, errno.EISDIR, errno.ENOTDIR}  # fmt: skip


def _naming(err: OSError, path: Path, always: bool = True) -> OSError:
    """``err`` as an error of ``path`` (which the message then names), of its kind (errno)."""
    if err.errno is None or not (always or err.filename is None):
        return err
    return OSError(err.errno, err.strerror or str(err), str(path))


def _cache_problem(path: Path, what: str, err: OSError) -> str:
    root = os.environ.get(CACHE_ENV)
    where = f"{CACHE_ENV}={root!r}" if root else f"the default cache (set {CACHE_ENV} to change it)"
    reason = err.strerror or type(err).__name__
    if isinstance(err, FileExistsError | NotADirectoryError):
        reason += " (a file stands where a folder is needed)"
    return (
        f"{path} {what}: {reason}. The library keeps its data and trained artifacts under "
        f"{where}; point {CACHE_ENV} at a folder you can write, e.g. "
        f"`export {CACHE_ENV}=$HOME/dwp-cache`, or fix that folder's permissions"
    )


def _hash_file(h, path: str | os.PathLike, chunk: int) -> str:
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    return _hash_file(hashlib.sha256(), path, chunk)


def md5_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex MD5 of a file's bytes (the checksum published for MNIST and notMNIST)."""
    return _hash_file(hashlib.md5(), path, chunk)


def current_umask() -> int:
    """The process's umask, from ``/proc`` where it can (else set and restored at once)."""
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it into place only if the block succeeds.
    It gets an ordinary ``open``'s mode (0o644 under umask 022), not mkstemp's 0o600."""
    path = Path(path)
    try:
        made = False  # an error of mkdir names the folder; one of mkstemp, a temporary file
        path.parent.mkdir(parents=True, exist_ok=True)
        made = True
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as err:
        if not _in_cache(path):  # a run folder (--out): the error names the file, not the cache
            raise _naming(err, path, always=made) from None
        raise CacheError(_cache_problem(path.parent, "cannot be written", err)) from None
    tmp_path = Path(tmp)
    try:
        try:
            if hasattr(os, "fchmod"):  # POSIX; Windows has no such modes
                os.fchmod(fd, 0o666 & ~current_umask())  # what ``open`` gives
        finally:
            os.close(fd)
        try:
            yield tmp_path
            os.replace(tmp_path, path)
        except OSError as err:  # a full disk names the file being written, not a temporary one
            if err.errno not in _WRITING or err.filename not in (None, str(tmp_path)):
                raise
            raise _naming(err, path) from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"
    atomic_write_bytes(path, text.encode())


def cpu_model() -> str:
    """The CPU's model and torch's instruction set on it: another CPU can round differently."""
    name = platform.processor() or ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), name)
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # an older torch
        capability = "unknown"
    return f"{name or 'unknown'} ({capability})"


def environment_record() -> dict[str, str]:
    """Versions and machine facts that go into every provenance record."""
    return {
        "dwp_lib": __version__,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def sidecar_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".json")


def save_artifact(path: str | os.PathLike, obj: Any, provenance: dict | None = None) -> str:
    """``torch.save`` ``obj`` atomically with a sidecar; return its SHA-256. The old file goes
    first and the new one lands last: a killed run leaves a file matching its record, or none."""
    path = Path(path)
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    record = {
        "file": path.name,
        "sha256": digest,
        "bytes": len(data),
        "provenance": provenance or {},
        "environment": environment_record(),
    }
    path.unlink(missing_ok=True)
    atomic_write_json(sidecar_path(path), record)
    atomic_write_bytes(path, data)
    return digest


def read_record(path: str | os.PathLike) -> dict:
    """The sidecar record of an artifact (hash, provenance, environment)."""
    side = sidecar_path(path)
    if not side.exists():
        raise ArtifactError(
            f"{path}: no record {side.name} beside it; delete the file and rebuild it"
        )
    try:
        return json.loads(side.read_text())
    except json.JSONDecodeError as err:
        raise CorruptArtifactError(
            f"{side}: unreadable record ({err}); delete {path} and its record, then rebuild"
        ) from None


def verify_artifact(path: str | os.PathLike) -> dict:
    """Check ``path`` against its sidecar: its record, or a :class:`CorruptArtifactError`."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path} does not exist")
    record = read_record(path)
    if (actual := sha256_file(path)) != record.get("sha256"):
        raise CorruptArtifactError(
            f"{path} is corrupted or truncated: its SHA-256 is {actual[:12]}..., the record says "
            f"{str(record.get('sha256'))[:12]}...; delete it (and {sidecar_path(path).name}) and "
            "rerun the stage that makes it"
        )
    return record


def load_artifact(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[Any, dict]:
    """Verify and load an artifact written by :func:`save_artifact`; return ``(obj, record)``."""
    record = verify_artifact(path)
    return torch.load(path, map_location=map_location, weights_only=False), record


def is_valid_artifact(path: str | os.PathLike) -> bool:
    """True if ``path`` exists and matches its record (no exception)."""
    try:
        verify_artifact(path)
    except ArtifactError:
        return False
    return True


def pinned_file_problem(path: str | os.PathLike, sha256: str) -> str | None:
    """Why ``path`` is not the pinned file of this hash ("missing", "damaged ..."), or None."""
    path = Path(path)
    if not path.is_file():
        return "missing"
    got = sha256_file(path)
    return None if got == sha256 else f"damaged (SHA-256 {got})"


def write_fetch_record(
    path: str | os.PathLike, provenance: dict, sha256: Mapping[str, str], how: Mapping[str, str]
) -> None:
    """The record of a folder of pinned downloads: ``provenance``, each file's hash and how."""
    path = Path(path)
    try:
        files = json.loads(path.read_text()).get("files", {}) if path.exists() else {}
    except ValueError:
        files = {}
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    for name, h in how.items():
        if name not in files or not h.startswith("found"):
            files[name] = {"sha256": sha256[name], "how": h, "when": now}
    atomic_write_json(path, {**provenance, "checked": now, "files": files})
