"""The Bayesian CNN, its ELBO and its training: the heart of the deep weight prior (book/05).
Images ``(B, 1, 28, 28)``; a conv weight ``(c_out, c_in, k, k)`` is ``c_out * c_in`` *slices*."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import gaussian
from .config import Presets, check_fields, to_dict
from .device import default_device, seed_everything
from .nets import LAYERS, FConv, conv_l2
from .priors import DWP_SLICES_PER_STEP, PriorSpec, priors_by_layer
from .train import History, check_images_and_labels, fit, linear_decay
from .vi import elbo

#: The local reparametrisation's two convolutions as one grouped call (the same to rounding;
#: ``False``: the reference, for tests and ``benchmarks/dwp_cell.py``).
FUSED_LRT = True


@dataclass
class BayesConfig(Presets):
    """Target net, posterior, priors' options, training (``paper``: the authors' n = 50 setting)."""

    channels: tuple[int, int] = (32, 128)  # FConv(c1, c2): conv 7x7 -> c1, conv 5x5 -> c2
    log_sigma2_init: float = -10.0  # authors' value: q starts almost a point mass
    alpha_logit_init: float = -2.0  # log-uniform layers: alpha = sigmoid(-2) = 0.12 (authors)
    steps: int = 1000
    lr: float = 1e-3
    batch_size: int | None = None  # None: full batch (the authors' setting for small n)
    kl_weight: float = 1.0
    dwp_slices_per_step: int | None = DWP_SLICES_PER_STEP
    dwp_train_reverse: bool = False  # False: the authors' code; True: the paper's algorithm
    det_weight_decay: float = 1e-3  # "det" baseline: lambda * sum of squared conv weights
    eval_samples: int = 10  # weight samples in the ensemble accuracy
    eval_batch_size: int = 1000

    def __post_init__(self) -> None:
        check_fields(self)  # the ranges too: steps >= 1, lr > 0, kl_weight >= 0, ...

    @classmethod
    def tiny(cls) -> BayesConfig:
        return cls(channels=(8, 16), steps=30, eval_samples=3)

    @classmethod
    def book(cls) -> BayesConfig:
        # CPU-sized: a narrower target net and fewer steps than the paper (see book/05); a
        # short training starts the log-variances higher than the authors' -10
        return cls(channels=(16, 64), steps=300, log_sigma2_init=-6.0)

    @classmethod
    def paper(cls) -> BayesConfig:
        return cls(steps=10_000)


class BayesConv2d(nn.Module):
    """Conv with q(w) = prod_i N(w_i | mu_i, sigma_i^2), a bias without prior; sigma^2 is a free
    ``log_sigma2`` or, ``alpha_parametrised`` (LogUniform's form), sigmoid(``alpha_logit``) mu^2."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        log_sigma2_init: float = -10.0,
        alpha_parametrised: bool = False,
        alpha_logit_init: float = -2.0,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = kernel_size
        shape = (out_channels, in_channels, kernel_size, kernel_size)
        self.mu = nn.Parameter(nn.init.xavier_normal_(torch.empty(shape)))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.alpha_parametrised = alpha_parametrised
        if alpha_parametrised:
            self.alpha_logit = nn.Parameter(torch.full(shape, float(alpha_logit_init)))
        else:
            self.log_sigma2 = nn.Parameter(torch.full(shape, float(log_sigma2_init)))

    def extra_repr(self) -> str:
        k, a = self.kernel_size, self.alpha_parametrised
        return f"{self.in_channels}, {self.out_channels}, kernel_size={k}, alpha_parametrised={a}"

    def log_alpha(self) -> Tensor:
        """log alpha = log sigma^2 - log mu^2 per weight (alpha parametrisation only)."""
        if not self.alpha_parametrised:
            raise ValueError(
                "this BayesConv2d has a free log sigma^2, not the alpha parametrisation "
                "sigma^2 = alpha * mu^2; build it with alpha_parametrised=True"
            )
        return F.logsigmoid(self.alpha_logit)

    def log_var(self) -> Tensor:
        """log sigma^2 of q per weight, ``(c_out, c_in, k, k)``, whichever parametrisation."""
        if self.alpha_parametrised:
            return self.log_alpha() + torch.log(self.mu**2 + 1e-16)
        return self.log_sigma2

    def entropy(self) -> Tensor:
        """H(q) = sum_i 0.5 * log(2 pi e sigma_i^2) (a scalar)."""
        return gaussian.entropy(self.log_var()).sum()

    def slices(self) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q per slice: two ``(c_out * c_in, k, k)`` tensors."""
        k = self.kernel_size
        return self.mu.reshape(-1, k, k), self.log_var().reshape(-1, k, k)

    def rsample_weight(self) -> Tensor:
        """One reparametrised draw of the whole weight tensor w ~ q(w)."""
        return gaussian.rsample(self.mu, self.log_var())

    def forward(self, x: Tensor, sample: bool | None = None) -> Tensor:
        """Pre-activations sampled by local reparametrisation (book/02, eq-local-reparam) in
        ``train()`` mode, at the mean weights in ``eval()`` mode, unless ``sample`` says."""
        if not (self.training if sample is None else sample):
            return F.conv2d(x, self.mu, self.bias)
        return gaussian.sample_from_moments(*self.moments(x))

    def moments(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Pre-activation mean ``conv(x, mu) + b`` and variance ``conv(x^2, sigma^2)`` under q."""
        if FUSED_LRT:
            # [x, x^2] through [mu, sigma^2] with groups=2: one pass over the input, ~2x faster
            # on a CPU for the 1-channel first layer (benchmarks/dwp_cell.py)
            both = F.conv2d(
                torch.cat([x, x**2], 1),
                torch.cat([self.mu, torch.exp(self.log_var())], 0),
                torch.cat([self.bias, torch.zeros_like(self.bias)]),
                groups=2,
            )
            return both.chunk(2, 1)
        return F.conv2d(x, self.mu, self.bias), F.conv2d(x**2, torch.exp(self.log_var()))


class BayesianCNN(FConv):
    """The authors' FConv, its convolutions :class:`BayesConv2d` (book/05); no prior on fc."""

    def __init__(self, cfg: BayesConfig | None = None, alpha_parametrised: bool = False) -> None:
        cfg = cfg or BayesConfig()
        super().__init__(*cfg.channels)
        c1, c2 = cfg.channels
        opts = dict(
            log_sigma2_init=cfg.log_sigma2_init,
            alpha_parametrised=alpha_parametrised,
            alpha_logit_init=cfg.alpha_logit_init,
        )
        self.conv1 = BayesConv2d(1, c1, LAYERS["conv1"], **opts)
        self.conv2 = BayesConv2d(c1, c2, LAYERS["conv2"], **opts)

    @torch.no_grad()
    def sampled_logits(self, x: Tensor, passes: int) -> Iterator[Tensor]:
        """Logits of ``passes`` sampling passes (as many train-mode calls), conv1's moments once."""
        mean, var = self.conv1.moments(x)
        for _ in range(passes):
            yield self.fc(self.features_after_conv1(gaussian.sample_from_moments(mean, var)))

    def bayes_layers(self) -> dict[str, BayesConv2d]:
        """The layers that have a posterior and a prior, by name (``conv1``, ``conv2``)."""
        return {n: m for n, m in self.conv_layers().items() if isinstance(m, BayesConv2d)}


@dataclass
class ElboTerms:
    """The negative ELBO of a batch and its two parts (tensors; ``loss`` has a graph)."""

    loss: Tensor  # nll + kl_weight * kl, to minimise
    nll: Tensor  # -E_q log p(y | x, w) on the whole training set, estimated from the batch
    kl: Tensor


def negative_elbo(
    model: BayesianCNN,
    x: Tensor,
    y: Tensor,
    num_train: int,
    priors: PriorSpec,
    kl_weight: float = 1.0,
) -> ElboTerms:
    """-ELBO = (N / B) * sum_batch CE(f_w(x), y) + kl_weight * KL(q || p) (book/02,
    eq-minibatch-vlb), one sampled network per step. With ``kl_weight=1``, -loss estimates the
    ELBO (book/05, eq-exp-elbo); with a ``DeepWeightPrior``, whose KL is an upper bound, L^aux
    (book/04, eq-aux-bound).
    """
    if not model.training:
        raise ValueError(
            "the ELBO needs sampled weights, but the model is in eval mode (posterior means); "
            "call model.train() first"
        )
    log_lik = -F.cross_entropy(model(x), y, reduction="none")
    by_layer = priors_by_layer(model, priors)
    kl = sum(by_layer[name].kl(layer) for name, layer in model.bayes_layers().items())
    loss = -elbo(log_lik, kl_weight * kl, num_train)
    return ElboTerms(loss=loss, nll=loss - kl_weight * kl, kl=kl)


@torch.no_grad()
def predictive_probs(
    model: nn.Module, x: Tensor, samples: int = 10, batch_size: int = 1000
) -> Tensor:
    """(1/S) sum_j p(y | x, W_j), ``(N, 10)``, one sampling pass per term (book/05,
    eq-exp-ensemble). ``samples=0``, or a plain CNN: one pass at the mean weights."""
    was_training = model.training
    bayesian = samples > 0 and isinstance(model, BayesianCNN)
    passes = samples if bayesian else 1
    model.train(bayesian)  # train mode samples the weights; the nets have no dropout or BN
    device = next(model.parameters()).device
    out = []
    for chunk in x.split(batch_size):
        chunk = chunk.to(device)
        passes_logits = model.sampled_logits(chunk, passes) if bayesian else [model(chunk)]
        p = sum(F.softmax(logits, -1) for logits in passes_logits) / passes
        out.append(p.cpu())
    model.train(was_training)
    return torch.cat(out)


def ensemble_accuracy(
    model: nn.Module, x: Tensor, y: Tensor, samples: int = 10, batch_size: int = 1000
) -> float:
    """Accuracy of the ensemble :func:`predictive_probs` (the paper's metric)."""
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}; use mean_accuracy for the mean")
    probs = predictive_probs(model, x, samples, batch_size)
    return (probs.argmax(-1) == y.cpu()).float().mean().item()


