"""Bayesian CNN, its priors and the ELBO: the heart of the deep weight prior (book/04, book/05).

Read top to bottom, this file is the method:

1. :class:`BayesConv2d`: a convolution whose weights have a fully factorised Gaussian posterior
   q(w) = prod N(w | mu, sigma^2), sampled with the local reparametrisation trick.
2. :class:`BayesianCNN`: the authors' target network FConv(32, 128) with two such layers and a
   deterministic linear head.
3. The priors, one interface (:class:`Prior`, ``prior.kl(layer)``), swapped by passing another
   object: :class:`StandardNormal`, :class:`LogUniform`, :class:`DeepWeightPrior`.
4. The ELBO (:func:`negative_elbo`), the accuracies (:func:`ensemble_accuracy`,
   :func:`mean_accuracy`), the initialisations (:class:`XavierInit`, :class:`FiltersInit`,
   :class:`DWPInit`) and a thin training loop (:func:`train_bayesian_cnn`, :func:`train_det_cnn`).

Shapes: images ``(B, 1, 28, 28)``; a conv weight ``(c_out, c_in, k, k)`` is cut into
``c_out * c_in`` *slices* ``(k, k)``; per-slice quantities are ``(M,)``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import check_fields, preset_of, to_dict
from .device import default_device, seed_everything
from .progress import progress
from .source_nets import LAYERS, FConv, KernelBank, conv_l2, linear_decay
from .train import check_finite, check_images_and_labels
from .vae import KernelVAE
from .vi import elbo, kl_normal_standard

LOG_2PI_E = math.log(2 * math.pi * math.e)

#: The local reparametrisation's two convolutions as one grouped call (same numbers to float
#: rounding; ``False`` is the reference, kept for tests and ``benchmarks/dwp_cell.py``).
FUSED_LRT = True

# How many random slices of a layer the DWP penalty looks at per step (None: all of them).
# Chosen by accuracy per CPU-second on the n = 50 experiment; why, in DeepWeightPrior.
DWP_SLICES_PER_STEP: int | None = 256


# ------------------------------------------------------------------------------------------------
# Configuration: every knob of the Bayesian CNN stage
# ------------------------------------------------------------------------------------------------


@dataclass
class BayesConfig:
    """The target network, its posterior, the priors' options and how to train it.

    ``paper`` is the authors' n = 50 setting: 10,000 full-batch Adam steps at lr 1e-3 with a
    linear decay, log sigma^2 initialised at -10, KL weight 1, a 10-sample ensemble.
    """

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
        check_fields(self)
        if self.steps < 1 or self.lr <= 0 or self.kl_weight < 0 or self.eval_samples < 1:
            raise ValueError(f"need steps >= 1, lr > 0, kl_weight >= 0, eval_samples >= 1: {self}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be None (full batch) or >= 1, got {self.batch_size}")
        if self.dwp_slices_per_step is not None and self.dwp_slices_per_step < 1:
            raise ValueError(
                f"dwp_slices_per_step must be None (exact) or >= 1, got {self.dwp_slices_per_step}"
            )

    @classmethod
    def preset(cls, name: str, **overrides) -> BayesConfig:
        return preset_of(cls, name, **overrides)

    @classmethod
    def tiny(cls) -> BayesConfig:
        return cls(channels=(8, 16), steps=30, eval_samples=3)

    @classmethod
    def book(cls) -> BayesConfig:
        return cls(steps=1000)

    @classmethod
    def paper(cls) -> BayesConfig:
        return cls(steps=10_000)


# ------------------------------------------------------------------------------------------------
# 1. The Bayesian convolution
# ------------------------------------------------------------------------------------------------


class BayesConv2d(nn.Module):
    """Convolution with a fully factorised Gaussian posterior over its weights (book/04).

    q(w) = prod_i N(w_i | mu_i, sigma_i^2) over the ``(c_out, c_in, k, k)`` weights; the bias
    is deterministic (a point estimate without a prior, as in the authors' code).

    Two parametrisations of sigma^2:

    - default: a free ``log_sigma2`` per weight, initialised at ``log_sigma2_init``;
    - ``alpha_parametrised=True``: sigma^2 = alpha * mu^2 with alpha = sigmoid(``alpha_logit``)
      in (0, 1), the form the log-uniform prior needs (:class:`LogUniform`).

    The forward pass samples with the *local reparametrisation trick* (book/02,
    eq-local-reparam): rather than one weight sample for the batch, it samples each output
    pre-activation from its exact Gaussian, mean conv(x, mu) and variance conv(x^2, sigma^2).
    Same distribution per example, independent across examples, lower-variance gradients.
    """

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

    # -- the posterior q(w) -------------------------------------------------------------------------
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
        return 0.5 * (LOG_2PI_E + self.log_var()).sum()

    def slices(self) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q per slice: two ``(c_out * c_in, k, k)`` tensors."""
        k = self.kernel_size
        return self.mu.reshape(-1, k, k), self.log_var().reshape(-1, k, k)

    def rsample_weight(self) -> Tensor:
        """One reparametrised draw of the whole weight tensor w ~ q(w)."""
        return self.mu + torch.exp(0.5 * self.log_var()) * torch.randn_like(self.mu)

    # -- the forward pass ---------------------------------------------------------------------------
    def forward(self, x: Tensor, sample: bool | None = None) -> Tensor:
        """Pre-activations: a local-reparametrisation sample (book/02, eq-local-reparam), or
        their value at the posterior mean weights. Like dropout (and vi.BayesianLinear), it
        samples in ``train()`` mode and uses the mean in ``eval()`` mode unless ``sample`` says
        otherwise."""
        if not (self.training if sample is None else sample):
            return F.conv2d(x, self.mu, self.bias)
        if FUSED_LRT:
            # Both convolutions in one grouped call: [x, x^2] (2 c_in channels) through
            # [mu, sigma^2] (2 c_out filters, groups=2). The same sums, one pass over the input;
            # ~2x faster on a CPU for the 1-channel first layer (benchmarks/dwp_cell.py).
            both = F.conv2d(
                torch.cat([x, x**2], 1),
                torch.cat([self.mu, torch.exp(self.log_var())], 0),
                torch.cat([self.bias, torch.zeros_like(self.bias)]),
                groups=2,
            )
            mean, var = both.chunk(2, 1)
        else:
            mean = F.conv2d(x, self.mu, self.bias)
            var = F.conv2d(x**2, torch.exp(self.log_var()))
        # The floor keeps sqrt differentiable where a patch of the input is all zeros.
        return mean + torch.sqrt(var + 1e-16) * torch.randn_like(mean)


# ------------------------------------------------------------------------------------------------
# 2. The target network
# ------------------------------------------------------------------------------------------------


class BayesianCNN(FConv):
    """The authors' target network FConv(c1, c2) with Bayesian convolutions (book/05).

    conv 7x7 (1 -> c1) -> LeakyReLU -> max-pool 2 -> conv 5x5 (c1 -> c2) -> LeakyReLU ->
    max-pool 2 -> flatten (c2 * 3 * 3) -> linear (-> 10). The architecture and the forward pass
    are :class:`dwp_lib.source_nets.FConv`'s; only ``conv1`` and ``conv2`` are replaced by
    :class:`BayesConv2d`. The linear head is deterministic and has no prior.

    Like dropout, the network samples its weights in ``train()`` mode and uses the posterior
    means in ``eval()`` mode (the "deterministic" network).
    """

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

    def bayes_layers(self) -> dict[str, BayesConv2d]:
        """The layers that have a posterior and a prior, by name (``conv1``, ``conv2``)."""
        return {n: m for n, m in self.conv_layers().items() if isinstance(m, BayesConv2d)}


# ------------------------------------------------------------------------------------------------
# 3. The priors: one interface, prior.kl(layer)
# ------------------------------------------------------------------------------------------------


class Prior(nn.Module):
    """A prior over the weights of a :class:`BayesConv2d`.

    :meth:`kl` returns the layer's term of the ELBO's KL(q || p) = E_q [log q(w) - log p(w)]
    (book/04, eq-kl-q-p), a scalar to minimise: in closed form where there is one, otherwise an
    unbiased estimate of an upper bound on it.
    ``alpha_parametrised`` says which parametrisation of the layer the prior needs.
    """

    alpha_parametrised: bool = False

    def kl(self, layer: BayesConv2d) -> Tensor:  # pragma: no cover (abstract)
        raise NotImplementedError


class StandardNormal(Prior):
    """p(w) = N(0, 1) for every weight; KL(q || p) in closed form (book/01, eq-kl-normal)."""

    def kl(self, layer: BayesConv2d) -> Tensor:
        return kl_normal_standard(layer.mu, layer.log_var())


# Kingma, Salimans & Welling (2015): -KL(q || log-uniform) ~ const + 0.5 log a + c1 a + c2 a^2 + c3 a^3
LOG_UNIFORM_C = (1.16145124, -1.50204118, 0.58629921)


def kl_log_uniform(log_alpha: Tensor) -> Tensor:
    """KL(N(mu, alpha mu^2) || log-uniform) per weight, up to an additive constant (book/05).

    The polynomial approximation of Kingma et al. (2015), valid for alpha <= 1. The prior is
    improper, so the KL is only defined up to a constant, which is dropped.
    """
    c1, c2, c3 = LOG_UNIFORM_C
    alpha = torch.exp(log_alpha)
    return -(0.5 * log_alpha + c1 * alpha + c2 * alpha**2 + c3 * alpha**3)


class LogUniform(Prior):
    """The log-uniform prior p(|w|) ~ 1/|w| of variational dropout (book/05, baseline).

    Only defined for layers in the alpha parametrisation sigma^2 = alpha * mu^2; any other
    layer raises (the authors' code silently returned a KL of zero).
    """

    alpha_parametrised = True

    def kl(self, layer: BayesConv2d) -> Tensor:
        if not layer.alpha_parametrised:
            raise ValueError(
                "the log-uniform prior needs the alpha parametrisation sigma^2 = alpha * mu^2; "
                "build the network with BayesianCNN(cfg, alpha_parametrised=True) "
                "(LogUniform.alpha_parametrised says so)"
            )
        return kl_log_uniform(layer.log_alpha()).sum()


class DeepWeightPrior(Prior):
    """The deep weight prior of one layer: p(w) = prod_slices ∫ p(w_s|z) N(z|0, I) dz (book/04).

    Its KL has no closed form; :meth:`kl` estimates the auxiliary upper bound (book/04, eq-dwp-aux,
    written out as in book/05, eq-exp-aux)

        KL(q || p) <= -H(q) + sum_s E_q(w_s) E_r(z|w_s) [ -log p(w_s|z) + log r(z|w_s) - log p(z) ]
                    = -H(q) - sum_s E_q(w_s) [ aux_bound(w_s) ],

    with the kernel VAE's decoder as p(w|z) and its encoder as the reverse model r(z|w).
    One draw w_s ~ q and one z ~ r(z|w_s) per slice and step, as in the authors' code.

    ``slices_per_step``: ``None`` sums over all c_out * c_in slices (exact, in expectation);
    an integer m sums over m slices drawn without replacement and rescales by M / m, an
    unbiased estimate of the same sum at a fraction of the cost (the VAE's forward and
    backward passes over all 4,096 slices of conv2 cost ~10x the rest of the step).

    The default, 256 slices, won on accuracy per CPU-second (n = 50 MNIST, FConv(32, 128),
    dwp init, 3 split seeds, 500 steps): the subsampled runs were both ~6x cheaper and more
    accurate. Not because they estimate better: Adam divides each step by the gradient's RMS,
    and the subsampled penalty's gradient is ~3.5x noisier for the same mean, so the steps the
    prior drives are ~3.5x smaller (``benchmarks/dwp_step.py`` prints both figures). With the
    exact sum, Adam follows the prior's strong, clean pull from the first steps and the network
    under-fits the data within 500 steps; given the same CPU time (3,000 steps) the subsampled
    run also reaches a lower negative ELBO. Treat m as a knob of the optimisation, not only of
    the cost.

    ``train_reverse``: ``False`` freezes the whole kernel VAE (authors' code); ``True`` lets
    the optimiser train r(z|w) jointly with q, tightening the bound (the paper's algorithm).
    The decoder, which *is* the prior, is always frozen. The prior keeps its own copy of the
    VAE, so the caller's is never changed.
    """

    def __init__(
        self,
        kernel_vae: KernelVAE,
        slices_per_step: int | None = DWP_SLICES_PER_STEP,
        train_reverse: bool = False,
    ) -> None:
        super().__init__()
        if slices_per_step is not None and slices_per_step < 1:
            raise ValueError(f"slices_per_step must be None (exact) or >= 1, got {slices_per_step}")
        self.kernel_vae = copy.deepcopy(kernel_vae).eval()
        self.slices_per_step = slices_per_step
        self.train_reverse = train_reverse
        self.kernel_vae.requires_grad_(False)
        for p in self.kernel_vae.reverse_parameters() if train_reverse else ():
            p.requires_grad_(True)

    def extra_repr(self) -> str:
        return f"slices_per_step={self.slices_per_step}, train_reverse={self.train_reverse}"

    def aux_bound(self, w: Tensor) -> Tensor:
        """E_r(z|w) [ log p(w|z) + log p(z) - log r(z|w) ] per slice, ``(B,)`` (one z each).

        A lower bound on log p(w), tight when r(z|w) is the true posterior p(z|w): the
        kernel VAE's ELBO.
        """
        return self.kernel_vae.elbo(w)

    def kl(self, layer: BayesConv2d) -> Tensor:
        if layer.kernel_size != self.kernel_vae.kernel_size:
            raise ValueError(
                f"this DeepWeightPrior models {self.kernel_vae.kernel_size}x"
                f"{self.kernel_vae.kernel_size} slices but the layer has "
                f"{layer.kernel_size}x{layer.kernel_size} kernels; pass the layer's own kernel VAE"
            )
        mu, log_var = layer.slices()
        total = mu.shape[0]
        m = total if self.slices_per_step is None else min(self.slices_per_step, total)
        if m < total:
            idx = torch.randperm(total, device=mu.device)[:m]
            mu, log_var = mu[idx], log_var[idx]
        w = mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)
        return -layer.entropy() - (total / m) * self.aux_bound(w).sum()


