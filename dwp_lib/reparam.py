"""The reparametrisation trick and mini-batch VI (chapter 2).

- Gradient estimators of d/dtheta E_q f(w): :func:`score_function_gradients` and
  :func:`reparam_gradients` (book/02, eq-score-function and book/02, eq-reparam-grad), and
  :func:`gradient_variance_by_samples`, which measures their variance against the sample count.
- The local reparametrisation trick for a linear layer (book/02, eq-local-reparam):
  :func:`linear_output_moments`, :func:`linear_local_reparam`, :func:`linear_shared_weights`;
  the layer that uses them, :class:`BayesianLinear`; and :func:`minibatch_gradient_variance`,
  which measures the gain.
- Mini-batch (doubly stochastic) VI on a classifier: :class:`BayesianMLP`,
  :class:`MinibatchVIConfig`, :func:`train_minibatch_vi`, :func:`predictive_accuracy`.

The variational families and the bound are chapter 1's (:mod:`dwp_lib.vi`). Weight matrices
of linear layers are stored as ``(in_features, out_features)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dwp_lib import gaussian
from dwp_lib.config import Presets
from dwp_lib.train import fit
from dwp_lib.vi import MeanFieldGaussian, elbo

__all__ = [
    "GradientSamples",
    "score_function_gradients",
    "reparam_gradients",
    "gradient_variance_by_samples",
    "GradientStudyConfig",
    "linear_output_moments",
    "linear_local_reparam",
    "linear_shared_weights",
    "linear_per_example",
    "LINEAR_SAMPLERS",
    "minibatch_gradient_variance",
    "BayesianLinear",
    "BayesianMLP",
    "MinibatchVIConfig",
    "VIHistory",
    "train_minibatch_vi",
    "predictive_accuracy",
]


# --- gradient estimators of d/dtheta E_q f(w) --------------------------------------------------


@dataclass
class GradientSamples:
    """S single-sample gradient estimates with respect to q's ``mu`` and ``logvar``.

    ``mu`` and ``logvar`` have shape (S, *q.shape). The estimator with S samples is their mean;
    the variance of a one-sample estimator is their variance over the first dimension.
    """

    mu: Tensor
    logvar: Tensor

    def mean(self) -> tuple[Tensor, Tensor]:
        return self.mu.mean(0), self.logvar.mean(0)

    def variance(self) -> tuple[Tensor, Tensor]:
        """Per-coordinate variance of a one-sample estimate (unbiased over the S samples)."""
        return self.mu.var(0), self.logvar.var(0)

    def std_error(self) -> tuple[Tensor, Tensor]:
        """Standard error of :meth:`mean` (for z-tests of unbiasedness)."""
        s = self.mu.shape[0]
        v_mu, v_lv = self.variance()
        return (v_mu / s).sqrt(), (v_lv / s).sqrt()


def _check_f_values(values: Tensor, n_samples: int) -> Tensor:
    if values.shape != (n_samples,):
        raise ValueError(
            f"f must map weights of shape (S, *q.shape) to one value per sample, shape ({n_samples},);"
            f" got shape {tuple(values.shape)}"
        )
    return values


def score_function_gradients(
    q: MeanFieldGaussian,
    f: Callable[[Tensor], Tensor],
    n_samples: int,
    generator: torch.Generator | None = None,
    baseline: str | None = None,
) -> GradientSamples:
    """Score-function (REINFORCE) estimates of grad_theta E_q f(w) (book/02, eq-score-function):

        grad_theta E_q f(w) = E_q [ f(w) grad_theta log q_theta(w) ].

    ``f`` is a black box mapping (S, *q.shape) to (S,); it need not be differentiable. For the
    mean-field Gaussian the score has a closed form, with w = mu + sigma eps:
    d log q / d mu = eps / sigma and d log q / d log sigma^2 = (eps^2 - 1) / 2
    (book/02, eq-gauss-score).
    ``baseline="loo"`` subtracts, for each sample, the mean of f over the other samples (a control
    variate that keeps the estimator unbiased, book/02, eq-baseline); ``None`` uses f as is.
    """
    if baseline not in (None, "loo"):
        raise ValueError(f"baseline must be None or 'loo', got {baseline!r}")
    if baseline == "loo" and n_samples < 2:
        raise ValueError("the leave-one-out baseline needs n_samples >= 2")
    with torch.no_grad():
        eps = torch.randn(
            (n_samples, *q.shape), generator=generator, dtype=q.mu.dtype, device=q.mu.device
        )
        w = q.mu + q.sigma * eps
        values = _check_f_values(f(w), n_samples)
        if baseline == "loo":
            values = values - (values.sum() - values) / (n_samples - 1)
        weight = values.reshape(n_samples, *([1] * len(q.shape)))
        return GradientSamples(mu=weight * eps / q.sigma, logvar=weight * 0.5 * (eps**2 - 1.0))


def reparam_gradients(
    q: MeanFieldGaussian,
    f: Callable[[Tensor], Tensor],
    n_samples: int,
    generator: torch.Generator | None = None,
) -> GradientSamples:
    """Reparametrised (pathwise) estimates of grad_theta E_q f(w) (book/02, eq-reparam-grad):

        grad_theta E_q f(w) = E_eps [ grad_theta f(mu + sigma eps) ],  eps ~ N(0, I),

    so d/d mu = f'(w) and d/d log sigma^2 = f'(w) * sigma * eps / 2. ``f`` must be differentiable
    and act on each of the S samples independently (row s of the output depends on row s only).
    """
    eps = torch.randn(
        (n_samples, *q.shape), generator=generator, dtype=q.mu.dtype, device=q.mu.device
    )
    w = (q.mu + q.sigma * eps).detach().requires_grad_(True)
    with torch.enable_grad():
        values = _check_f_values(f(w), n_samples)
        (grad_w,) = torch.autograd.grad(values.sum(), w)
    sigma = q.sigma.detach()
    return GradientSamples(mu=grad_w, logvar=grad_w * 0.5 * sigma * eps)


_ESTIMATORS = {
    "score": lambda q, f, n, g: score_function_gradients(q, f, n, g),
    "score_loo": lambda q, f, n, g: score_function_gradients(q, f, n, g, baseline="loo"),
    "reparam": lambda q, f, n, g: reparam_gradients(q, f, n, g),
}


def gradient_variance_by_samples(
    q: MeanFieldGaussian,
    f: Callable[[Tensor], Tensor],
    method: str,
    sample_counts: Sequence[int],
    n_repeats: int,
    generator: torch.Generator | None = None,
) -> GradientSamples:
    """Measured variance of the S-sample estimator of grad_theta E_q f(w), for each S.

    ``method``: ``"score"``, ``"score_loo"`` (score function with the leave-one-out baseline) or
    ``"reparam"``. For each S in ``sample_counts`` the S-sample estimate is drawn ``n_repeats``
    times and its per-coordinate variance measured (no 1/S formula is assumed). Returns a
    :class:`GradientSamples` whose ``mu`` and ``logvar`` have shape (len(sample_counts), *q.shape).
    """
    if method not in _ESTIMATORS:
        raise ValueError(f"method must be one of {sorted(_ESTIMATORS)}, got {method!r}")
    if n_repeats < 2:
        raise ValueError(f"n_repeats must be >= 2, got {n_repeats}")
    out_mu, out_lv = [], []
    for s in sample_counts:
        if method == "score_loo":
            # the baseline couples the S samples of one estimate: draw the estimates one by one
            means = [_ESTIMATORS[method](q, f, s, generator).mean() for _ in range(n_repeats)]
            mu_est = torch.stack([m[0] for m in means])
            lv_est = torch.stack([m[1] for m in means])
        else:
            g = _ESTIMATORS[method](q, f, s * n_repeats, generator)
            mu_est = g.mu.reshape(n_repeats, s, *q.shape).mean(1)
            lv_est = g.logvar.reshape(n_repeats, s, *q.shape).mean(1)
        out_mu.append(mu_est.var(0))
        out_lv.append(lv_est.var(0))
    return GradientSamples(mu=torch.stack(out_mu), logvar=torch.stack(out_lv))


@dataclass
class GradientStudyConfig(Presets):
    """Sizes of chapter 2's measurements of gradient estimators (book/02)."""

    n_check: int = 20000  # samples for the unbiasedness check against the exact gradient
    sample_counts: tuple[int, ...] = (2, 8, 32, 128)  # S for the variance-vs-S curves
    n_repeats: int = 200  # estimates per S
    batch_sizes: tuple[int, ...] = (10, 30, 100, 300, 1000)  # local reparametrisation study
    n_batch_repeats: int = 50
    check_batch_size: int = 100  # where the costly per-example sampler is compared with local

    @classmethod
    def tiny(cls) -> GradientStudyConfig:
        return cls(
            n_check=5000,
            sample_counts=(2, 8, 32),
            n_repeats=50,
            batch_sizes=(10, 100, 300),
            n_batch_repeats=20,
        )

    @classmethod
    def book(cls) -> GradientStudyConfig:
        return cls()

    @classmethod
    def paper(cls) -> GradientStudyConfig:
        return cls(
            n_check=100000,
            sample_counts=(2, 8, 32, 128, 512),
            n_repeats=1000,
            batch_sizes=(10, 30, 100, 300, 1000, 3000),
            n_batch_repeats=200,
        )


