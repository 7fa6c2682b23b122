"""notMNIST-style letters A-J rendered from fonts (:mod:`.fonts`), the offline stand-in: each font
vetted (ink in every letter, no "missing glyph" box, distinct letters and faces), each letter
jittered ``copies`` times into 28x28, split by font; deterministic given ``seed`` and the fonts."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from .. import config as _config
from ..config import Presets
from ..device import exit_with_parent
from ..progress import progress
from . import fonts as _fonts
from . import sources
from .imageset import LETTERS, ImageSet
from .sources import Attempt, DataUnavailableError

LABEL = "notMNIST-style (synthetic)"
SIZE = 28
RENDERER_VERSION = 2  # bump when a change to this file changes the images (renames the cache)


@dataclass(frozen=True)
class SyntheticConfig(Presets):
    """Every knob of the synthetic set. Presets: ``tiny`` (tests), ``book``, ``paper``."""

    packages: tuple[str, ...] = _fonts.DEBIAN_FONT_PACKAGES  # Debian font packages to render
    font_files: tuple[str, ...] = ()  # explicit font files instead (then ``packages`` is unused)
    max_fonts: int | None = None  # keep at most this many vetted fonts (a seeded choice)
    min_fonts: int = 500  # refuse to build a set from fewer vetted fonts
    copies: int = 5  # jittered images per (font, letter)
    test_fraction: float = 0.15  # share of fonts held out for the test split
    seed: int = 0
    render_size: int = 64  # font size (px) of the first, large rendering
    scale: tuple[float, float] = (0.8, 1.0)  # glyph's longer side / 28
    aspect: float = 0.12  # |log| of the width/height stretch
    rotation: float = 8.0  # degrees, either way
    shift: float = 1.5  # px of shift beyond centring within the free margin
    workers: int = field(default=0, compare=False)  # processes; 0: one per CPU core

    @classmethod
    def tiny(cls) -> SyntheticConfig:
        return cls(max_fonts=100, min_fonts=50, copies=1)

    @classmethod
    def paper(cls) -> SyntheticConfig:
        return cls(copies=40)

    def key(self) -> str:
        """A short hash of the fields that change the images (names the cache file)."""
        d = _config.to_dict(self)
        d.pop("workers")
        d["renderer"] = RENDERER_VERSION
        return hashlib.sha256(repr(sorted(d.items())).encode()).hexdigest()[:12]


def _render(font, char: str) -> np.ndarray:
    """``char`` in ``font``, white on black, cropped to its ink; empty array if no ink."""
    from PIL import Image, ImageDraw

    left, top, right, bottom = font.getbbox(char)
    w, h = max(right - left, 1) + 4, max(bottom - top, 1) + 4
    img = Image.new("L", (w, h), 0)
    ImageDraw.Draw(img).text((2 - left, 2 - top), char, fill=255, font=font)
    a = np.asarray(img)
    rows, cols = np.flatnonzero(a.max(1) > 32), np.flatnonzero(a.max(0) > 32)
    if len(rows) == 0:
        return np.zeros((0, 0), np.uint8)
    return a[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].copy()


def _fit(glyph: np.ndarray, n: int = 16) -> np.ndarray:
    """The glyph squeezed into ``n x n`` (a signature to compare glyphs and fonts)."""
    from PIL import Image

    return np.asarray(Image.fromarray(glyph).resize((n, n), Image.Resampling.BOX))


def vet_font(path: str, render_size: int) -> tuple[list[np.ndarray] | None, str]:
    """Render A-J from the font at ``path``; returns ``(glyphs, "")`` or ``(None, why)``."""
    from PIL import ImageFont

    try:
        font = ImageFont.truetype(path, render_size)
        glyphs = [_render(font, c) for c in LETTERS]
        notdef = _render(font, "\U0010fffd")  # a code point no font maps: the "missing" box
    except Exception as err:  # noqa: BLE001  (FreeType raises several kinds)
        return None, f"unreadable ({type(err).__name__})"
    if any(g.size == 0 or g.shape[0] < 4 or g.shape[1] < 2 for g in glyphs):
        return None, "blank glyph"
    sigs = [_fit(g).astype(np.float32) for g in glyphs]
    if notdef.size and any(
        g.shape == notdef.shape and np.abs(g.astype(int) - notdef).mean() < 2 for g in glyphs
    ):
        return None, "missing glyph"
    for i in range(len(sigs)):
        for j in range(i):
            # relative to the ink, so hairline faces are judged like bold ones
            ink = (sigs[i].mean() + sigs[j].mean()) / 2
            if np.abs(sigs[i] - sigs[j]).mean() < 0.03 * ink:  # practically the same image
                return None, "indistinct glyphs"
    return glyphs, ""


def jitter(glyph: np.ndarray, rng: np.random.Generator, cfg: SyntheticConfig) -> np.ndarray:
    """One 28x28 image of ``glyph``: scaled to fill most of the frame, stretched, rotated and
    shifted a little (notMNIST's framing: the glyph's longer side spans most of the 28 px)."""
    from PIL import Image

    h, w = glyph.shape
    stretch = float(np.exp(rng.uniform(-cfg.aspect, cfg.aspect)))
    w_eff, h_eff = w * stretch, h
    side = SIZE * rng.uniform(*cfg.scale)
    f = side / max(w_eff, h_eff)
    tw, th = max(1, round(w_eff * f)), max(1, round(h_eff * f))
    im = Image.fromarray(glyph).resize((tw, th), Image.Resampling.LANCZOS)
    angle = rng.uniform(-cfg.rotation, cfg.rotation)
    im = im.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True, fillcolor=0)
    a = np.asarray(im)
    out = np.zeros((SIZE, SIZE), np.uint8)
    # centre, then shift within the free margin (plus ``cfg.shift`` px, which may crop a little)
    free_y, free_x = max(SIZE - a.shape[0], 0) / 2, max(SIZE - a.shape[1], 0) / 2
    dy = rng.uniform(-free_y - cfg.shift, free_y + cfg.shift)
    dx = rng.uniform(-free_x - cfg.shift, free_x + cfg.shift)
    y0 = int(round((SIZE - a.shape[0]) / 2 + dy))
    x0 = int(round((SIZE - a.shape[1]) / 2 + dx))
    ys, xs = max(0, -y0), max(0, -x0)
    ye, xe = min(a.shape[0], SIZE - y0), min(a.shape[1], SIZE - x0)
    if ye > ys and xe > xs:
        out[y0 + ys : y0 + ye, x0 + xs : x0 + xe] = a[ys:ye, xs:xe]
    return out


def _font_seed(seed: int, name: str) -> list[int]:
    return [int(seed), int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")]


def _render_font(job: tuple[str, str, SyntheticConfig]):
    """Worker: vet one font and draw its jittered images ``(10 * copies, 28, 28)``."""
    path, name, cfg = job
    glyphs, why = vet_font(path, cfg.render_size)
    if glyphs is None:
        return name, None, None, why
    rng = np.random.default_rng(_font_seed(cfg.seed, name))
    images = np.stack([jitter(g, rng, cfg) for g in glyphs for _ in range(cfg.copies)])
    signature = np.concatenate([(_fit(g, 12) // 32).ravel() for g in glyphs]).tobytes()
    return name, images, hashlib.sha256(signature).hexdigest(), ""


def _font_name(path: Path) -> str:
    try:
        from PIL import ImageFont

        family, style = ImageFont.truetype(str(path), 12).getname()
        return f"{family} {style}".strip()
    except Exception:  # noqa: BLE001
        return path.stem


def render_set(
    files: list[tuple[str, Path]], cfg: SyntheticConfig
) -> tuple[ImageSet, ImageSet, dict]:
    """Vet, render and split: ``(train, test, report)`` from ``(source package or "", font
    file)`` pairs; the font's name, ``source/path-below-the-package``, seeds jitter and split."""
    jobs = []
    for source, path in files:
        parts = path.parts
        rel = "/".join(parts[parts.index(source) + 1 :]) if source in parts else path.name
        jobs.append((str(path), f"{source}/{rel}" if source else path.name, cfg))
    workers = cfg.workers or os.cpu_count() or 1
    paths = {name: path for (_, path), (_, name, _) in zip(files, jobs, strict=True)}
    if cfg.max_fonts is not None:  # a seeded choice: vet fonts in a seeded order until enough
        jobs.sort(key=lambda job: _font_seed(cfg.seed + 1, job[1]))
    rejected: dict[str, int] = {}
    seen: set[str] = set()
    kept = []  # (name, images, path)
    bar = progress(total=len(jobs), desc="rendering fonts", unit="font")
    pool = None
    if workers > 1 and len(jobs) > 8:  # a worker ends within seconds of its parent (no orphans)
        pool = ProcessPoolExecutor(workers, initializer=partial(exit_with_parent, every=0.25))
    try:
        done = 0
        while done < len(jobs) and (cfg.max_fonts is None or len(kept) < cfg.max_fonts):
            n = len(jobs) if cfg.max_fonts is None else 16 + (cfg.max_fonts - len(kept)) * 5 // 4
            chunk, done = jobs[done : done + n], done + n
            results = (
                pool.map(_render_font, chunk, chunksize=4) if pool else map(_render_font, chunk)
            )
            for name, images, signature, why in results:
                bar.update()
                if images is None or signature in seen:
                    why = why or "duplicate of another font"
                    rejected[why] = rejected.get(why, 0) + 1
                else:
                    seen.add(signature)
                    kept.append((name, images, paths[name]))
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    vetted = len(kept)
    if cfg.max_fonts is not None:
        kept = sorted(kept[: cfg.max_fonts], key=lambda k: k[0])
    if len(kept) < cfg.min_fonts:
        raise ValueError(
            f"only {len(kept)} fonts passed vetting (of {len(files)} files; rejected: "
            f"{rejected}); the configuration asks for at least {cfg.min_fonts}"
        )
    is_test = np.array(
        [_font_seed(cfg.seed, name)[1] % 10_000 < cfg.test_fraction * 10_000 for name, _, _ in kept]
    )
    if is_test.all() or not is_test.any():  # tiny font lists: keep both splits non-empty
        is_test[:] = False
        is_test[-1] = True
    names = tuple(_font_name(p) + f" [{n}]" for n, _, p in kept)
    per_font = 10 * cfg.copies
    labels = np.repeat(np.arange(10), cfg.copies)
    out = {}
    for split, mask in (("train", ~is_test), ("test", is_test)):
        idx = np.flatnonzero(mask)
        images = [kept[i][1] for i in idx] or [np.zeros((0, SIZE, SIZE), np.uint8)]
        out[split] = ImageSet(
            images=torch.from_numpy(np.concatenate(images)),
            labels=torch.from_numpy(np.tile(labels, len(idx)).astype(np.int64)),
            classes=LETTERS,
            groups=torch.from_numpy(np.repeat(idx, per_font).astype(np.int64)),
            group_names=names,
            provenance={"fonts": int(len(idx))},
        )
    report = {
        "font_files": len(files),
        "fonts_tried": sum(rejected.values()) + vetted,
        "fonts_vetted": vetted,
        "fonts_used": len(kept),
        "rejected": rejected,
    }
    return out["train"], out["test"], report


