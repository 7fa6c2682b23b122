"""Ray's overhead on one machine: the same stage on a local Ray cluster of 2 CPUs and on the
local executor (2 worker processes), throughput ratio in one run.

    python benchmarks/ray_executor.py [--rounds 3] [--cells 8] [--steps 150]

The stage: the prior grid of the tiny preset (its bank and kernel VAEs, from the cache) with
``--cells`` cells (N(0, 1) and DWP, split seeds 0, 1, ...) of ``--steps`` steps each, into a
fresh folder per round. Per round, round-robin so that both see the same load:

- ``local``: ``grid.workers=2`` (two spawned processes, one thread each);
- ``ray``: ``executor.kind=ray`` on a local cluster of 2 CPUs that the stage starts and stops
  (``ray, cold``: the start of the cluster counted), and on one already running (``ray, warm``:
  a cluster a researcher keeps up for many stages).

It prints each configuration's median wall time and cells per minute, and the throughput ratio
ray / local (goal >= 0.9); every round's rows are checked equal across configurations (apart
from their times), so the benchmark also shows that the executor does not change a result.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DWP_PROGRESS", "0")

from dwp_lib.experiment import Experiment, ExperimentConfig, config_from  # noqa: E402
from dwp_lib.experiment.executor import ExecutorConfig, init_options  # noqa: E402


def config(kind: str, cells: int, steps: int) -> ExperimentConfig:
    seeds = ",".join(str(s) for s in range((cells + 1) // 2))
    return config_from(
        "tiny",
        overrides=[
            "init.enabled=false",
            f"bayes.steps={steps}",
            "grid.methods=normal:xavier,dwp:dwp",
            f"grid.split_seeds=[{seeds}]",
            "grid.workers=2",
            "num_threads=1",
            f"executor.kind={kind}",
            "executor.num_cpus=2",
        ],
    )


def rows_of(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        got = [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]
    return sorted(got, key=lambda r: (r["prior"], r["init"], r["seed"]))


def run(kind: str, cells: int, steps: int, root: Path, tag: str) -> tuple[float, list[dict]]:
    cfg = config(kind, cells, steps)
    exp = Experiment(cfg, root / tag, "cpu", verbose=False)
    exp.kernel_bank(), exp.kernel_vaes()  # from the cache: not part of the timed stage
    t0 = time.perf_counter()
    exp.prior_grid()
    return time.perf_counter() - t0, rows_of(exp.results_path)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cells", type=int, default=8)
    p.add_argument("--steps", type=int, default=150)
    args = p.parse_args()
    try:
        import ray
    except ImportError:
        print("this benchmark needs Ray: pip install 'dwp_lib[ray]'", file=sys.stderr)
        return 2
    times: dict[str, list[float]] = {"local": [], "ray, cold": [], "ray, warm": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run("local", 2, 2, root, "warm-up")  # fills the cache: bank, VAEs, MNIST
        for r in range(args.rounds):
            seen = {}
            for name in times:
                kind = "local" if name == "local" else "ray"
                if name == "ray, warm":
                    ray.init(**init_options(ExecutorConfig(kind="ray", num_cpus=2)))
                    ray.get(ray.remote(lambda: 0).options(num_cpus=1).remote())  # a live worker
                try:
                    t, rows = run(kind, args.cells, args.steps, root, f"{r}-{name}")
                finally:
                    if name == "ray, warm":
                        ray.shutdown()
                times[name].append(t)
                seen[name] = rows
                print(f"round {r}: {name:10s} {t:7.1f} s ({len(rows)} cells)", flush=True)
            same = all(rows == seen["local"] for rows in seen.values())
            print(f"round {r}: rows equal across executors: {same}", flush=True)
            if not same:
                return 1
    print(f"\n{args.cells} grid cells (tiny preset, {args.steps} steps), medians of {args.rounds}:")
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, t in med.items():
        print(f"  {name:10s} {t:7.1f} s   {60 * args.cells / t:6.2f} cells/min")
    for name in ("ray, cold", "ray, warm"):
        print(f"throughput ratio {name} / local: {med['local'] / med[name]:.2f} (goal >= 0.9)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