def mean_accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1000) -> float:
    """Accuracy of the network at the posterior mean weights (a plain CNN: its accuracy)."""
    probs = predictive_probs(model, x, 0, batch_size)
    return (probs.argmax(-1) == y.cpu()).float().mean().item()


def _batches(n: int, batch_size: int | None, steps: int, gen: torch.Generator):
    """Index tensors, one per step: the full batch, or reshuffled passes of ``batch_size``."""
    if batch_size is None or batch_size >= n:
        full = torch.arange(n)
        for _ in range(steps):
            yield full
        return
    order, pos = torch.randperm(n, generator=gen), 0
    for _ in range(steps):
        if pos + batch_size > n:
            order, pos = torch.randperm(n, generator=gen), 0
        yield order[pos : pos + batch_size]
        pos += batch_size


def _fit(model, params, loss_fn, x, y, cfg: BayesConfig, seed, device, desc) -> History:
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    check_images_and_labels(x, y, desc, num_classes=last[-1].out_features if last else None)
    gen = seed_everything(seed)
    x, y = x.to(device), y.to(device)
    hist = History(config=to_dict(cfg), seed=seed)
    batches = _batches(len(x), cfg.batch_size, cfg.steps, gen)

    def loss_at(step: int) -> Tensor:
        idx = next(batches).to(device)
        loss, terms = loss_fn(x[idx], y[idx])
        hist.record(**{k: v.item() for k, v in terms.items()})
        return loss

    model.train()
    decay = partial(linear_decay, total_steps=cfg.steps)
    log = fit(params, loss_at, cfg.steps, cfg.lr, desc, schedule=decay, postfix=".1f")
    hist.loss, hist.lr, hist.seconds = log.loss, log.lr, log.seconds
    model.eval()
    return hist


