"""The real notMNIST (Yaroslav Bulatov, 2011): A-J from many fonts, 28x28 grey. Its tarballs hold
``notMNIST_<variant>/<letter>/<base64 font name>.png``, size- and content-checked; split by font."""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import torch

from .. import artifacts
from . import sources
from .imageset import LETTERS, ImageSet

BASE_URL = "http://yaroslavvb.com/upload/notMNIST/"
SIZES = {"small": 8_458_043, "large": 247_336_696}  # bytes, as published
APPROX_COUNT = {"small": 18_726, "large": 529_119}  # PNGs in the published tarballs
# ~452 and ~467 bytes of tarball per image: a file's size says about how many images it holds
BYTES_PER_IMAGE = {variant: SIZES[variant] / APPROX_COUNT[variant] for variant in SIZES}
PLAUSIBLE_FACTOR = 2.0  # a letter's count may be this far from the expected one, either way
TEST_FRACTION = 0.15


class NotNotMNISTError(ValueError):
    """A right-size tarball that is not notMNIST (missing letters, odd counts, non-font names)."""


def check_content(
    path: Path, variant: str, found: dict[str, int], letters_of: dict[str, set[str]]
) -> None:
    """Refuse a tarball that does not hold notMNIST, saying what it holds. ``found``: PNG files
    per folder name; ``letters_of``: for each file name in a letter folder, its letters."""
    size = path.stat().st_size
    per_letter = size / BYTES_PER_IMAGE.get(variant, BYTES_PER_IMAGE["small"]) / len(LETTERS)
    low, high = per_letter / PLAUSIBLE_FACTOR, per_letter * PLAUSIBLE_FACTOR
    problems = []
    if missing := [c for c in LETTERS if not found.get(c)]:
        problems.append(f"no images of letter(s) {', '.join(missing)}")
    if odd := [c for c in LETTERS if found.get(c) and not low <= found[c] <= high]:
        problems.append(
            f"an implausible number of images of {', '.join(odd)} (a notMNIST tarball of "
            f"{size:,} bytes holds about {per_letter:,.0f} per letter; the published "
            f"notMNIST_{variant} about {APPROX_COUNT.get(variant, 0) // len(LETTERS):,})"
        )
    shared = sum(len(v) > 1 for v in letters_of.values())
    if letters_of and shared < 0.5 * len(letters_of):
        problems.append(
            f"only {shared:,} of its {len(letters_of):,} file names recur under another letter "
            "(notMNIST names each image after its font, and a font draws all ten letters)"
        )
    if problems:
        folders = sorted(found.items(), key=lambda kv: (kv[0] not in LETTERS, kv[0]))
        seen = ", ".join(f"{k}: {v:,}" for k, v in folders[:20]) + ", ..." * (len(folders) > 20)
        raise NotNotMNISTError(
            f"{path} does not hold notMNIST: {'; '.join(problems)}. PNG files per folder: "
            f"{seen or 'none'}"
        )


def tarball_name(variant: str) -> str:
    return f"notMNIST_{variant}.tar.gz"


def tarball_path(variant: str) -> Path:
    return sources.data_dir("downloads") / tarball_name(variant)


def cache_path(split: str, variant: str) -> Path:
    return sources.data_dir("notmnist") / f"notmnist-{variant}-{split}.pt"


def _font_name(stem: str) -> str:
    try:
        return base64.b64decode(stem + "=" * (-len(stem) % 4), validate=True).decode()
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        return stem


def is_test_font(name: str) -> bool:
    h = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    return h % 10_000 < TEST_FRACTION * 10_000


