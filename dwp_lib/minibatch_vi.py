"""Mini-batch VI of a Bayesian MLP (chapter 2): mean-field layers, the bound, its gradient noise."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dwp_lib.config import Presets
from dwp_lib.reparam import LINEAR_SAMPLERS
from dwp_lib.train import History, fit
from dwp_lib.vi import MeanFieldGaussian, elbo


class BayesianLinear(nn.Module):
    """A linear layer with ``q`` over W (in, out), prior N(0, exp(prior_logvar)), a bias without
    prior; it samples in ``train()`` mode by ``sampler`` (``LINEAR_SAMPLERS``: shared, local, ...)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        logvar_init: float = -10.0,
        prior_logvar: float = 0.0,
        generator: torch.Generator | None = None,
        sampler: str = "local",
    ):
        super().__init__()
        # Xavier-normal means, as in the paper
        std = math.sqrt(2.0 / (in_features + out_features))
        mu = std * torch.randn(in_features, out_features, generator=generator)
        self.q = MeanFieldGaussian(mu, logvar_init)
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.prior_logvar = prior_logvar
        self.sampler = sampler

    @property
    def sampler(self) -> str:
        return self._sampler

    @sampler.setter
    def sampler(self, name: str) -> None:
        if name not in LINEAR_SAMPLERS:
            raise ValueError(f"sampler must be one of {sorted(LINEAR_SAMPLERS)}, got {name!r}")
        self._sampler = name

    def forward(self, x: Tensor, sample: bool | None = None) -> Tensor:
        sample = self.training if sample is None else sample
        if sample:
            return LINEAR_SAMPLERS[self.sampler](x, self.q.mu, self.q.logvar, self.bias)
        return x @ self.q.mu + self.bias

    def kl(self) -> Tensor:
        """KL(q(W) || N(0, exp(prior_logvar))) in closed form."""
        return self.q.kl_to_normal(0.0, self.prior_logvar)


class BayesianMLP(nn.Module):
    """An MLP of :class:`BayesianLinear` layers and ReLUs (no hidden layer: softmax regression)."""

    def __init__(
        self,
        sizes: Sequence[int],
        logvar_init: float = -10.0,
        prior_logvar: float = 0.0,
        seed: int = 0,
    ):
        super().__init__()
        if len(sizes) < 2:
            raise ValueError(f"sizes needs at least (in, out), got {tuple(sizes)}")
        gen = torch.Generator().manual_seed(seed)
        self.layers = nn.ModuleList(
            BayesianLinear(a, b, logvar_init, prior_logvar, generator=gen)
            for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )

    def forward(self, x: Tensor, sample: bool | None = None) -> Tensor:
        h = x.flatten(1)
        for i, layer in enumerate(self.layers):
            h = layer(h, sample)
            if i < len(self.layers) - 1:
                h = F.relu(h)
        return h

    def kl(self) -> Tensor:
        return sum(layer.kl() for layer in self.layers)


def minibatch_gradient_variance(
    model: BayesianMLP,
    x: Tensor,
    y: Tensor,
    method: str,
    batch_size: int,
    n_repeats: int = 100,
    resample_batch: bool = True,
    seed: int = 0,
) -> Tensor:
    """Per layer ``(n_layers,)``, the variance of the gradient of (N / B) sum_batch log p(y|x, W)
    in ``mu`` (mean over weights), sampling by ``method``, fresh batches if ``resample_batch``."""
    if method not in LINEAR_SAMPLERS:
        raise ValueError(f"method must be one of {sorted(LINEAR_SAMPLERS)}, got {method!r}")
    n = x.shape[0]
    if not 1 <= batch_size <= n or n_repeats < 2:
        raise ValueError(
            f"need 1 <= batch_size <= N ({n}) and n_repeats >= 2; "
            f"got batch_size {batch_size}, n_repeats {n_repeats}"
        )
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    mus = [layer.q.mu for layer in model.layers]
    before = [layer.sampler for layer in model.layers]
    gen = torch.Generator().manual_seed(seed)
    fixed = torch.randperm(n, generator=gen)[:batch_size]
    grads: list[list[Tensor]] = [[] for _ in mus]
    forked = [device] if device.type == "cuda" else []
    try:
        for layer in model.layers:
            layer.sampler = method
        with torch.random.fork_rng(devices=forked):
            torch.manual_seed(seed)  # the weight noise, without touching the caller's RNG
            for _ in range(n_repeats):
                idx = torch.randperm(n, generator=gen)[:batch_size] if resample_batch else fixed
                idx = idx.to(device)
                logits = model(x[idx], sample=True)
                data_term = -(n / batch_size) * F.cross_entropy(logits, y[idx], reduction="sum")
                for store, g in zip(grads, torch.autograd.grad(data_term, mus), strict=True):
                    store.append(g.flatten())
    finally:
        for layer, name in zip(model.layers, before, strict=True):
            layer.sampler = name
    return torch.stack([torch.stack(g).var(0).mean() for g in grads])