PriorSpec = Prior | Mapping[str, Prior]


def priors_by_layer(model: BayesianCNN, priors: PriorSpec) -> dict[str, Prior]:
    """One prior per Bayesian layer: the same for all, or a mapping that names every layer."""
    layers = model.bayes_layers()
    if isinstance(priors, Prior):
        return {name: priors for name in layers}
    missing, extra = set(layers) - set(priors), set(priors) - set(layers)
    if missing or extra:
        raise ValueError(
            f"priors must name exactly the Bayesian layers {sorted(layers)}; "
            f"missing {sorted(missing)}, unknown {sorted(extra)}"
        )
    for name, prior in priors.items():
        if not isinstance(prior, Prior):
            raise TypeError(f"prior of {name!r} is a {type(prior).__name__}, not a Prior")
    return dict(priors)


# ------------------------------------------------------------------------------------------------
# 4. The ELBO and the accuracies
# ------------------------------------------------------------------------------------------------


def kl_term(model: BayesianCNN, priors: PriorSpec) -> Tensor:
    """KL(q || p) of the network: the sum of every Bayesian layer's ``prior.kl(layer)``."""
    by_layer = priors_by_layer(model, priors)
    return sum(by_layer[name].kl(layer) for name, layer in model.bayes_layers().items())


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
    """-ELBO = (N / B) * sum_batch CE(f_w(x), y) + kl_weight * KL(q || p) (book/02, eq-minibatch-vlb).

    One sample of the network (local reparametrisation) per step; the data term is scaled from
    the batch of B to the N training examples (:func:`dwp_lib.vi.elbo`) so that it is an
    unbiased estimate of the sum over the training set. With ``kl_weight=1``, -loss estimates
    the ELBO of the prior comparison (book/05, eq-exp-elbo); with a :class:`DeepWeightPrior`,
    whose KL is the auxiliary upper bound, it estimates L^aux instead (book/04, eq-aux-bound).
    """
    if not model.training:
        raise ValueError(
            "the ELBO needs sampled weights, but the model is in eval mode (posterior means); "
            "call model.train() first"
        )
    log_lik = -F.cross_entropy(model(x), y, reduction="none")
    kl = kl_term(model, priors)
    loss = -elbo(log_lik, kl_weight * kl, num_train)
    return ElboTerms(loss=loss, nll=loss - kl_weight * kl, kl=kl)