def cache_path(split: str, cfg: SyntheticConfig) -> Path:
    return sources.data_dir("notmnist") / f"synthetic-{cfg.key()}-{split}.pt"


def _versions() -> dict:
    import PIL
    from PIL import features

    return {"pillow": PIL.__version__, "freetype": features.version_module("freetype2")}


def build(cfg: SyntheticConfig) -> dict[str, ImageSet]:
    """Fetch the fonts, render, vet, split; return both splits with their provenance."""
    attempts = []
    if cfg.font_files:
        files = [("", Path(f)) for f in cfg.font_files]
        source = f"rendered from {len(files)} font files"
        packages: dict = {}
    else:
        try:
            manifest = _fonts.prepare_fonts(cfg.packages)
        except _fonts.FontsOfflineError as err:
            attempts.append(Attempt("Debian font packages in the cache", str(err)))
            raise DataUnavailableError(
                f"{LABEL} notMNIST", attempts, _fonts.offline_fix()
            ) from None
        except _fonts.FontsUnavailableError as err:
            attempts.append(Attempt("Debian font packages (apt-get download + dpkg -x)", str(err)))
            manifest = None
        if manifest is not None and manifest["packages"]:
            files = _fonts.font_files(manifest)
            packages = {p: e["version"] for p, e in manifest["packages"].items()}
            source = (
                f"rendered from {len(packages)} Debian font packages "
                "(apt-get download + dpkg -x into the cache, not installed)"
            )
            if manifest.get("problems"):
                attempts.append(Attempt("some font packages", json_safe(manifest["problems"])))
        else:
            if manifest is not None:
                attempts.append(
                    Attempt("Debian font packages", json_safe(manifest.get("problems")) or "none")
                )
            raise DataUnavailableError(
                f"{LABEL} notMNIST",
                attempts,
                "run on a Debian or Ubuntu machine that reaches its package archive (apt-get "
                "download needs no root), or use the real notMNIST where the internet is open: "
                "load_notmnist(split, variant='small') / `python -m dwp_lib data prepare "
                "--notmnist small`.",
            )
    try:
        train, test, report = render_set(files, cfg)
    except ValueError as err:
        attempts.append(Attempt("vetting the fonts", str(err)))
        raise DataUnavailableError(
            f"{LABEL} notMNIST",
            attempts,
            "check that the font packages were fetched (see above), or lower min_fonts in "
            "SyntheticConfig (the default set needs at least 500 fonts).",
        ) from None
    out = {}
    for split, ds in (("train", train), ("test", test)):
        digest = hashlib.sha256(ds.images.numpy().tobytes() + ds.labels.numpy().tobytes())
        ds.provenance = {
            "dataset": LABEL,
            "split": split,
            "variant": "synthetic",
            "label": LABEL,
            "count": len(ds),
            "fonts": ds.provenance["fonts"],
            "source": source,
            "packages": packages,
            "checksum": f"sha256:{digest.hexdigest()}",
            "config": {k: v for k, v in _config.to_dict(cfg).items() if k != "workers"},
            "config_key": cfg.key(),
            "renderer": RENDERER_VERSION,
            "report": report,
            **_versions(),
        }
        out[split] = ds
    return out


def json_safe(problems) -> str:
    return "; ".join(f"{k}: {v}" for k, v in sorted((problems or {}).items()))


def load_synthetic(split: str, cfg: SyntheticConfig | None = None) -> ImageSet:
    """The notMNIST-style set's ``split`` for ``cfg`` (default: the ``DWP_PRESET`` preset)."""
    sources.check_split(split)
    cfg = cfg if cfg is not None else SyntheticConfig.preset(_config.current_preset())
    if not isinstance(cfg, SyntheticConfig):
        raise TypeError(f"config must be a SyntheticConfig, got {type(cfg).__name__}")
    expect = {"variant": "synthetic", "split": split, "config_key": cfg.key()}
    if (ds := sources.load_imageset(cache_path(split, cfg), expect)) is not None:
        return ds
    built = build(cfg)
    for name, part in built.items():
        sources.save_imageset(cache_path(name, cfg), part)
    return built[split]