@dataclass
class MinibatchVIConfig(Presets):
    """Mini-batch VI of a Bayesian softmax regression or MLP on an MNIST subset (book/02)."""

    n_train: int = 10000  # training images (a class-balanced subset)
    hidden: tuple[int, ...] = ()  # () is softmax regression; (100,) one hidden layer
    batch_size: int = 100
    epochs: int = 5
    lr: float = 1e-3
    lr_logvar: float = 3e-2  # log sigma^2 moves at most ~lr per Adam step: give it room to move
    logvar_init: float = -6.0
    prior_logvar: float = 0.0  # N(0, 1) prior
    n_eval_samples: int = 10
    n_test: int | None = None  # test images to evaluate on (None: the whole test set)
    seed: int = 0

    @classmethod
    def tiny(cls) -> MinibatchVIConfig:
        return cls(n_train=1000, epochs=5, n_eval_samples=3, n_test=2000)

    @classmethod
    def paper(cls) -> MinibatchVIConfig:
        return cls(n_train=60000, epochs=20)


def train_minibatch_vi(
    model: BayesianMLP,
    x: Tensor,
    y: Tensor,
    cfg: MinibatchVIConfig,
    device: torch.device | str = "cpu",
) -> History:
    """Doubly stochastic VI (a mini-batch, a weight sample): maximise :func:`elbo` with Adam."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y disagree on N: {x.shape[0]} vs {y.shape[0]}")
    n = x.shape[0]
    model.to(device).train()
    x, y = x.to(device), y.to(device)
    logvars = [p for name, p in model.named_parameters() if name.endswith("q.logvar")]
    others = [p for name, p in model.named_parameters() if not name.endswith("q.logvar")]
    gen = torch.Generator().manual_seed(cfg.seed)
    history = History()
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    batch = {"order": None}

    def loss_at(step: int) -> Tensor:
        start = (step % steps_per_epoch) * cfg.batch_size
        if start == 0:  # a new pass over the data
            batch["order"] = torch.randperm(n, generator=gen).to(device)
        idx = batch["order"][start : start + cfg.batch_size]
        log_lik = -F.cross_entropy(model(x[idx]), y[idx], reduction="none")
        kl = model.kl()
        bound = elbo(log_lik, kl, n)
        history.record(elbo=bound.item(), kl=kl.item(), data_term=bound.item() + kl.item())
        return -bound

    groups = [{"params": others, "lr": cfg.lr}, {"params": logvars, "lr": cfg.lr_logvar}]
    log = fit(groups, loss_at, cfg.epochs * steps_per_epoch, cfg.lr, "mini-batch VI")
    history.loss, history.lr, history.seconds = log.loss, log.lr, log.seconds
    return history


@torch.no_grad()
def predictive_accuracy(
    model: BayesianMLP,
    x: Tensor,
    y: Tensor,
    n_samples: int = 10,
    batch_size: int = 2000,
    device: torch.device | str = "cpu",
) -> float:
    """Accuracy of (1/S) sum_s softmax(f(x; w_s)), w_s ~ q (``n_samples=0``: the mean)."""
    model.to(device).eval()
    correct = 0
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size].to(device)
        yb = y[start : start + batch_size].to(device)
        if n_samples == 0:
            probs = model(xb, sample=False).softmax(-1)
        else:
            probs = sum(model(xb, sample=True).softmax(-1) for _ in range(n_samples)) / n_samples
        correct += (probs.argmax(-1) == yb).sum().item()
    return correct / x.shape[0]
