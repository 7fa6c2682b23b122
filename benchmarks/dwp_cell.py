"""What one cell at the authors' setting costs on a CPU, where the time goes, and how close it is
to the machine's limit.

    python benchmarks/dwp_cell.py [--rounds 3] [--steps 20] [--threads 1] [--released]

The cell: a Bayesian CNN FConv(32, 128) on n = 50 digits (one full batch), 10,000 Adam steps,
then a 10-sample ensemble over the 10,000 test digits. The kernel VAEs have the authors' exact
layers (``KernelVAEConfig.authors``; cost depends on shapes, not weights, so they are randomly
initialised unless ``--released`` loads the authors' released weights). Per round, for the
reference code path (``bayes.FUSED_LRT = kernel_layers.CONVT_AS_CONV = False``) and the fast one, it times:

- a full step under N(0, 1), the DWP with 256 slices per step and the DWP over all slices;
- the parts of a DWP step: the target net's forward and backward (the N(0, 1) step minus its
  Adam), each layer's penalty (forward and backward), Adam;
- the evaluation (one 1,000-image batch, 10 samples, scaled to 10,000 images).

It prints medians over rounds: the estimated cell time (10,000 steps + evaluation) on each path
and their ratio, the DWP / N(0, 1) step ratios, the GFLOP per step (counted by torch's
``FlopCounterMode``) and the achieved GFLOP/s next to a single-core matmul peak measured in the
same run. Configurations run round-robin, so the ratios hold on a machine whose load drifts.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time

import torch

os.environ.setdefault("DWP_PROGRESS", "0")

from dwp_lib import bayes, inits, kernel_layers, priors  # noqa: E402
from dwp_lib.kernel_layers import KernelVAEConfig  # noqa: E402
from dwp_lib.kernel_vae import KernelVAE  # noqa: E402

STEPS, TEST_IMAGES, EVAL_SAMPLES = 10_000, 10_000, 10


def set_path(fast: bool) -> None:
    bayes.FUSED_LRT = fast
    kernel_layers.CONVT_AS_CONV = fast


def kernel_vaes(released: bool) -> dict[str, KernelVAE]:
    if released:
        from dwp_lib.authors_vaes import load_released_vaes

        return load_released_vaes()
    torch.manual_seed(0)
    return {
        "conv1": KernelVAE(KernelVAEConfig.authors(7)),
        "conv2": KernelVAE(KernelVAEConfig.authors(5)),
    }


class Cell:
    """A Bayesian CNN at the authors' setting with its priors, optimiser and data."""

    def __init__(self, vaes, slices: int | None, prior: str):
        cfg = bayes.BayesConfig(channels=(32, 128), dwp_slices_per_step=slices)
        self.model = bayes.BayesianCNN(cfg)
        inits.initialise(self.model, inits.DWPInit(vaes), seed=0)
        if prior == "normal":
            self.priors = priors.StandardNormal()
        else:
            self.priors = {k: priors.DeepWeightPrior(v, slices) for k, v in vaes.items()}
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.rand(50, 1, 28, 28, generator=g), torch.arange(50) % 10
        self.xt = torch.rand(1000, 1, 28, 28, generator=g)

    def loss(self):
        self.model.train()
        return bayes.negative_elbo(self.model, self.x, self.y, 50, self.priors).loss

    def step(self):
        loss = self.loss()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def target_only(self):
        """Forward and backward of the data term alone (no prior, no Adam)."""
        self.model.train()
        loss = torch.nn.functional.cross_entropy(self.model(self.x), self.y, reduction="sum")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()

    def penalty(self, layer: str):
        prior = self.priors[layer]
        kl = prior.kl(self.model.bayes_layers()[layer])
        self.opt.zero_grad(set_to_none=True)
        kl.backward()

    def adam(self):
        self.opt.step()

    @torch.no_grad()
    def evaluate(self):
        bayes.predictive_probs(self.model, self.xt, EVAL_SAMPLES, 1000)


def seconds(fn, reps: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def matmul_peak(reps: int = 20, n: int = 1024) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / seconds(lambda: a @ b, reps) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    ap.add_argument("--exact-steps", type=int, default=4, help="timed steps of the exact DWP")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--released", action="store_true", help="the authors' released weights")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    vaes = kernel_vaes(args.released)
    cells = {
        "normal": Cell(vaes, 256, "normal"),
        "dwp256": Cell(vaes, 256, "dwp"),
        "exact": Cell(vaes, None, "dwp"),
    }
    results: dict[tuple[str, str], list[float]] = {}

    def record(path, name, value):
        results.setdefault((path, name), []).append(value)

    peaks = []
    for r in range(args.rounds):
        peaks.append(matmul_peak())
        for path in ("reference", "fast"):
            set_path(path == "fast")
            s = args.steps
            record(path, "step normal", seconds(cells["normal"].step, s))
            record(path, "step dwp256", seconds(cells["dwp256"].step, s))
            record(path, "step exact", seconds(cells["exact"].step, args.exact_steps))
            c = cells["dwp256"]
            record(path, "target fwd+bwd", seconds(c.target_only, s))
            for layer in ("conv1", "conv2"):
                fn = functools.partial(c.penalty, layer)
                record(path, f"penalty {layer} (256)", seconds(fn, s))
            record(path, "adam", seconds(c.adam, s))
            record(path, "evaluation (10k x 10)", seconds(c.evaluate, 1) * TEST_IMAGES / 1000)
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    med = {k: statistics.median(v) for k, v in results.items()}
    set_path(True)
    gflop = {name: flops(cells[name].step) / 1e9 for name in cells}
    peak = statistics.median(peaks)
    print(f"\nthreads {torch.get_num_threads()}, {args.rounds} rounds, medians")
    print(f"single-core matmul peak (1024^3, fp32): {peak:.1f} GFLOP/s")
    print(f"{'part':26s} {'reference ms':>13s} {'fast ms':>9s} {'fast/ref':>9s}")
    for name in dict.fromkeys(k[1] for k in med):
        a, b = med[("reference", name)], med[("fast", name)]
        print(f"{name:26s} {1000 * a:13.1f} {1000 * b:9.1f} {b / a:9.2f}")
    for path in ("reference", "fast"):
        cell = STEPS * med[(path, "step dwp256")] + med[(path, "evaluation (10k x 10)")]
        normal = STEPS * med[(path, "step normal")] + med[(path, "evaluation (10k x 10)")]
        results[(path, "cell")] = [cell]
        print(
            f"{path:9s}: DWP cell (10,000 steps + evaluation) {cell / 60:5.1f} min, N(0, 1) cell "
            f"{normal / 60:5.1f} min; DWP/N(0, 1) step {med[(path, 'step dwp256')] / med[(path, 'step normal')]:.2f} "
            f"(256 slices), {med[(path, 'step exact')] / med[(path, 'step normal')]:.2f} (all slices)"
        )
    ratio = results[("fast", "cell")][0] / results[("reference", "cell")][0]
    print(f"cell time, fast / reference: {ratio:.2f}")
    for name, key in (("N(0, 1)", "normal"), ("DWP 256", "dwp256"), ("DWP exact", "exact")):
        step = med[("fast", f"step {key}")]
        print(
            f"{name:9s} step: {gflop[key]:.2f} GFLOP, {gflop[key] / step:.1f} GFLOP/s "
            f"({100 * gflop[key] / step / peak:.0f}% of the matmul peak)"
        )


if __name__ == "__main__":
    main()
