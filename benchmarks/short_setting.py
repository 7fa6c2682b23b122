"""What a cell of a short setting costs next to a cell at the authors' setting, both measured in
one run on one machine.

    python benchmarks/short_setting.py [--short-steps 2000] [--rounds 3] [--steps 20] [--threads 1]

A cell is a Bayesian CNN FConv(32, 128) on n = 50 digits (one full batch) trained for S Adam
steps, then a 10-sample ensemble over the 10,000 test digits. Its time is S x (one step) + (the
evaluation); the learning rate and the initial log-variance change the numbers a cell gives, not
what it costs. Per round, round-robin so that a drifting load hits both alike, it times one step
of the DWP with 256 slices per step and of N(0, 1) (the kernel VAEs have the authors' layers) and
the evaluation, and prints the medians over rounds: each cell's estimated time at S and at the
authors' 10,000 steps, and their ratio (the goal for a short setting: <= 0.15).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("DWP_PROGRESS", "0")

from dwp_cell import STEPS, TEST_IMAGES, Cell, kernel_vaes, seconds  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--short-steps", type=int, default=2000, help="steps of the short setting")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--released", action="store_true", help="the authors' released weights")
    args = ap.parse_args()
    if args.short_steps < 1 or args.rounds < 1 or args.steps < 1 or args.threads < 1:
        ap.error("--short-steps, --rounds, --steps and --threads must be positive")
    torch.set_num_threads(args.threads)
    vaes = kernel_vaes(args.released)
    cells = {"DWP (256 slices)": Cell(vaes, 256, "dwp"), "N(0, 1)": Cell(vaes, 256, "normal")}
    step: dict[str, list[float]] = {k: [] for k in cells}
    evals: list[float] = []
    for _ in range(args.rounds):
        for name, cell in cells.items():
            step[name].append(seconds(cell.step, args.steps))
        evals.append(seconds(cells["N(0, 1)"].evaluate, 1) * TEST_IMAGES / 1000)
    ev = statistics.median(evals)
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if "model name" in ln),
               "unknown CPU") if os.path.exists("/proc/cpuinfo") else "unknown CPU"  # fmt: skip
    print(f"{cpu}, torch {torch.__version__}, {args.threads} thread(s), medians of {args.rounds} "
          f"rounds; evaluation {ev:.1f} s")  # fmt: skip
    for name in cells:
        s = statistics.median(step[name])
        short, full = args.short_steps * s + ev, STEPS * s + ev
        print(f"{name}: step {1000 * s:.1f} ms; cell at {args.short_steps} steps {short / 60:.1f} "
              f"min, at {STEPS} steps {full / 60:.1f} min; ratio {short / full:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
