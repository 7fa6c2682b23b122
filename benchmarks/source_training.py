"""How fast are the source nets trained? Throughput of the library's strategy against a plain loop.

    python benchmarks/source_training.py --preset book            # throughput + the whole stage
    python benchmarks/source_training.py --preset tiny --no-stage

Part 1 (throughput, images x nets per second): the library's strategy against a plain
one-net-at-a-time PyTorch loop doing the same work (``nn.Sequential`` FConv, NCHW, fp32, Adam + the
same L2 term, same batch size, torch's default threads), plus a few alternatives measured the same
way. The library's strategy on a CPU is one process per core, each training its own net with
:func:`dwp_lib.source_nets.training_step` on one thread (channels_last, the preset's precision);
on a GPU, one net after the other in this process. The
variants run interleaved, round after round, and the median of each is reported, so that load from
other processes hits all of them alike (the load average is printed: on a shared machine the
absolute numbers are inflated, the ratios much less).

Part 2 (``--stage``, on by default for tiny and book): the whole stage from an empty folder, as
``python -m dwp_lib source-nets`` runs it: wall time, per-net test accuracy (mean, std, min)
and the kernel bank's slice-norm statistics.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dwp_lib import source_nets as sn  # noqa: E402
from dwp_lib.experiment import sources  # noqa: E402


def load_avg() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def batch(cfg: sn.SourceNetsConfig, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(cfg.batch_size, 1, 28, 28, generator=g), torch.randint(
        0, 10, (cfg.batch_size,), generator=g
    )


# --- the variants: each returns a step function and the number of (image x net) it processes ---


def library_step(cfg: sn.SourceNetsConfig, device: torch.device):
    """The library's inner step, in this process (layout, precision, threads as the preset says)."""
    net = sn.new_source_net(cfg, 0).to(device, memory_format=sn.memory_format(cfg))
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    x, y = batch(cfg)
    x, y = x.to(device).contiguous(memory_format=sn.memory_format(cfg)), y.to(device)

    def step():
        before = torch.get_num_threads()
        torch.set_num_threads(cfg.num_threads or before)  # as train_one_net does
        try:
            sn.training_step(net, opt, x, y, cfg)
        finally:
            torch.set_num_threads(before)

    return step, cfg.batch_size


def plain_step(cfg: sn.SourceNetsConfig, device: torch.device):
    """The baseline: what one would write first. NCHW, fp32, nn.Sequential, one net."""
    c1, c2 = cfg.widths
    net = nn.Sequential(
        nn.Conv2d(1, c1, 7),
        nn.LeakyReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 5),
        nn.LeakyReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * 9, 10),
    ).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    convs = [net[0], net[3]]
    x, y = (t.to(device) for t in batch(cfg))

    def step():
        loss = F.cross_entropy(net(x), y)
        loss = loss + cfg.l2 * sum(p.pow(2).sum() for c in convs for p in c.parameters())
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step, cfg.batch_size


class GroupedFConv(nn.Module):
    """K FConv nets in one module (grouped convolutions), each on its own mini-batch."""

    def __init__(self, k: int, c1: int, c2: int) -> None:
        super().__init__()
        self.k, self.c2 = k, c2
        self.conv1 = nn.Conv2d(k, k * c1, 7, groups=k)
        self.conv2 = nn.Conv2d(k * c1, k * c2, 5, groups=k)
        self.fc = nn.Parameter(torch.randn(k, c2 * 9, 10) * 0.05)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, K, 28, 28) -> (K, B, 10)
        h = F.max_pool2d(F.leaky_relu(self.conv1(x)), 2)
        h = F.max_pool2d(F.leaky_relu(self.conv2(h)), 2)
        b = x.shape[0]
        return torch.bmm(h.reshape(b, self.k, self.c2 * 9).transpose(0, 1), self.fc)


def grouped_step(cfg: sn.SourceNetsConfig, device: torch.device, k: int = 4):
    """K nets per step through grouped convolutions (channels_last)."""
    net = GroupedFConv(k, *cfg.widths).to(device, memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(cfg.batch_size, k, 28, 28, generator=g).to(device)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (k * cfg.batch_size,), generator=g).to(device)

    def step():
        loss = F.cross_entropy(net(x).reshape(-1, 10), y, reduction="sum") / cfg.batch_size
        convs = [net.conv1, net.conv2]
        loss = loss + cfg.l2 * sum(p.pow(2).sum() for c in convs for p in c.parameters())
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step, k * cfg.batch_size


def _worker(cfg: sn.SourceNetsConfig, threads: int, conn, barrier) -> None:  # in a subprocess
    torch.set_num_threads(threads)
    step, _ = library_step(cfg, torch.device("cpu"))
    for _ in range(3):
        step()
    conn.send("ready")
    while (steps := conn.recv()) > 0:
        barrier.wait()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        conn.send((t0, time.perf_counter()))


class WorkerPool:
    """``n`` warm processes, each training its own net with the library's step, on command."""

    def __init__(self, cfg: sn.SourceNetsConfig, n: int, threads: int) -> None:
        ctx = mp.get_context("spawn")
        self.barrier = ctx.Barrier(n)
        self.conns, self.procs = [], []
        for _ in range(n):
            here, there = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(cfg, threads, there, self.barrier))
            proc.start()
            self.conns.append(here)
            self.procs.append(proc)
        for c in self.conns:
            assert c.recv() == "ready"
        self.work = cfg.batch_size

    def rate(self, steps: int) -> float:
        for c in self.conns:
            c.send(steps)
        spans = [c.recv() for c in self.conns]
        wall = max(e for _, e in spans) - min(s for s, _ in spans)
        return len(self.conns) * steps * self.work / wall

    def close(self) -> None:
        for c in self.conns:
            c.send(0)
        for p in self.procs:
            p.join()