def read_tarball(path: Path, variant: str = "small") -> tuple[dict[str, ImageSet], dict]:
    """Both splits of a tarball (unreadable PNGs skipped, counted); raises if it isn't notMNIST."""
    from PIL import Image

    from ..progress import progress

    images, labels, fonts, skipped = [], [], [], []
    found: dict[str, int] = {}  # PNG files per folder name
    letters_of: dict[str, set[str]] = {}  # file name -> the letter folders it is in
    with tarfile.open(path, "r:gz") as tar:
        bar = progress(total=APPROX_COUNT.get(variant), desc=path.name, unit="png")
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) < 2 or not parts[-1].lower().endswith(".png"):
                continue
            letter = parts[-2]
            found[letter] = found.get(letter, 0) + 1
            if letter not in LETTERS:
                continue
            letters_of.setdefault(parts[-1], set()).add(letter)
            bar.update()
            try:
                data = tar.extractfile(member).read()
                with Image.open(io.BytesIO(data)) as im:
                    a = np.asarray(im.convert("L"))
                if a.shape != (28, 28):
                    raise ValueError(f"size {a.shape}")
            except Exception as err:  # noqa: BLE001  (truncated or empty PNGs raise anything)
                skipped.append(f"{member.name} ({type(err).__name__})")
                continue
            images.append(a)
            labels.append(LETTERS.index(letter))
            fonts.append(parts[-1][:-4])
        bar.close()
    check_content(path, variant, found, letters_of)
    if not images:
        raise ValueError(f"{path}: no readable A-J PNGs (wrong file?)")
    names = sorted(set(fonts))
    font_id = {n: i for i, n in enumerate(names)}
    groups = np.array([font_id[f] for f in fonts], dtype=np.int64)
    test_font = np.array([is_test_font(n) for n in names])
    is_test = test_font[groups]
    x, y = np.stack(images), np.array(labels, dtype=np.int64)
    out = {}
    for split, mask in (("train", ~is_test), ("test", is_test)):
        out[split] = ImageSet(
            images=torch.from_numpy(x[mask]),
            labels=torch.from_numpy(y[mask]),
            classes=LETTERS,
            groups=torch.from_numpy(groups[mask]),
            group_names=tuple(_font_name(n) for n in names),
            provenance={"fonts": int(len(np.unique(groups[mask])))},
        )
    return out, {"unreadable": len(skipped), "unreadable_files": skipped[:20]}


def load_real_notmnist(split: str, variant: str) -> ImageSet:
    """The real notMNIST ``variant`` (``"small"`` or ``"large"``), split by font."""
    path = cache_path(split, variant)
    ds = sources.load_imageset(path, {"dataset": "notMNIST", "variant": variant, "split": split})
    if ds is not None:
        return ds
    tarball, url, size = tarball_path(variant), BASE_URL + tarball_name(variant), SIZES[variant]
    attempts = [sources.Attempt(f"cache {path}", "not present")]
    why = sources.check_cached_file(tarball, size=size)
    source = "tarball found in the cache"
    if why is not None:
        attempts.append(sources.Attempt(f"tarball {tarball}", why))
        source = f"canonical download ({url})"
        if sources.offline():
            attempts.append(sources.Attempt(f"download {url}", "skipped (DWP_OFFLINE=1)"))
        else:
            try:
                sources.download(url, tarball, size=size)
            except (OSError, ValueError) as err:
                attempts.append(sources.Attempt(f"download {url}", sources.describe_error(err)))
    if not tarball.exists():
        raise sources.DataUnavailableError(
            f"notMNIST {variant} {split}",
            attempts,
            f"connect to the internet, or download {url} ({size:,} bytes) by hand and put it at "
            f"{tarball}; offline, use the notMNIST-style synthetic set instead "
            "(variant='synthetic'), which is labelled as such.",
        )
    try:
        splits, report = read_tarball(tarball, variant)
    except (OSError, ValueError, tarfile.TarError, EOFError) as err:  # NotNotMNISTError too
        tarball.unlink()
        attempts.append(sources.Attempt(f"reading {tarball}", f"{err} (deleted)"))
        if isinstance(err, NotNotMNISTError):
            what = "had the published size but not notMNIST's content"
        else:
            what = "had the right size but is not a readable notMNIST tarball"
        raise sources.DataUnavailableError(
            f"notMNIST {variant} {split}",
            attempts,
            f"it {what}, so it was deleted. With internet access, run again to download it "
            f"afresh; offline, put a good copy of {url} at {tarball} by hand, or use the "
            "notMNIST-style synthetic set (variant='synthetic'), which is labelled as such.",
        ) from None
    md5 = artifacts.md5_file(tarball)
    for name, part in splits.items():
        part.provenance = {
            "dataset": "notMNIST",
            "split": name,
            "variant": variant,
            "count": len(part),
            "fonts": part.provenance["fonts"],
            "source": source,
            "file": tarball_name(variant),
            "bytes": size,
            "checksum": f"md5:{md5}",
            "skipped": report,
            "split_rule": f"by font, {TEST_FRACTION:.0%} of fonts to test (hash of the name)",
            "author": "Yaroslav Bulatov (2011)",
        }
        sources.save_imageset(cache_path(name, variant), part)
    return splits[split]
