"""Execute chapters cell by cell and record where their time goes: per section, per exercise, per cell.

    python scripts/cell_times.py book/04_implicit_prior.md [...] --out _build/cell_times.json \
        [--preset book] [--cache-state cold|warm]

Each chapter (MyST .md) is converted with jupytext and executed with nbclient's per-cell timing
(``record_timing``), in the chapter's own folder, at ``--preset`` (default ``book``, the preset
``make book`` uses). Cells are attributed to the ``##`` section they sit under and, inside a
``:::{solution-start} ex-N-M`` ... ``:::{solution-end}`` block, to that exercise. The JSON holds,
per chapter: the total, the seconds per section, per exercise solution, and the slowest cells
(with their first source line). ``--cache-state`` records whether ``$DWP_CACHE`` was empty: an
empty one includes the training a first-time reader's run does, a warm one only what each cell
computes live.

``book/exercise_times.json`` (committed) holds such a run of every chapter from an empty cache;
``make notebooks`` turns it into the instructors' time-per-exercise table in ``book/intro.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

SOLUTION_START = re.compile(r":::\{solution-start\}\s+(\S+)")
SOLUTION_END = re.compile(r":::\{solution-end\}")
SECTION = re.compile(r"^##\s+(.+?)\s*$", re.M)


def _seconds(cell) -> float | None:
    ex = cell.get("metadata", {}).get("execution", {})
    start, end = ex.get("iopub.execute_input"), ex.get("shell.execute_reply")
    if not (start and end):
        return None
    parse = datetime.datetime.fromisoformat
    return (parse(end.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))).total_seconds()


def attribute(nb) -> dict:
    """Seconds per section, per exercise solution and per cell of an executed notebook."""
    section, solution = "(top)", None
    sections: dict[str, float] = {}
    exercises: dict[str, float] = {}
    code_cells: dict[str, int] = {}
    cells = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            text = cell.source
            headings = SECTION.findall(text)
            if headings:
                section = headings[-1]
            for line in text.splitlines():
                if m := SOLUTION_START.search(line):
                    solution = m.group(1)
                    exercises.setdefault(solution, 0.0)
                elif SOLUTION_END.search(line):
                    solution = None
            continue
        if cell.cell_type != "code":
            continue
        s = _seconds(cell)
        if s is None:
            continue
        sections[section] = sections.get(section, 0.0) + s
        if solution is not None:
            exercises[solution] += s
            code_cells[solution] = code_cells.get(solution, 0) + 1
        first = next((ln for ln in cell.source.splitlines() if ln.strip()), "")
        cells.append({"index": i, "seconds": round(s, 2), "section": section,
                      "exercise": solution, "first_line": first[:100]})  # fmt: skip
    return {
        "total_seconds": round(sum(c["seconds"] for c in cells), 1),
        "sections": {k: round(v, 1) for k, v in sections.items()},
        "exercises": {k: round(v, 1) for k, v in exercises.items()},
        "exercise_code_cells": {k: code_cells.get(k, 0) for k in exercises},
        "slowest_cells": sorted(cells, key=lambda c: -c["seconds"])[:12],
    }


def run_chapter(md: Path, timeout: int) -> dict:
    import jupytext
    from nbclient import NotebookClient

    nb = jupytext.read(md)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=True,
                            resources={"metadata": {"path": str(md.parent)}})  # fmt: skip
    t0 = time.perf_counter()
    client.execute()
    out = attribute(nb)
    out["wall_seconds"] = round(time.perf_counter() - t0, 1)
    return out


def _commit() -> str | None:
    """The checkout's commit (``+`` if it has uncommitted changes), or None outside git."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, check=True,
                              capture_output=True, text=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("chapters", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=Path("_build/cell_times.json"))
    p.add_argument("--preset", default="book")
    p.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    p.add_argument("--cache-state", choices=("cold", "warm"), required=True,
                   help="was $DWP_CACHE empty when the first chapter started?")  # fmt: skip
    p.add_argument("--update", action="store_true",
                   help="keep the other chapters already in --out (each records its own run)")  # fmt: skip
    args = p.parse_args(argv)
    for md in args.chapters:
        if not md.exists():
            raise SystemExit(f"cell_times: no such chapter {md}")
    os.environ.update(DWP_PRESET=args.preset, DWP_PROGRESS="0", MPLBACKEND="Agg")
    record = {"chapters": {}}
    if args.update and args.out.exists():
        record = json.loads(args.out.read_text())
    command = ("python scripts/cell_times.py " + " ".join(str(c) for c in args.chapters)
               + f" --preset {args.preset} --cache-state {args.cache_state}")  # fmt: skip
    for md in args.chapters:
        timing = run_chapter(md, args.timeout)
        timing.update(
            preset=args.preset,
            dwp_cache=args.cache_state,
            cpus=os.cpu_count(),
            torch_threads=os.environ.get("OMP_NUM_THREADS", "torch default"),
            machine=platform.machine(),
            python=sys.version.split()[0],
            executed=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            commit=_commit(),
            command=command,
        )
        record["chapters"][md.name] = timing
        record["chapters"] = dict(sorted(record["chapters"].items()))
        print(f"{md.name}: {timing['wall_seconds']} s", flush=True)
        args.out.parent.mkdir(
            parents=True, exist_ok=True
        )  # after each chapter: a crash keeps the rest
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
