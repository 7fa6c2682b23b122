"""A sample of the real notMNIST: 10,000 images of ``notMNIST_small`` in MNIST's idx format, from
``davidflanagan/notMNIST-to-MNIST`` (MIT) at a pinned commit, each file SHA-256-checked. No font
is recorded, so the split is by letter, and every result says so (``SampleSource.label``)."""

from __future__ import annotations

import gzip
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import artifacts
from . import sources
from .imageset import LETTERS, ImageSet

RECORD = "provenance.json"


@dataclass(frozen=True)
class SampleSource:
    """The pinned files of the sample, what they must hold and how they are split."""

    repo: str
    commit: str
    licence: str
    images: str  # file names in the repository
    labels: str
    sha256: Mapping[str, str]  # file name -> SHA-256
    count: int  # images in the file, an equal number per letter
    test_fraction: float = 0.15
    seed: int = 0
    base_url: str | None = None  # default: GitHub's raw files at the commit

    @property
    def url(self) -> str:
        if self.base_url is not None:
            return self.base_url.rstrip("/") + "/"
        return f"https://raw.githubusercontent.com/{self.repo}/{self.commit}/"

    @property
    def per_letter(self) -> int:
        return self.count // len(LETTERS)

    @property
    def label(self) -> str:
        """What every result that uses the sample calls it."""
        return f"real notMNIST sample ({self.count:,} images of notMNIST_small, not split by font)"

    @property
    def split_rule(self) -> str:
        return (
            f"not split by font (the file records none): stratified by letter, a seeded "
            f"(seed {self.seed}) random {self.test_fraction:.0%} of each letter's images to test"
        )

    @property
    def credits(self) -> str:
        return (
            "notMNIST by Yaroslav Bulatov (2011); the sample drawn from notMNIST_small and "
            f"stored in idx format by David Flanagan ({self.repo}, {self.licence} licence, "
            "Copyright (c) 2016 David Flanagan), posted with permission of notMNIST's author"
        )


#: The sample, at the commit checked byte for byte against these hashes.
SAMPLE = SampleSource(
    repo="davidflanagan/notMNIST-to-MNIST",
    commit="17823f4d4a3acd8317c07866702d2eb2ac79c7a0",
    licence="MIT",
    images="t10k-images-idx3-ubyte.gz",
    labels="t10k-labels-idx1-ubyte.gz",
    sha256={
        "t10k-images-idx3-ubyte.gz": "70ae9e06201f2827e5b0a3781a3169d735dd2efc69996b9eeaee7f10ed4044d7",
        "t10k-labels-idx1-ubyte.gz": "1fa03836e01c862542f8eb83463bb951bebec6fcb3efa28dad748c6b38a9021b",
    },
    count=10_000,
)


class NotTheSampleError(ValueError):
    """Files that match their pinned SHA-256 but not the sample's content (count, size, letters)."""


def sample_dir(source: SampleSource | None = None) -> Path:
    """Where the idx files are kept: ``$DWP_CACHE/data/notmnist-sample/<commit>/``."""
    return sources.data_dir("notmnist-sample", (source or SAMPLE).commit)


def cache_path(split: str) -> Path:
    return sources.data_dir("notmnist") / f"notmnist-sample-{split}.pt"


def _download(source: SampleSource, name: str, folder: Path) -> None:
    """Fetch one file with pooch: it checks the SHA-256 before moving the file into place."""
    import pooch

    pooch.get_logger().setLevel("WARNING")
    get = pooch.HTTPDownloader(timeout=sources.download_timeout(), progressbar=False)
    sha256 = f"sha256:{source.sha256[name]}"
    pooch.retrieve(source.url + name, known_hash=sha256, fname=name, path=folder, downloader=get)


def _reason(err: BaseException) -> str:
    """The innermost cause of a failed download (requests wraps urllib3 wraps the socket)."""
    inner = err
    for _ in range(5):
        nested = getattr(inner, "reason", None)
        if not isinstance(nested, BaseException) and inner.args:
            nested = inner.args[0]
        if not isinstance(nested, BaseException) or nested is inner:
            break
        inner = nested
    text = (str(inner).splitlines() or [""])[0]
    return f"failed ({type(err).__name__}: {text[:200]}{'...' if len(text) > 200 else ''})"


def fetch_sample(source: SampleSource | None = None) -> tuple[dict[str, Path], dict[str, str]]:
    """The verified local copy of each idx file and how it came; a missing or wrong one is fetched
    where allowed, else :class:`DataUnavailableError` says where; writes ``provenance.json``."""
    source = source or SAMPLE
    folder = sample_dir(source)
    attempts, problems, how = [], [], {}
    network = "skipped (DWP_OFFLINE=1)" if sources.offline() else None
    for name, want in source.sha256.items():
        why = artifacts.pinned_file_problem(folder / name, want)
        if why is None:
            how[name] = "found in the cache folder"
            continue
        attempts.append(sources.Attempt(f"{name} in {folder}", why))
        if network is None:
            try:
                _download(source, name, folder)
                why = artifacts.pinned_file_problem(folder / name, want)
                how[name] = f"downloaded from {source.url}{name}"
            except Exception as err:  # noqa: BLE001 (every failure is reported with the fix)
                attempts.append(sources.Attempt(f"download {source.url}{name}", _reason(err)))
                network = f"not tried (the download of {name} failed)"
        else:
            attempts.append(sources.Attempt(f"download {source.url}{name}", network))
        if why is not None:
            problems.append(f"{name} (SHA-256 {want})")
    if problems:
        raise sources.DataUnavailableError(
            f"the real notMNIST sample ({source.repo} at commit {source.commit}, licence "
            f"{source.licence})",
            attempts,
            "on a machine with internet, run `python -m dwp_lib data prepare --notmnist sample`; "
            f"offline, place a correct copy of each file below, named as here, in\n  {folder}\n  "
            + "\n  ".join(f"- {p}" for p in problems)
            + "\nthen run it again.",
        )
    artifacts.write_fetch_record(folder / RECORD, provenance(source), source.sha256, how)
    return {name: folder / name for name in source.sha256}, how