@torch.no_grad()
def predictive_probs(
    model: nn.Module, x: Tensor, samples: int = 10, batch_size: int = 1000
) -> Tensor:
    """p(y | x) averaged over ``samples`` weight samples, ``(N, 10)`` (the ensemble).

    The Monte-Carlo predictive (1/S) sum_j p(y | x, W_j) of (book/05, eq-exp-ensemble), one
    sampling forward pass per term (the local reparametrisation trick draws the pre-activations
    of that pass rather than W_j itself).

    ``samples=0`` means the posterior mean weights (one deterministic pass). Works for a plain
    CNN too (one pass: every sample would be the same network). No optimiser is involved.
    """
    was_training = model.training
    bayesian = samples > 0 and isinstance(model, BayesianCNN)
    passes = samples if bayesian else 1
    model.train(bayesian)  # train mode samples the weights; the nets have no dropout or BN
    device = next(model.parameters()).device
    out = []
    for chunk in x.split(batch_size):
        chunk = chunk.to(device)
        p = sum(F.softmax(model(chunk), -1) for _ in range(passes)) / passes
        out.append(p.cpu())
    model.train(was_training)
    return torch.cat(out)


def ensemble_accuracy(
    model: nn.Module, x: Tensor, y: Tensor, samples: int = 10, batch_size: int = 1000
) -> float:
    """Accuracy of the predictive mean over ``samples`` weight samples (the paper's metric): the
    argmax of :func:`predictive_probs`, the ensemble of (book/05, eq-exp-ensemble)."""
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}; use mean_accuracy for the mean")
    probs = predictive_probs(model, x, samples, batch_size)
    return (probs.argmax(-1) == y.cpu()).float().mean().item()