# --- the local reparametrisation trick for a linear layer --------------------------------------


def linear_output_moments(
    x: Tensor, mu: Tensor, logvar: Tensor, bias: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Mean and variance of b = x W (+ bias) when W ~ q = N(mu, exp(logvar)) elementwise.

    ``x`` (B, in), ``mu`` and ``logvar`` (in, out). Each output b_j = sum_i x_i W_ij is a sum of
    independent Gaussians, hence Gaussian with mean x @ mu and variance x^2 @ sigma^2
    (book/02, eq-local-reparam).
    """
    if x.dim() != 2 or mu.dim() != 2 or x.shape[1] != mu.shape[0] or logvar.shape != mu.shape:
        raise ValueError(
            f"need x (B, in) and mu, logvar (in, out); got x {tuple(x.shape)}, "
            f"mu {tuple(mu.shape)}, logvar {tuple(logvar.shape)}"
        )
    mean = x @ mu
    if bias is not None:
        mean = mean + bias
    var = (x**2) @ logvar.exp()
    return mean, var


def linear_local_reparam(
    x: Tensor,
    mu: Tensor,
    logvar: Tensor,
    bias: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Sample the outputs b = x W (+ bias) directly: b = x @ mu + sqrt(x^2 @ sigma^2) * eps.

    Equivalent in distribution, for each example, to sampling W ~ q; but each example gets its own
    independent noise, which lowers the variance of mini-batch gradients, and it costs two matrix
    products instead of one sample of W per example (Kingma et al. 2015).
    """
    mean, var = linear_output_moments(x, mu, logvar, bias)
    return gaussian.sample_from_moments(mean, var, gaussian.randn(mean.shape, mean, generator))


def linear_shared_weights(
    x: Tensor,
    mu: Tensor,
    logvar: Tensor,
    bias: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The naive estimator: one W = mu + sigma * eps for the whole mini-batch, then x @ W."""
    linear_output_moments(x[:1], mu, logvar)  # shape checks
    out = x @ gaussian.rsample(mu, logvar, generator=generator)
    return out if bias is None else out + bias


def linear_per_example(
    x: Tensor,
    mu: Tensor,
    logvar: Tensor,
    bias: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """An independent W ~ q for every example, then x_b @ W_b: the same distribution as
    :func:`linear_local_reparam`, at the cost of B weight samples (for checks only)."""
    linear_output_moments(x[:1], mu, logvar)  # shape checks
    eps = torch.randn(
        (x.shape[0], *mu.shape), generator=generator, dtype=mu.dtype, device=mu.device
    )
    w = mu + (0.5 * logvar).exp() * eps  # (B, in, out)
    out = torch.einsum("bi,bio->bo", x, w)
    return out if bias is None else out + bias


LINEAR_SAMPLERS = {
    "shared": linear_shared_weights,
    "local": linear_local_reparam,
    "per_example": linear_per_example,
}


# --- a Bayesian linear layer and MLP for mini-batch VI --------------------------------------------


class BayesianLinear(nn.Module):
    """A linear layer with mean-field Gaussian weights, sampled by local reparametrisation.

    ``q`` is a :class:`MeanFieldGaussian` over W of shape (in, out); the bias is deterministic and
    has no prior (as in the paper's Bayesian CNN). The prior is N(0, exp(prior_logvar)) on every
    weight. In ``train()`` mode the forward pass samples; in ``eval()`` mode it uses the mean
    unless ``sample=True`` is passed. ``sampler`` picks how a sampled forward pass draws W:
    ``"local"`` (default, :func:`linear_local_reparam`), ``"shared"`` (one W per mini-batch,
    :func:`linear_shared_weights`) or ``"per_example"`` (one W per example; slow, for checks).
    """

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
        # Xavier-normal means, as in the paper (std = sqrt(2 / (fan_in + fan_out))).
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
    """An MLP of :class:`BayesianLinear` layers with ReLU between them (no hidden layer: softmax
    regression). Input images are flattened."""

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
    """Variance of the mini-batch gradient of the data term with respect to each layer's ``mu``.

    The data term is (N / B) sum_{i in batch} log p(y_i | x_i, W) with W ~ q (book/02, eq.
    ``minibatch-vlb``), N = ``len(x)``. ``method`` sets every layer's sampler (``"shared"``,
    ``"local"`` or ``"per_example"``) for the measurement and restores it afterwards. Each of
    ``n_repeats`` repeats draws fresh weight noise and, if ``resample_batch``, a fresh batch (else
    one fixed batch, which isolates the noise that comes from sampling W). Returns, per layer, the
    variance of one gradient estimate averaged over that layer's weights: a tensor (n_layers,).
    """
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
    def book(cls) -> MinibatchVIConfig:
        return cls(n_train=10000, epochs=5)

    @classmethod
    def paper(cls) -> MinibatchVIConfig:
        return cls(n_train=60000, epochs=20)


@dataclass
class VIHistory:
    """Per-step records of :func:`train_minibatch_vi` (each a list, one entry per step)."""

    elbo: list[float] = field(default_factory=list)
    data_term: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)


def train_minibatch_vi(
    model: BayesianMLP,
    x: Tensor,
    y: Tensor,
    cfg: MinibatchVIConfig,
    device: torch.device | str = "cpu",
) -> VIHistory:
    """Doubly stochastic VI: maximise the mini-batch VLB estimate (:func:`elbo`) with Adam.

    Two sources of noise, hence "doubly stochastic": the random mini-batch and the weight sample
    (drawn per example by the local reparametrisation trick). ``x`` (N, ...) float, ``y`` (N,) int.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y disagree on N: {x.shape[0]} vs {y.shape[0]}")
    n = x.shape[0]
    model.to(device).train()
    x, y = x.to(device), y.to(device)
    logvars = [p for name, p in model.named_parameters() if name.endswith("q.logvar")]
    others = [p for name, p in model.named_parameters() if not name.endswith("q.logvar")]
    gen = torch.Generator().manual_seed(cfg.seed)
    history = VIHistory()
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
        history.elbo.append(bound.item())
        history.kl.append(kl.item())
        history.data_term.append(bound.item() + kl.item())
        return -bound

    groups = [{"params": others, "lr": cfg.lr}, {"params": logvars, "lr": cfg.lr_logvar}]
    fit(groups, loss_at, cfg.epochs * steps_per_epoch, cfg.lr, "mini-batch VI")
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
    """Accuracy of the predictive mean (1/S) sum_s softmax(f(x; w_s)), w_s ~ q.

    ``n_samples=0`` uses the mean weights instead of sampling.
    """
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
