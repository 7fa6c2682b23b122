"""The paper authors' released kernel VAEs and banks (``bayesgroup/deep-weight-prior``, GPL-3.0)
at a pinned commit: found in :func:`release_dir` or downloaded (not with ``DWP_OFFLINE=1``), each
checked against its SHA-256; every result that uses them says so (``notice``)."""

from __future__ import annotations

import errno
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import artifacts

#: The layer of the target network each released file belongs to, and its kernel size.
LAYER_KERNELS = {"conv1": 7, "conv2": 5}


class ReleaseUnavailableError(RuntimeError):
    """A released file is missing or damaged and cannot be downloaded; says what to do."""


@dataclass(frozen=True)
class Release:
    """A pinned set of files from a public GitHub repository: paths and their SHA-256."""

    repo: str
    commit: str
    licence: str
    files: Mapping[str, str]  # path in the repository -> SHA-256
    vaes: Mapping[str, str] = field(default_factory=dict)  # layer -> state_dict path
    banks: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # layer -> split -> path
    licence_file: str = "LICENSE"
    base_url: str | None = None  # default: GitHub's raw files at the commit

    @property
    def url(self) -> str:
        if self.base_url is not None:
            return self.base_url.rstrip("/") + "/"
        return f"https://raw.githubusercontent.com/{self.repo}/{self.commit}/"

    @property
    def notice(self) -> str:
        """One line for every figure, table and page that uses these files."""
        return (
            f"The released kernel VAEs and kernel banks of Atanov et al. (repository {self.repo}, "
            f"commit {self.commit[:10]}), licence {self.licence}: the authors' files, not ours."
        )


#: The authors' MNIST-experiment release (checked byte for byte against these hashes).
AUTHORS_RELEASE = Release(
    repo="bayesgroup/deep-weight-prior",
    commit="21c775c9cebd7d38b1a3b57e779255353658669f",
    licence="GPL-3.0",
    files={
        "LICENSE": "8ceb4b9ee5adedde47b31e975c1d90c73ad27b6b165a1dcd80c7c545eb65b903",
        "data/fconv/vae7x7/vae_params.torch": "0864949e9b99e2f8343a129279dd855e19921488b117b98c450915f1ce94bb55",
        "data/fconv/vae7x7/params.yaml": "7d970669afd0fb711ed189df6a7e3f733e9f570b4e343ff3687233519401de71",
        "data/fconv/vae5x5/vae_params.torch": "34e05ddff06f55c2a49fc78c8a1162294a9cb393aed51fde5230009435aca4ae",
        "data/fconv/vae5x5/params.yaml": "845c01f8c2f64d23adf559560e7fee942eab90255e1c58d9d8b275e3e3489889",
        "data/fconv/conv7x7/train.npy": "e800f1e3c5f0a8010e76562cc369f14ba975cf1481d54fd96c6e7a37b23efb31",
        "data/fconv/conv7x7/test.npy": "9aee240bbde7c5567b17d405f3c14d6c41b95ef7da96e003acc45fb94a01ec8b",
        "data/fconv/conv5x5/test.npy": "374e9001dac53eb6f2e9ec52d245d1f84e144756532107da9e869c2bda0b1526",
    },
    vaes={
        "conv1": "data/fconv/vae7x7/vae_params.torch",
        "conv2": "data/fconv/vae5x5/vae_params.torch",
    },
    # Their 5x5 train.npy (81,000+ slices) is not part of this pinned set: only the test file.
    banks={
        "conv1": {"train": "data/fconv/conv7x7/train.npy", "test": "data/fconv/conv7x7/test.npy"},
        "conv2": {"test": "data/fconv/conv5x5/test.npy"},
    },
)

RECORD = "release.json"


def release_dir(release: Release | None = None) -> Path:
    """``$DWP_CACHE/data/authors-release/<commit>``; the files keep their repository paths."""
    return artifacts.cache_dir("data", "authors-release", (release or AUTHORS_RELEASE).commit)


#: errors of this machine's file system: a download failing with one is the folder's fault
LOCAL_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}
LOCAL_ERRNOS |= {errno.ENOTDIR, errno.EISDIR, errno.EEXIST}


def _folder_problem(where: Path, err: OSError) -> ReleaseUnavailableError:
    kind = {errno.ENOTDIR: "a file stands where a folder is needed"}.get(err.errno, "")
    kind = kind or {errno.EISDIR: "a folder stands where a file is needed"}.get(err.errno, "")
    return ReleaseUnavailableError(
        f"the authors' release cannot be written to {where}: {err.strerror or err}"
        f"{f' ({kind})' if kind else ''}. Point DWP_CACHE at a folder you may write to (e.g. "
        "export DWP_CACHE=$HOME/dwp-cache), free some space, or fix that folder "
        "(its permissions, or move away what is in the way), then run `python -m dwp_lib "
        "release` again"
    )


def _download(release: Release, path: str, dest: Path) -> None:
    """Fetch one file with pooch (hash-checked before it is moved into place)."""
    try:
        import pooch
    except ImportError:  # pragma: no cover (a dependency; only a broken install lacks it)
        raise ReleaseUnavailableError(
            "downloading the authors' release needs pooch: pip install pooch"
        ) from None
    from .data.sources import download_timeout

    pooch.get_logger().setLevel("WARNING")
    downloader = pooch.HTTPDownloader(timeout=download_timeout(), progressbar=False)
    pooch.retrieve(
        release.url + path,
        known_hash=f"sha256:{release.files[path]}",
        fname=dest.name,
        path=dest.parent,
        downloader=downloader,
    )