def provenance(source: SampleSource | None = None) -> dict:
    """What every result that uses the sample records about it."""
    source = source or SAMPLE
    return {
        "label": source.label,
        "repo": source.repo,
        "commit": source.commit,
        "url": source.url,
        "licence": source.licence,
        "credits": source.credits,
        "sha256": dict(source.sha256),
        "split_rule": source.split_rule,
    }


def read_sample(files: Mapping[str, Path], source: SampleSource) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 28, 28)`` uint8 and labels ``(N,)`` from the idx files, checked: ``count``
    images of 28x28, labels 0-9 with ``count / 10`` each; :class:`NotTheSampleError` if not."""
    from .mnist import parse_idx

    arrays = {}
    for key, name in (("images", source.images), ("labels", source.labels)):
        try:
            arrays[key] = parse_idx(gzip.decompress(files[name].read_bytes()))
        except (OSError, EOFError, ValueError, IndexError) as err:
            raise NotTheSampleError(f"{name} is not a readable idx .gz file ({err})") from None
    x, y = arrays["images"], arrays["labels"]
    found = []
    if x.ndim != 3 or x.shape[1:] != (28, 28) or len(x) != source.count:
        found.append(f"{source.images} holds an array of shape {x.shape}")
    if y.ndim != 1 or len(y) != source.count:
        found.append(f"{source.labels} holds an array of shape {y.shape}")
    elif y.size and int(y.max()) >= len(LETTERS):
        found.append(f"labels run up to {int(y.max())}")
    elif (counts := np.bincount(y, minlength=len(LETTERS))).tolist() != [source.per_letter] * 10:
        per_letter = zip(LETTERS, counts.tolist(), strict=True)
        found.append("images per letter " + ", ".join(f"{c}: {n:,}" for c, n in per_letter))
    if found:
        raise NotTheSampleError(
            f"{'; '.join(found)}; the sample must hold {source.count:,} images of 28x28 and "
            f"{source.count:,} labels 0-9 (A-J), {source.per_letter:,} of each"
        )
    return x, y.astype(np.int64)


def split_indices(labels: np.ndarray, source: SampleSource) -> dict[str, np.ndarray]:
    """Train and test indices: per letter, a seeded permutation sends ``test_fraction`` to test."""
    test = []
    for c in range(len(LETTERS)):
        idx = np.flatnonzero(labels == c)
        order = np.random.default_rng([source.seed, c]).permutation(len(idx))
        test.append(idx[order[: int(round(len(idx) * source.test_fraction))]])
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[np.concatenate(test)] = True
    return {"train": np.flatnonzero(~is_test), "test": np.flatnonzero(is_test)}


def load_sample(split: str, source: SampleSource | None = None) -> ImageSet:
    """The sample's ``split`` (``"train"``: 8,500 images, ``"test"``: 1,500), letters A-J."""
    source = source or SAMPLE
    expect = {"dataset": "notMNIST", "variant": "sample", "split": split}
    expect |= {"commit": source.commit, "sha256": dict(source.sha256)}
    expect |= {"split_rule": source.split_rule}
    if (ds := sources.load_imageset(cache_path(split), expect)) is not None:
        return ds
    files, how = fetch_sample(source)
    try:
        x, y = read_sample(files, source)
    except NotTheSampleError as err:
        raise sources.DataUnavailableError(
            f"the real notMNIST sample ({source.repo} at commit {source.commit})",
            [sources.Attempt(f"reading {sample_dir(source)}", f"{err}")],
            "the files match their pinned SHA-256 but not the content expected of the sample: "
            "the pinned hashes (SampleSource.sha256) or the expected count are wrong; nothing "
            "was cached.",
        ) from None
    came = "; ".join(f"{name}: {h}" for name, h in how.items())
    out = {}
    for name, idx in split_indices(y, source).items():
        out[name] = ImageSet(
            images=torch.from_numpy(np.ascontiguousarray(x[idx])),
            labels=torch.from_numpy(y[idx]),
            classes=LETTERS,
            provenance={
                "dataset": "notMNIST",
                "split": name,
                "variant": "sample",
                "count": len(idx),
                "source": f"{source.repo} at commit {source.commit[:10]} ({came})",
                "file": f"{source.images}, {source.labels}",
                "checksum": f"sha256:{source.sha256[source.images]}",
                "author": "Yaroslav Bulatov (2011); sample and idx files by David Flanagan",
                **provenance(source),
            },
        )
        sources.save_imageset(cache_path(name), out[name])
    return out[split]
