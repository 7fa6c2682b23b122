"""Fonts for the notMNIST-style set: Debian font packages fetched into the cache, not installed:
``apt-get download`` (private package lists if the system's lack them), ``dpkg -x`` into
``<cache>/data/fonts/root/<package>/`` keeping font files only; a manifest, last, marks it done."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from .. import artifacts
from .sources import data_dir, offline

# 27 packages, ~60 MB, ~940 distinct fonts with all of A-J (measured on Debian bookworm).
DEBIAN_FONT_PACKAGES: tuple[str, ...] = (
    "fonts-dejavu-core", "fonts-dejavu-extra", "fonts-liberation", "fonts-liberation2",
    "fonts-freefont-otf", "fonts-urw-base35", "fonts-texgyre", "fonts-lmodern", "fonts-cmu",
    "fonts-croscore", "fonts-crosextra-caladea", "fonts-crosextra-carlito",
    "fonts-linuxlibertine", "fonts-ebgaramond", "fonts-roboto-unhinted", "fonts-lato",
    "fonts-open-sans", "fonts-inter", "fonts-stix", "fonts-cantarell", "fonts-hack",
    "fonts-firacode", "fonts-comic-neue", "fonts-humor-sans", "fonts-dustin", "fonts-pc-extra",
    "fonts-aenigma",
)  # fmt: skip
FONT_SUFFIXES = (".ttf", ".otf", ".pfb", ".t1")
APT_TIMEOUT_S = 600
MANIFEST = "manifest.json"

_MISSING = (
    re.compile(r"Unable to locate package (\S+)"),
    re.compile(r"Can't select (?:candidate )?version.* for package '?([^'\s]+)'?"),
    re.compile(r"Package '?([^'\s]+)'? has no installation candidate"),
)


class FontsUnavailableError(RuntimeError):
    """The font packages could not be fetched or unpacked."""


class FontsOfflineError(FontsUnavailableError):
    """Font packages are missing from the cache and ``DWP_OFFLINE=1`` forbids fetching them."""


def offline_fix() -> str:
    """How to get the font packages into the cache of a machine that runs with DWP_OFFLINE=1."""
    return (
        "fetch them once where the Debian package archive is reachable: run `python -m dwp_lib "
        "data prepare --notmnist synthetic` without DWP_OFFLINE (apt-get download, no root "
        f"needed), or copy the folder {fonts_dir()} from a machine whose cache has them (same "
        "place under its DWP_CACHE); or use the real notMNIST (--notmnist small) from a "
        "tarball put in the cache by hand."
    )


def fonts_dir() -> Path:
    return data_dir("fonts")


def _apt_options(private: bool) -> list[str]:
    opts = []
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        opts += ["-o", "APT::Sandbox::User=root"]  # the cache is not readable by user _apt
    if private:
        base = fonts_dir() / "apt"
        (base / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (base / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        opts += ["-o", f"Dir::State::Lists={base / 'lists'}", "-o", f"Dir::Cache={base / 'cache'}"]
    return opts


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            cmd, cwd=cwd, capture_output=True, text=True, timeout=APT_TIMEOUT_S,
            env=dict(os.environ, LC_ALL="C"),
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise FontsUnavailableError(f"`{' '.join(cmd[:2])}` took over {APT_TIMEOUT_S} s") from None


def _download(packages: list[str], dest: Path, private: bool) -> tuple[list[str], str]:
    """``apt-get download`` the packages into ``dest``; returns (not found, last error)."""
    todo, missing, error = list(packages), [], ""
    while todo:
        res = _run(["apt-get", *_apt_options(private), "download", *todo], cwd=dest)
        if res.returncode == 0:
            return missing, ""
        error = (res.stderr.strip().splitlines() or ["apt-get failed"])[-1]
        bad = {m.group(1) for rx in _MISSING for m in rx.finditer(res.stderr)} & set(todo)
        if not bad:  # a failure that is not about one package: give up on the rest
            return missing + todo, error
        missing += sorted(bad)
        todo = [p for p in todo if p not in bad]
    return missing, error


def _deb_of(package: str, folder: Path) -> Path | None:
    found = sorted(folder.glob(f"{package}_*.deb"))
    return found[-1] if found else None


def fetch_debs(packages: tuple[str, ...]) -> tuple[dict[str, Path], dict[str, str]]:
    """``(debs, problems)``: each package's ``.deb`` in the cache (fetched if absent) or why not."""
    if shutil.which("apt-get") is None:
        raise FontsUnavailableError("apt-get not found (not a Debian or Ubuntu machine)")
    debs_dir = fonts_dir() / "debs"
    debs_dir.mkdir(parents=True, exist_ok=True)
    want = [p for p in packages if _deb_of(p, debs_dir) is None]
    problems: dict[str, str] = {}
    if want:
        with tempfile.TemporaryDirectory(dir=debs_dir, prefix=".apt-") as tmp:
            missing, error = _download(want, Path(tmp), private=False)
            if missing:  # the system's lists lack them (empty or stale): private lists
                res = _run(["apt-get", *_apt_options(True), "update"])
                if res.returncode != 0:
                    err = (res.stderr.strip().splitlines() or ["failed"])[-1]
                    problems.update({p: f"private apt-get update failed: {err}" for p in missing})
                else:
                    missing, error = _download(missing, Path(tmp), private=True)
                    problems.update({p: error or "not in the package archive" for p in missing})
            for f in Path(tmp).glob("*.deb"):  # whole files only: apt checked their hashes
                f.replace(debs_dir / f.name)
    return {p: d for p in packages if (d := _deb_of(p, debs_dir)) is not None}, problems


