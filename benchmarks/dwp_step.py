"""How much does the deep weight prior cost per training step?

    python benchmarks/dwp_step.py [--rounds 15] [--slices 256 512 1024] [--threads 1] [--device cpu]

Times one training step of the Bayesian CNN FConv(32, 128) (50 examples, one full batch:
forward, negative ELBO, backward, Adam step) under each prior: N(0, 1), log-uniform, the deep
weight prior summed over all slices ("exact") and over m random slices per step ("subsampled").
Configurations are timed round-robin, in a fresh random order each round, and each time is
divided by the N(0, 1) time *of the same round*: the ratios stay meaningful on a shared machine
whose load drifts. It prints medians over rounds.

It also prints the relative standard deviation of each DWP estimator of the conv2 penalty
(std over draws / |mean|) at the start of training, where q's means are kernel-VAE samples (the
"dwp" initialisation): the price in noise that subsampling pays for its speed. And, because Adam
divides each step by the gradient's RMS, the median |mean gradient| / RMS gradient of the
penalty with respect to conv2's means: how much smaller a step a noisier estimator takes.

Cost does not depend on the weights, only on the shapes, so the kernel VAEs are our
defaults (``KernelVAEConfig.for_kernel``: 7x7 latent 2, hidden 32; 5x5 latent 4, hidden 64; not the
authors' exact layers, see benchmarks/dwp_cell.py) fitted briefly to toy slices
(`dwp_lib.slices.toy_kernel_slices`), unless ``--vae7``/``--vae5`` name saved ones. The images are
random (timing does not depend on them either).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

import torch

os.environ.setdefault("DWP_PROGRESS", "0")

from dwp_lib import bayes, inits, priors  # noqa: E402
from dwp_lib.device import default_device  # noqa: E402
from dwp_lib.kernel_layers import KernelVAEConfig  # noqa: E402
from dwp_lib.kernel_vae import (  # noqa: E402
    KernelVAE,
    KernelVAETrainConfig,
    train_kernel_vae,
)
from dwp_lib.slices import toy_kernel_slices


def kernel_vae(k: int, path: str | None, steps: int) -> KernelVAE:
    if path:
        return KernelVAE.load(path)
    vae = KernelVAE(KernelVAEConfig.for_kernel(k))
    train_kernel_vae(vae, toy_kernel_slices(4000, k, seed=k), KernelVAETrainConfig(steps=steps))
    return vae.cpu()


def make_step(prior_spec, alpha: bool, init, x, y):
    """A closure doing one training step of a fresh Bayesian CNN under ``prior_spec``."""
    model = bayes.BayesianCNN(bayes.BayesConfig(), alpha_parametrised=alpha).to(x.device)
    inits.initialise(model, init, seed=0)
    by_layer = priors.priors_by_layer(model, prior_spec)
    extra = [p for prior in by_layer.values() for p in prior.to(x.device).parameters()]
    params = list(model.parameters()) + [p for p in extra if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-3)
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        bayes.negative_elbo(model, x, y, len(x), by_layer).loss.backward()
        opt.step()
        if x.device.type == "cuda":
            torch.cuda.synchronize()

    return step


def time_steps(steps: dict, rounds: int, warmup: int = 3) -> dict[str, list[float]]:
    for step in steps.values():
        for _ in range(warmup):
            step()
    seconds = {name: [] for name in steps}
    order = list(steps)
    for _ in range(rounds):
        random.shuffle(order)
        for name in order:
            start = time.perf_counter()
            steps[name]()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def penalty_spread(layer: bayes.BayesConv2d, prior: priors.DeepWeightPrior, draws: int):
    """Over ``draws`` draws of the penalty: mean and std of its slice part (-sum_s aux_bound,
    nats), and the median over weights of |mean gradient| / RMS gradient wrt ``layer.mu``.

    The last figure is the size of an Adam step relative to the learning rate when this term
    dominates the gradient: Adam divides by the RMS, so a noisier estimator takes smaller
    steps towards the same expected gradient.
    """
    entropy = layer.entropy().item()
    values, grads = [], []
    for _ in range(draws):
        layer.zero_grad(set_to_none=True)
        penalty = prior.kl(layer)
        penalty.backward()
        values.append(penalty.item() + entropy)
        grads.append(layer.mu.grad.flatten().clone())
    values, g = torch.tensor(values), torch.stack(grads)
    snr = (g.mean(0).abs() / g.pow(2).mean(0).sqrt().clamp_min(1e-30)).median()
    return values.mean().item(), values.std().item(), snr.item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--slices", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--draws", type=int, default=50, help="draws for the relative std")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: on a shared machine two threads per process make "
        "the timings erratic; 0 keeps torch's default)",
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--vae7", default=None, help="saved 7x7 KernelVAE (default: toy-fitted)")
    parser.add_argument("--vae5", default=None, help="saved 5x5 KernelVAE (default: toy-fitted)")
    parser.add_argument("--vae-steps", type=int, default=500)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device) if args.device else default_device()
    random.seed(0)
    torch.manual_seed(0)

    vaes = {"conv1": kernel_vae(7, args.vae7, args.vae_steps)}
    vaes["conv2"] = kernel_vae(5, args.vae5, args.vae_steps)
    init = inits.DWPInit(vaes)
    x, y = torch.rand(50, 1, 28, 28, device=device), torch.arange(50, device=device) % 10

    def dwp(m):
        return {name: priors.DeepWeightPrior(vae, m) for name, vae in vaes.items()}

    configs = {
        "N(0,1)": (priors.StandardNormal(), False),
        "log-uniform": (priors.LogUniform(), True),
    }
    configs["DWP exact"] = (dwp(None), False)
    for m in args.slices:
        configs[f"DWP {m} slices"] = (dwp(m), False)
    steps = {name: make_step(p, alpha, init, x, y) for name, (p, alpha) in configs.items()}

    seconds = time_steps(steps, args.rounds)
    base = seconds["N(0,1)"]
    default = priors.DWP_SLICES_PER_STEP
    default_name = "DWP exact" if default is None else f"DWP {default} slices"
    print(
        f"one training step, FConv(32, 128), 50 examples full batch; torch {torch.__version__} "
        f"on {device} ({torch.get_num_threads()} CPU threads); {args.rounds} rounds, median of "
        "the per-round ratios"
    )
    print(f"{'prior':<18} {'ms/step':>9} {'x N(0,1)':>9}")
    for name, ts in seconds.items():
        ratio = statistics.median(t / b for t, b in zip(ts, base, strict=True))
        mark = "   <- default" if name == default_name else ""
        print(f"{name:<18} {1000 * statistics.median(ts):9.1f} {ratio:9.2f}{mark}")

    fresh = inits.initialise(bayes.BayesianCNN(bayes.BayesConfig()).to(device), init, seed=0)
    layer = fresh.conv2  # q at the dwp initialisation, log sigma^2 = -10
    print(
        f"\nconv2 DWP penalty (sum over {layer.out_channels * layer.in_channels} slices of "
        f"-aux_bound) at the dwp initialisation, {args.draws} draws:"
    )
    print(f"{'estimator':<18} {'mean':>11} {'std':>9} {'rel. std':>9} {'grad |mean|/rms':>16}")
    rows = {
        m: penalty_spread(layer, dwp(m)["conv2"].to(device), args.draws)
        for m in [None, *args.slices]
    }
    exact_mean = rows[None][0]
    for m, (mean, std, snr) in rows.items():
        name = "exact" if m is None else f"{m} slices"
        print(f"{name:<18} {mean:11.1f} {std:9.1f} {std / abs(exact_mean):9.4f} {snr:16.3f}")


if __name__ == "__main__":
    main()