def train_bayesian_cnn(
    model: BayesianCNN,
    priors: PriorSpec,
    x: Tensor,
    y: Tensor,
    cfg: BayesConfig,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> History:
    """Maximise the ELBO of ``model`` on (x, y) with Adam and a linear decay (book/05), over
    the network's parameters and the priors' trainable ones (reverse models)."""
    device = torch.device(device) if device is not None else default_device()
    by_layer = priors_by_layer(model, priors)
    for name, prior in by_layer.items():
        if prior.alpha_parametrised and not model.bayes_layers()[name].alpha_parametrised:
            raise ValueError(
                f"{type(prior).__name__} on {name!r} needs BayesianCNN(alpha_parametrised=True)"
            )
    model.to(device)
    trainable = [p for prior in set(by_layer.values()) for p in prior.to(device).parameters()]
    params = list(model.parameters()) + [p for p in trainable if p.requires_grad]
    n = len(x)

    def loss_fn(xb, yb):
        terms = negative_elbo(model, xb, yb, n, by_layer, cfg.kl_weight)
        return terms.loss, {"nll": terms.nll, "kl": terms.kl}

    return _fit(model, params, loss_fn, x, y, cfg, seed, device, "Bayesian CNN")


def det_cnn(cfg: BayesConfig | None = None) -> FConv:
    """The "det" baseline: a plain FConv(c1, c2) of the same shape as the Bayesian CNN."""
    return FConv(*(cfg or BayesConfig()).channels)


def train_det_cnn(
    net: FConv,
    x: Tensor,
    y: Tensor,
    cfg: BayesConfig,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> History:
    """Train the "det" baseline on mean cross-entropy + lambda * :func:`~dwp_lib.nets.conv_l2`,
    as the Bayesian CNN is trained. The history records ``nll`` and ``l2``."""
    device = torch.device(device) if device is not None else default_device()
    net.to(device)

    def loss_fn(xb, yb):
        nll = F.cross_entropy(net(xb), yb)
        l2 = conv_l2(net)
        return nll + cfg.det_weight_decay * l2, {"nll": nll, "l2": l2}

    return _fit(net, list(net.parameters()), loss_fn, x, y, cfg, seed, device, "det CNN")
