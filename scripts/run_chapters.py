"""Execute book chapters (MyST .md) under nbval at the tiny preset; exit non-zero on any failure.

    python scripts/run_chapters.py book/01_variational_inference.md [...]

Each chapter is converted with jupytext into ``--out`` (default ``_build/nbtest``) and run with
``pytest --nbval-lax --nbval-current-env``: every cell must run without an exception; outputs are
not compared (they are stochastic). ``DWP_PRESET=tiny`` shrinks every loop and ``DWP_PROGRESS=0``
silences progress bars; the chapters' narrative never branches on either.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import jupytext


def convert(chapters: list[Path], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    notebooks = []
    for md in chapters:
        if not md.exists():
            raise SystemExit(f"run_chapters: no such chapter {md}")
        nb = jupytext.read(md)
        target = out / (md.stem + ".ipynb")
        jupytext.write(nb, target)
        notebooks.append(target)
    return notebooks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chapters", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("_build/nbtest"))
    parser.add_argument("--preset", default="tiny")
    args = parser.parse_args(argv)

    notebooks = convert(args.chapters, args.out)
    env = dict(os.environ, DWP_PRESET=args.preset, DWP_PROGRESS="0", MPLBACKEND="Agg")
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "--nbval-lax",
        "--nbval-current-env",
        "--nbval-cell-timeout=600",
        "--durations=0",
        "-q",
        *map(str, notebooks),
    ]
    start = time.perf_counter()
    code = subprocess.call(cmd, env=env)
    print(
        f"run_chapters: {len(notebooks)} chapter(s) in {time.perf_counter() - start:.0f} s, "
        f"exit {code}"
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