def throughput(
    cfg: sn.SourceNetsConfig, device: torch.device, rounds: int, steps: int, extra: bool
):
    """Median images x nets / s of each variant over interleaved rounds; the first row is the
    library's strategy (worker processes on a CPU, see ``resolve_workers``), the second the plain
    loop."""

    def variant(**changes) -> sn.SourceNetsConfig:
        return sn.SourceNetsConfig(**{**sn._config.to_dict(cfg), **changes})

    workers = sources.resolve_workers(cfg, device, cfg.n_nets)
    threads = cfg.num_threads or (1 if workers else torch.get_num_threads())
    in_process = f"library step, 1 process x {cfg.num_threads or torch.get_num_threads()} threads"
    variants: dict[str, object] = {}
    pool = None
    if workers:
        pool = WorkerPool(cfg, workers, threads)
        variants[f"library: {workers} processes x {threads} thread(s)"] = pool
    else:
        variants[in_process] = library_step(cfg, device)
    variants[f"plain loop, 1 process x {torch.get_num_threads()} threads"] = plain_step(cfg, device)
    if extra:
        if workers:
            variants[in_process] = library_step(cfg, device)
        variants["  same, bf16 autocast"] = library_step(variant(precision="bf16"), device)
        variants["  same, NCHW layout"] = library_step(variant(channels_last=False), device)
        variants["grouped conv, 4 nets per step"] = grouped_step(cfg, device, 4)
    for v in variants.values():  # warm-up (oneDNN creates its kernels on first use)
        if v is not pool:
            for _ in range(3):
                v[0]()
    rates: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for _ in range(rounds):
            for name, v in variants.items():
                if v is pool:
                    rates[name].append(pool.rate(steps))
                    continue
                step, work = v
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(steps):
                    step()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                rates[name].append(steps * work / (time.perf_counter() - t0))
    finally:
        if pool is not None:
            pool.close()
    return {name: statistics.median(r) for name, r in rates.items()}


def run_stage(cfg: sn.SourceNetsConfig, device: torch.device, out: str | None) -> None:
    """The whole stage from an empty folder (``out``, kept; default a temporary one)."""
    if out is not None and Path(out).exists() and any(Path(out).iterdir()):
        raise SystemExit(f"--out {out} is not empty: the stage must start from nothing")
    with tempfile.TemporaryDirectory(prefix="dwp-source-nets-") as tmp:
        folder = out or tmp
        data = sn.load_source_data(cfg)  # cached on disk by dwp_lib.data; not part of the stage
        t0 = time.perf_counter()
        bank = sources.get_kernel_bank(cfg, folder, device, data=data, verbose=False)
        wall = time.perf_counter() - t0
    workers = sources.resolve_workers(cfg, device, cfg.n_nets)
    print(
        f"\nWhole {cfg_name(cfg)} stage (train {cfg.n_nets} nets, {workers or 1} at a time, "
        f"and cut the bank): {wall:.1f} s"
    )
    print(f"  load average after: {load_avg()}")
    print(bank.summary())
    accs = [n["test_accuracy"] for n in bank.provenance["nets"]]
    print("  per-net test accuracy: " + ", ".join(f"{a:.4f}" for a in accs))


def cfg_name(cfg: sn.SourceNetsConfig) -> str:
    for name in ("tiny", "book", "paper"):
        if getattr(sn.SourceNetsConfig, name)() == cfg:
            return name + "-preset"
    return "custom"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="book", choices=["tiny", "book", "paper"])
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds per variant")
    p.add_argument("--steps", type=int, default=10, help="steps per round")
    p.add_argument("--stage", dest="stage", action="store_true", default=None)
    p.add_argument("--no-stage", dest="stage", action="store_false")
    p.add_argument("--no-extra", dest="extra", action="store_false", help="only the two main rows")
    p.add_argument("--device", default=None)
    p.add_argument("--out", default=None, help="keep the stage's nets and bank in this new folder")
    args = p.parse_args(argv)
    cfg = sn.SourceNetsConfig.preset(args.preset)
    device = torch.device(args.device) if args.device else sn.default_device()
    stage = args.stage if args.stage is not None else args.preset != "paper"
    print(
        f"{args.preset} preset: FConv{cfg.widths}, batch {cfg.batch_size}, {cfg.precision}, "
        f"channels_last={cfg.channels_last}; device {device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs; load average {load_avg()}"
    )
    rates = throughput(cfg, device, args.rounds, args.steps, args.extra)
    names = list(rates)
    lib, base = rates[names[0]], rates[names[1]]
    print(f"\nThroughput, images x nets / s (median of {args.rounds} interleaved rounds):")
    for name, r in rates.items():
        print(f"  {name:42s} {r:8.0f}   x{r / base:.2f} vs plain loop")
    print(f"  ratio library strategy / plain loop: {lib / base:.2f}")
    print(f"  load average after: {load_avg()}")
    if stage:
        run_stage(cfg, device, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