def _unpack(deb: Path, target: Path) -> None:
    res = _run(["dpkg", "-x", str(deb), str(target)])
    if res.returncode != 0:
        raise FontsUnavailableError(f"dpkg -x {deb.name} failed: {res.stderr.strip()[-200:]}")


def prepare_fonts(packages: tuple[str, ...]) -> dict:
    """Fetch and unpack the font packages into the cache; return the manifest: per package its
    ``.deb`` (name, SHA-256) and font files (relative to ``root``), and the problems."""
    root = fonts_dir() / "root"
    manifest_path = fonts_dir() / MANIFEST
    manifest = {"packages": {}, "problems": {}}
    if manifest_path.exists():
        with contextlib.suppress(json.JSONDecodeError):
            manifest = json.loads(manifest_path.read_text())
    have = manifest.get("packages", {})
    # trust a package only if its manifest entry exists and its files are all there
    ok = {
        p: e for p, e in have.items()
        if p in packages and all((root / f).is_file() for f in e.get("fonts", []))
    }  # fmt: skip
    need = tuple(p for p in packages if p not in ok)
    problems: dict[str, str] = {}
    if need and offline():
        # packages an earlier fetch found missing from the archive stay missing; others fail
        tried = manifest.get("problems") or {}
        if absent := [p for p in need if p not in tried]:
            raise FontsOfflineError(
                f"{len(absent)} of {len(packages)} font packages are not in the cache "
                f"{fonts_dir()} ({', '.join(absent[:5])}{', ...' if len(absent) > 5 else ''}) "
                "and DWP_OFFLINE=1 forbids fetching them"
            )
        return {"packages": ok, "problems": {p: tried[p] for p in need}}
    if need:
        if shutil.which("dpkg") is None:
            raise FontsUnavailableError("dpkg not found (not a Debian or Ubuntu machine)")
        debs, problems = fetch_debs(need)
        root.mkdir(parents=True, exist_ok=True)
        for package, deb in debs.items():
            target = root / package
            with tempfile.TemporaryDirectory(dir=root, prefix=f".{package}-") as tmp:
                try:
                    _unpack(deb, Path(tmp))
                except FontsUnavailableError as err:  # a damaged .deb: drop it, fetch next time
                    deb.unlink()
                    problems[package] = str(err)
                    continue
                _keep_fonts_only(Path(tmp))
                # TemporaryDirectory makes it owner-only: the mode mkdir would give, once kept
                Path(tmp).chmod(0o777 & ~artifacts.current_umask())
                if target.exists():
                    shutil.rmtree(target, ignore_errors=True)
                try:
                    Path(tmp).replace(target)
                except OSError:  # another process unpacked the same package meanwhile
                    if not target.is_dir():
                        raise
            fonts = sorted(str(f.relative_to(root)) for f in target.rglob("*") if f.is_file())
            ok[package] = {
                "deb": deb.name,
                "version": deb.name.split("_")[1] if deb.name.count("_") >= 2 else "",
                "sha256": artifacts.sha256_file(deb),
                "fonts": fonts,
            }
            deb.unlink()  # unpacked and recorded: keep the cache small (refetched if needed)
        artifacts.atomic_write_json(manifest_path, {"packages": ok, "problems": problems})
    return {"packages": ok, "problems": problems}


def _keep_fonts_only(tree: Path) -> None:
    """Delete everything but regular font files (docs, metrics, web fonts, symlinks)."""
    for f in sorted(tree.rglob("*"), reverse=True):
        if f.is_symlink() or (f.is_file() and f.suffix.lower() not in FONT_SUFFIXES):
            f.unlink()
        elif f.is_dir() and not any(f.iterdir()):
            f.rmdir()


def font_files(manifest: dict) -> list[tuple[str, Path]]:
    """``(package, path)`` of every font file in the manifest, sorted."""
    root = fonts_dir() / "root"
    return [
        (package, root / rel)
        for package, entry in sorted(manifest["packages"].items())
        for rel in entry["fonts"]
    ]


def matplotlib_fonts() -> list[Path]:
    """The fonts bundled with matplotlib's wheel (~40 files, ~24 usable): for unit tests."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts"
    return sorted(f for f in folder.rglob("*") if f.suffix.lower() in FONT_SUFFIXES and f.is_file())