def fetch_release(
    paths: Iterable[str] | None = None, release: Release | None = None
) -> dict[str, Path]:
    """The local, verified copy of each of ``paths`` (default: every file of the release); a
    file neither cached nor downloadable raises, naming the folder for a correct copy."""
    from .data.sources import offline

    release = release or AUTHORS_RELEASE
    root = release_dir(release)
    paths = list(release.files if paths is None else paths)
    if unknown := [p for p in paths if p not in release.files]:
        raise ValueError(f"not files of the release: {unknown}; it has {sorted(release.files)}")
    if release.licence_file not in paths:
        paths.append(release.licence_file)
    try:  # the record goes there, and any download: a folder that takes no file fails first
        with tempfile.NamedTemporaryFile(dir=root, prefix=".write-test-"):
            pass
    except OSError as err:
        raise _folder_problem(root, err) from None
    problems, how, network = [], {}, None if not offline() else "DWP_OFFLINE=1"
    for path in paths:
        dest, want = root / path, release.files[path]
        why = artifacts.pinned_file_problem(dest, want)
        if why is None:
            how[path] = "found in the cache"
            continue
        if network is None:
            try:
                _download(release, path, dest)
                why = artifacts.pinned_file_problem(dest, want)
                how[path] = f"downloaded from {release.url}{path}"
            except Exception as err:  # noqa: BLE001 (every failure is reported with the fix)
                if isinstance(err, OSError) and err.errno in LOCAL_ERRNOS:  # not the network's
                    raise _folder_problem(Path(err.filename or dest), err) from None
                reason = str(err).splitlines()[0] if str(err) else ""
                network = f"{type(err).__name__}: {reason[:160]}"
                why = f"{why}; the download failed ({network})"
        else:
            why = f"{why}; not downloaded ({'DWP_OFFLINE=1' if offline() else 'no network'})"
        if why is not None:
            problems.append(f"  {path}: {why}; expected SHA-256 {want}")
    if problems:
        raise ReleaseUnavailableError(
            f"the authors' released files ({release.repo} at commit {release.commit}, "
            f"{release.licence}) are not all available:\n"
            + "\n".join(problems)
            + f"\nHow to fix: on a machine with internet, run `python -m dwp_lib release`; "
            f"offline, place a copy of each file, keeping its repository path, under\n  {root}\n"
            f"(e.g. {root / release.vaes.get('conv1', paths[0])}), then run it again."
        )
    artifacts.write_fetch_record(root / RECORD, provenance(release), release.files, how)
    return {p: root / p for p in paths}


def provenance(release: Release | None = None) -> dict:
    """What every result that uses the release records about it."""
    release = release or AUTHORS_RELEASE
    return {
        "source": "released",
        "repo": release.repo,
        "commit": release.commit,
        "licence": release.licence,
        "url": release.url,
        "notice": release.notice,
    }


def load_released_bank(release: Release | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """The authors' kernel banks as float32 slices ``(N, k, k)``: ``{layer: {split: tensor}}``."""
    release = release or AUTHORS_RELEASE
    import numpy as np

    files = fetch_release([p for s in release.banks.values() for p in s.values()], release)
    out: dict[str, dict[str, torch.Tensor]] = {}
    for layer, splits in release.banks.items():
        k = LAYER_KERNELS[layer]
        for split, path in splits.items():
            arr = np.load(files[path], allow_pickle=False)
            if arr.ndim not in (3, 4) or arr.shape[-2:] != (k, k):
                raise ReleaseUnavailableError(
                    f"{files[path]}: shape {arr.shape}, expected (N, 1, {k}, {k}) slices"
                )
            arr = np.ascontiguousarray(arr, dtype=np.float32)
            out.setdefault(layer, {})[split] = torch.from_numpy(arr).reshape(-1, k, k)
    return out


def cli(args) -> int:
    """``python -m dwp_lib release``: fetch (or find) and verify every released file."""
    files = fetch_release()  # its errors reach the command line's boundary: error: ..., exit 2
    for path, local in files.items():
        sha, size = AUTHORS_RELEASE.files[path][:16], local.stat().st_size
        print(f"ok  {path}  sha256 {sha}...  ({size:,} bytes)")
    print(AUTHORS_RELEASE.notice)
    print(f"Cached in {release_dir()} (provenance: {RECORD})")
    return 0


#: the share of the released 5x5 slices held out when our VAEs are fitted to them (the authors
#: published only their 5x5 *test* bank: we split it, seeded, and say so wherever it is used)
CONV2_HELD_OUT = 0.2


def released_bank_splits(release: Release | None = None, seed: int = 0) -> dict:
    """The released banks as ``{layer: {"train", "test"}}``, the 5x5 test file split (seeded)."""
    bank = load_released_bank(release)
    out = {"conv1": dict(bank["conv1"])}
    w = bank["conv2"]["test"]
    order = torch.randperm(len(w), generator=torch.Generator().manual_seed(seed))
    cut = int(round(len(w) * (1 - CONV2_HELD_OUT)))
    out["conv2"] = {"train": w[order[:cut]], "test": w[order[cut:]]}
    return out