def mean_accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1000) -> float:
    """Accuracy of the network at the posterior mean weights (a plain CNN: its accuracy)."""
    probs = predictive_probs(model, x, 0, batch_size)
    return (probs.argmax(-1) == y.cpu()).float().mean().item()


# ------------------------------------------------------------------------------------------------
# 5. Initialisations: xavier, filters, dwp
# ------------------------------------------------------------------------------------------------


class Initialisation(Protocol):
    """How to draw the conv weights of a layer: ``xavier``, ``filters`` or ``dwp``."""

    name: str

    def conv_weight(
        self, layer: str, shape: tuple[int, ...], generator: torch.Generator
    ) -> Tensor: ...


class XavierInit:
    """Xavier-normal (Glorot & Bengio 2010): N(0, 2 / (fan_in + fan_out)), not torch's default."""

    name = "xavier"

    def conv_weight(self, layer: str, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        return nn.init.xavier_normal_(torch.empty(shape), generator=generator)


class FiltersInit:
    """Random real source slices ("filters"): each slice drawn uniformly, with replacement, from
    the kernel bank (:meth:`dwp_lib.source_nets.KernelBank.random_kernels`)."""

    name = "filters"

    def __init__(self, bank: KernelBank, split: str = "train") -> None:
        self.bank, self.split = bank, split

    def conv_weight(self, layer: str, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        c_out, c_in = shape[:2]
        w = self.bank.random_kernels(layer, c_out, c_in, self.split, generator).float().cpu()
        _check_slices(w, shape, layer, "the kernel bank")
        return w


class DWPInit:
    """Samples of the layer's kernel VAE ("dwp"): decoder means at z ~ N(0, I)."""

    name = "dwp"

    def __init__(self, kernel_vaes: Mapping[str, KernelVAE]) -> None:
        self.kernel_vaes = dict(kernel_vaes)

    def conv_weight(self, layer: str, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        if layer not in self.kernel_vaes:
            raise KeyError(f"no kernel VAE for layer {layer!r}; have {sorted(self.kernel_vaes)}")
        w = self.kernel_vaes[layer].sample(shape[0] * shape[1], generator=generator).cpu()
        _check_slices(w, shape, layer, "the kernel VAE")
        return w.reshape(shape)


def _check_slices(w: Tensor, shape: tuple[int, ...], layer: str, source: str) -> None:
    if w.numel() != math.prod(shape) or tuple(w.shape[-2:]) != tuple(shape[-2:]):
        raise ValueError(
            f"{source} gives kernels of shape {tuple(w.shape)} for layer {layer!r}, "
            f"whose weight is {tuple(shape)}: use the bank/VAE of the same kernel size"
        )


def conv_weights(model: FConv) -> dict[str, nn.Parameter]:
    """The weights an initialisation sets, by layer: the means mu of Bayesian convolutions, the
    weights of plain ones."""
    return {
        name: layer.mu if isinstance(layer, BayesConv2d) else layer.weight
        for name, layer in model.conv_layers().items()
    }


#: the head's generator is seeded apart from the kernels' (see :func:`initialise`)
HEAD_SEED_OFFSET = 1_000_003


@torch.no_grad()
def initialise(model: FConv, init: Initialisation, seed: int = 0) -> FConv:
    """Set the conv weights (Bayesian: their means) with ``init``; Xavier-normal for the head.

    Values are copied *into* the existing parameters, so an optimiser built before or after
    sees the same tensors (replacing a parameter after building the optimiser is a pitfall of
    public code: the new weights never train). Biases start at zero. The head has its own
    generator (seeded ``HEAD_SEED_OFFSET + seed``), so two inits with one seed differ in their
    conv kernels only.
    """
    gen = torch.Generator().manual_seed(seed)
    for name, weight in conv_weights(model).items():
        weight.copy_(init.conv_weight(name, tuple(weight.shape), gen))
        model.conv_layers()[name].bias.zero_()
    head = model.fc
    head_gen = torch.Generator().manual_seed(HEAD_SEED_OFFSET + seed)
    head.weight.copy_(
        nn.init.xavier_normal_(torch.empty_like(head.weight, device="cpu"), generator=head_gen)
    )
    head.bias.zero_()
    return model


# ------------------------------------------------------------------------------------------------
# 6. Training (thin)
# ------------------------------------------------------------------------------------------------


@dataclass
class BNNHistory:
    """Per step: the negative ELBO, its data term and KL (nats), and the learning rate."""

    loss: list[float] = field(default_factory=list)
    nll: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: float = 0.0
    config: dict = field(default_factory=dict)
    seed: int = 0


def _num_classes(model: nn.Module) -> int | None:
    """The number of outputs of the network's last linear layer (None if it has none)."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return last[-1].out_features if last else None


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


def _fit(model, params, loss_fn, x, y, cfg: BayesConfig, seed, device, desc) -> BNNHistory:
    check_images_and_labels(x, y, desc, num_classes=_num_classes(model))
    gen = seed_everything(seed)
    x, y = x.to(device), y.to(device)
    opt = torch.optim.Adam(params, lr=cfg.lr)
    hist = BNNHistory(config=to_dict(cfg), seed=seed)
    model.train()
    start = time.perf_counter()
    bar = progress(_batches(len(x), cfg.batch_size, cfg.steps, gen), total=cfg.steps, desc=desc)
    for step, idx in enumerate(bar):
        for group in opt.param_groups:
            group["lr"] = cfg.lr * linear_decay(step, cfg.steps)
        idx = idx.to(device)
        terms = loss_fn(x[idx], y[idx])
        opt.zero_grad(set_to_none=True)
        terms.loss.backward()
        hist.lr.append(opt.param_groups[0]["lr"])
        opt.step()
        hist.loss.append(check_finite(terms.loss.item(), desc, step))
        hist.nll.append(terms.nll.item())
        hist.kl.append(terms.kl.item())
        if len(hist.loss) % 50 == 0:
            bar.set_postfix(loss=f"{hist.loss[-1]:.1f}", kl=f"{hist.kl[-1]:.1f}")
    hist.seconds = time.perf_counter() - start
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
) -> BNNHistory:
    """Maximise the ELBO of ``model`` on (x, y) with Adam and a linear decay (book/05).

    The optimiser is built here, after any initialisation, over the network's parameters and
    the trainable ones of the priors (the reverse models when ``train_reverse``).
    """
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
        return negative_elbo(model, xb, yb, n, by_layer, cfg.kl_weight)

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
) -> BNNHistory:
    """Train the "det" baseline: mean cross-entropy + lambda * sum of squares of the conv
    parameters (the source nets' L2, :func:`dwp_lib.source_nets.conv_l2`), with the same
    optimiser, schedule and steps as the Bayesian CNN. ``kl`` in the history holds the L2 sum."""
    device = torch.device(device) if device is not None else default_device()
    net.to(device)

    def loss_fn(xb, yb):
        nll = F.cross_entropy(net(xb), yb)
        l2 = conv_l2(net)
        return ElboTerms(loss=nll + cfg.det_weight_decay * l2, nll=nll, kl=l2)

    return _fit(net, list(net.parameters()), loss_fn, x, y, cfg, seed, device, "det CNN")
