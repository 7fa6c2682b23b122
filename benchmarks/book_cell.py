"""What one grid cell of the *book* preset costs on a CPU, and what the evaluation's fast path
saves there (the book build).

    python benchmarks/book_cell.py [--rounds 5] [--steps 30] [--threads 1]

The cell: the book's Bayesian CNN (``BayesConfig.book()``: FConv(16, 64), 300 full-batch Adam
steps on n = 50 digits) under the DWP with book-sized kernel VAEs (random weights: cost depends
on shapes) and under N(0, 1), then the ensemble of 10 samples over 1,000 test images (the
book's ``grid.test_images``). Per round it times a training step of each prior and the
evaluation twice:

- *reference*: one plain train-mode forward pass per sample, ``F.max_pool2d`` on the NCHW
  tensors (the evaluation before the fast path);
- *fast*: :func:`dwp_lib.bayes.predictive_probs` as the library runs it - ``conv1``'s moments
  computed once per batch rather than once per sample, pooling in the channels-last layout.

Both give the same bits (``tests/test_bayes.py``), which this script checks too. It prints
medians over rounds, the fast / reference ratio of the evaluation, and the estimated cell
times. Configurations run round-robin, so the ratios hold on a machine whose load drifts.
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch
import torch.nn.functional as F

os.environ.setdefault("DWP_PROGRESS", "0")

from dwp_cell import seconds  # noqa: E402  (beside this script: the same timer)

from dwp_lib import bayes, inits, priors  # noqa: E402
from dwp_lib.kernel_layers import KernelVAEConfig  # noqa: E402
from dwp_lib.kernel_vae import KernelVAE  # noqa: E402

EVAL_SAMPLES, TEST_IMAGES, N = 10, 1000, 50


class Cell:
    def __init__(self, vaes, prior: str) -> None:
        cfg = bayes.BayesConfig.book()
        self.steps = cfg.steps
        self.model = bayes.BayesianCNN(cfg)
        inits.initialise(self.model, inits.DWPInit(vaes), seed=0)
        if prior == "normal":
            self.priors = priors.StandardNormal()
        else:
            self.priors = {
                k: priors.DeepWeightPrior(v, cfg.dwp_slices_per_step) for k, v in vaes.items()
            }
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.rand(N, 1, 28, 28, generator=g), torch.arange(N) % 10
        self.xt = torch.rand(TEST_IMAGES, 1, 28, 28, generator=g)

    def step(self) -> None:
        self.model.train()
        loss = bayes.negative_elbo(self.model, self.x, self.y, N, self.priors).loss
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    @torch.no_grad()
    def eval_reference(self) -> torch.Tensor:
        m = self.model
        m.train()

        def logits(x):
            h = F.max_pool2d(F.leaky_relu(m.conv1(x), m.negative_slope), 2)
            h = F.max_pool2d(F.leaky_relu(m.conv2(h), m.negative_slope), 2)
            return m.fc(torch.flatten(h, 1))

        return sum(F.softmax(logits(self.xt), -1) for _ in range(EVAL_SAMPLES)) / EVAL_SAMPLES

    def eval_fast(self) -> torch.Tensor:
        return bayes.predictive_probs(self.model, self.xt, EVAL_SAMPLES, TEST_IMAGES)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vaes = {k: KernelVAE(KernelVAEConfig.for_kernel(s)) for k, s in (("conv1", 7), ("conv2", 5))}
    cells = {p: Cell(vaes, p) for p in ("dwp", "normal")}
    torch.manual_seed(1)
    a = cells["dwp"].eval_reference()
    torch.manual_seed(1)
    assert torch.equal(a, cells["dwp"].eval_fast()), "the fast evaluation changed the numbers"

    t: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for p, cell in cells.items():
            t.setdefault(f"{p} step", []).append(seconds(cell.step, args.steps))
        t.setdefault("eval reference", []).append(seconds(cells["dwp"].eval_reference, 2))
        t.setdefault("eval fast", []).append(seconds(cells["dwp"].eval_fast, 2))
    med = {k: statistics.median(v) for k, v in t.items()}
    steps = cells["dwp"].steps
    print(f"book cell: FConv(16, 64), {steps} steps, n = {N}, eval {EVAL_SAMPLES} x "
          f"{TEST_IMAGES} images; torch threads {args.threads}; medians of {args.rounds} rounds")  # fmt: skip
    for k, v in med.items():
        unit = "ms" if "step" in k else "s"
        print(f"  {k:16s} {v * (1000 if unit == 'ms' else 1):8.2f} {unit}")
    print(f"  eval fast / reference: {med['eval fast'] / med['eval reference']:.2f} (same bits)")
    print(f"  DWP / N(0, 1) step: {med['dwp step'] / med['normal step']:.2f}")
    for p in ("dwp", "normal"):
        ref = steps * med[f"{p} step"] + med["eval reference"]
        fast = steps * med[f"{p} step"] + med["eval fast"]
        print(f"  {p} cell: {ref:.1f} s with the reference evaluation, {fast:.1f} s fast "
              f"({fast / ref:.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
