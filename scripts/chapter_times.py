"""Per-chapter execution times of the last book build, read from jupyter-book's execution cache.

    python scripts/chapter_times.py --out book/chapter_times.json [--cache-state cold|warm]

``make book`` executes every chapter through jupyter-cache (``execute_notebooks: cache``), which
records each notebook's wall time. This script writes the latest record per chapter, with when
and where it was measured, to a JSON file; ``scripts/make_notebooks.py`` turns a committed
``book/chapter_times.json`` into the runtime line at the top of each Colab notebook. A cell that
times itself (an output whose metadata holds ``dwp_timing``: ``{"cell": name, "seconds": s}``)
is listed under ``cells``, e.g. chapter 5's live training; ``--cells-only`` updates just that
entry of an existing file (a cell timed in a later build than the chapters). Commit it
after a build from an empty ``$DWP_CACHE`` (``--cache-state cold``): a warm cache skips the
training a first-time reader's run does.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def latest_times(cache_dir: Path) -> dict[str, dict]:
    """chapter file name -> {seconds, executed} of its most recent execution in the cache."""
    from jupyter_cache import get_cache

    if not (cache_dir / "global.db").exists():
        raise SystemExit(f"no jupyter-cache at {cache_dir}: run `make book` first")
    out: dict[str, dict] = {}
    cache = get_cache(str(cache_dir))
    for rec in cache.list_cache_records():
        name, seconds = Path(rec.uri).name, (rec.data or {}).get("execution_seconds")
        if seconds is None:
            continue
        if name not in out or rec.created.isoformat() > out[name]["executed"]:
            out[name] = {"seconds": round(float(seconds), 1), "executed": rec.created.isoformat()}
            cells = timed_cells(cache.get_cache_bundle(rec.pk).nb)
            if cells:
                out[name]["cells"] = {k: {**v, "executed": rec.created.isoformat()}
                                      for k, v in cells.items()}  # fmt: skip
    return dict(sorted(out.items()))


def timed_cells(nb) -> dict[str, dict]:
    """cell name -> what the cell measured of itself (the ``dwp_timing`` of an output's metadata)."""
    found: dict[str, dict] = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            timing = dict(output.get("metadata", {}).get("dwp_timing", {}))
            if timing:
                name = str(timing.pop("cell"))
                timing["seconds"] = round(float(timing["seconds"]), 1)
                found[name] = timing
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", default=str(ROOT / "_build" / ".jupyter_cache"))
    p.add_argument("--out", default=str(ROOT / "_build" / "chapter_times.json"))
    p.add_argument("--cache-state", choices=("cold", "warm"), required=True,
                   help="was $DWP_CACHE empty when the book was built?")  # fmt: skip
    p.add_argument("--cells-only", action="store_true",
                   help="keep the chapters' times of --out; replace only its timed cells")  # fmt: skip
    args = p.parse_args(argv)
    times = latest_times(Path(args.cache))
    cells = {name: t.pop("cells") for name, t in times.items() if "cells" in t}
    if args.cells_only:
        record = json.loads(Path(args.out).read_text())
        record["cells"] = {**record.get("cells", {}), **cells}
        record["cells_command"] = (
            "make book on a quiet machine, then python scripts/chapter_times.py --cells-only"
        )
        Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
        for name, timed in cells.items():
            for cell, t in timed.items():
                print(f"{name}: {cell}: {t['seconds']:.1f} s")
        print(f"wrote the timed cells into {args.out}")
        return 0
    record = {
        "chapters": times,
        "cells": cells,
        "preset": os.environ.get("DWP_PRESET", "book"),
        "dwp_cache": args.cache_state,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "written": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "make book, then python scripts/chapter_times.py --cache-state "
        + args.cache_state,
    }
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    for name, t in times.items():
        print(f"{name:32s} {t['seconds']:7.1f} s")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
