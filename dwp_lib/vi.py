"""Variational inference: the pieces of chapters 1 and 2, reused by every later chapter.

Notation follows the talk and ``book/01_variational_inference.md``: the variational posterior is
``q_theta(w)``, the prior ``p(w)``, the data term ``E_q log p(D|w)``, and the bound

    VLB(theta) = E_q log p(D|w) - KL(q_theta(w) || p(w)) <= log p(D)      (book/01, eq-vlb)

What lives here, in the order the book uses it:

- Gaussian densities and KLs in closed form: :func:`log_normal`, :func:`kl_normal_standard`,
  :func:`kl_normal_normal` (elementwise mean-field), :func:`kl_gaussian` (full covariance).
- Variational families: :class:`MeanFieldGaussian` (``mu``, ``logvar`` = log sigma^2) and
  :class:`FullRankGaussian` (``mu`` and a Cholesky factor), both ``nn.Module`` with ``rsample``,
  ``log_prob``, ``entropy`` and ``kl_to_normal``.
- :func:`elbo`: the mini-batch VLB estimate with the N / B scaling (book/02, eq-minibatch-vlb).
- Gradient estimators of d/dtheta E_q f(w): :func:`score_function_gradients` and
  :func:`reparam_gradients` (book/02, eq-score-function and book/02, eq-reparam-grad), and
  :func:`gradient_variance_by_samples`, which measures their variance against the sample count.
- A model with an exact posterior and evidence: :class:`BayesianLinearRegression`, and
  :func:`mean_field_optimum` (the closed-form best mean-field q for a Gaussian posterior).
- :func:`fit_vlb`: fit any q by stochastic maximisation of the VLB (reparametrised gradients).
- The local reparametrisation trick for a linear layer: :func:`linear_output_moments`,
  :func:`linear_local_reparam`, :func:`linear_shared_weights`; the layer that uses them,
  :class:`BayesianLinear`; and :func:`minibatch_gradient_variance`, which measures the gain.
- Mini-batch (doubly stochastic) VI on a classifier: :class:`BayesianMLP`,
  :class:`MinibatchVIConfig`, :func:`train_minibatch_vi`, :func:`predictive_accuracy`.

Conventions: weight matrices of linear layers are stored as ``(in_features, out_features)`` so
that the math ``x @ W`` reads as written. Functions that sample take an optional
``torch.Generator`` so that tests and chapters are reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dwp_lib.progress import progress

LOG_2PI = math.log(2.0 * math.pi)

__all__ = [
    "log_normal",
    "kl_normal_standard",
    "kl_normal_normal",
    "kl_gaussian",
    "MeanFieldGaussian",
    "FullRankGaussian",
    "elbo",
    "GradientSamples",
    "score_function_gradients",
    "reparam_gradients",
    "gradient_variance_by_samples",
    "GradientStudyConfig",
    "BayesianLinearRegression",
    "make_regression_data",
    "mean_field_optimum",
    "VIFitConfig",
    "FitHistory",
    "fit_vlb",
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


# --- Gaussian densities and KL divergences ------------------------------------------------------


def _reduce(t: Tensor, reduction: str) -> Tensor:
    if reduction == "sum":
        return t.sum()
    if reduction == "none":
        return t
    raise ValueError(f"reduction must be 'sum' or 'none', got {reduction!r}")


def log_normal(x: Tensor, mu: Tensor | float, logvar: Tensor | float) -> Tensor:
    """Elementwise log N(x | mu, exp(logvar)); broadcasts like ``x - mu``."""
    logvar = torch.as_tensor(logvar, dtype=x.dtype, device=x.device)
    return -0.5 * (LOG_2PI + logvar + (x - mu) ** 2 / logvar.exp())


def kl_normal_standard(mu: Tensor, logvar: Tensor, reduction: str = "sum") -> Tensor:
    """KL( N(mu, sigma^2) || N(0, 1) ) = 0.5 (sigma^2 + mu^2 - 1 - log sigma^2), per weight.

    ``mu`` and ``logvar`` (= log sigma^2) have the same shape. ``reduction="sum"`` (default) gives
    the KL of the whole mean-field q (a scalar); ``"none"`` keeps one term per weight.
    This is the second formula of (book/01, eq-kl-normal).
    """
    return _reduce(0.5 * (logvar.exp() + mu**2 - 1.0 - logvar), reduction)


def kl_normal_normal(
    mu_q: Tensor,
    logvar_q: Tensor,
    mu_p: Tensor | float = 0.0,
    logvar_p: Tensor | float = 0.0,
    reduction: str = "sum",
) -> Tensor:
    """KL( N(mu_q, exp(logvar_q)) || N(mu_p, exp(logvar_p)) ), elementwise, then reduced.

    0.5 * ( logvar_p - logvar_q + (exp(logvar_q) + (mu_q - mu_p)^2) / exp(logvar_p) - 1 ),
    which with mu_p = 0 is the first formula of (book/01, eq-kl-normal). The prior's arguments
    broadcast (a float gives the same prior to every weight).
    """
    mu_p = torch.as_tensor(mu_p, dtype=mu_q.dtype, device=mu_q.device)
    logvar_p = torch.as_tensor(logvar_p, dtype=mu_q.dtype, device=mu_q.device)
    kl = 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p) ** 2) / logvar_p.exp() - 1.0)
    return _reduce(kl, reduction)


def kl_gaussian(mu_q: Tensor, cov_q: Tensor, mu_p: Tensor, cov_p: Tensor) -> Tensor:
    """KL( N(mu_q, cov_q) || N(mu_p, cov_p) ) for full covariances of shape (D, D).

    0.5 * ( tr(cov_p^-1 cov_q) + (mu_p - mu_q)^T cov_p^-1 (mu_p - mu_q) - D
            + log det cov_p - log det cov_q )                        (book/01, eq-kl-gaussian).
    With the exact posterior as the second Gaussian it is KL(q || p(w|D)) (book/01, eq-kl-post),
    which chapter 1 uses as the gap log p(D) - VLB = KL(q || p(w|D)) (book/01, eq-gap).
    """
    d = mu_q.shape[-1]
    l_p = torch.linalg.cholesky(cov_p)
    l_q = torch.linalg.cholesky(cov_q)
    # cov_p^-1 cov_q = (L_p^-1 L_q)(L_p^-1 L_q)^T, so its trace is a squared Frobenius norm.
    m = torch.linalg.solve_triangular(l_p, l_q, upper=False)
    diff = torch.linalg.solve_triangular(l_p, (mu_p - mu_q).unsqueeze(-1), upper=False)
    logdet_p = 2.0 * l_p.diagonal().log().sum()
    logdet_q = 2.0 * l_q.diagonal().log().sum()
    return 0.5 * ((m**2).sum() + (diff**2).sum() - d + logdet_p - logdet_q)


# --- variational families --------------------------------------------------------------------------


class MeanFieldGaussian(nn.Module):
    """q_theta(w) = prod_i N(w_i | mu_i, sigma_i^2), theta = (mu, log sigma^2).

    The mean-field family of (book/01, eq-mean-field). The parameters ``mu`` and ``logvar`` have
    the shape of the weight tensor (any shape); the whole tensor is one event, so ``log_prob``
    sums over it. Storing log sigma^2 keeps sigma positive without constraints and matches the
    paper (which initialises log sigma^2 to -10).

    >>> q = MeanFieldGaussian(torch.zeros(3), torch.zeros(3))
    >>> q.rsample((5,)).shape
    torch.Size([5, 3])
    """

    def __init__(self, mu: Tensor, logvar: Tensor | float = 0.0, requires_grad: bool = True):
        super().__init__()
        mu = torch.as_tensor(mu)
        if not mu.is_floating_point():
            raise TypeError(f"mu must be a floating-point tensor, got dtype {mu.dtype}")
        logvar = torch.as_tensor(logvar, dtype=mu.dtype, device=mu.device)
        if logvar.shape != mu.shape:
            logvar = logvar.expand_as(mu)
        self.mu = nn.Parameter(mu.detach().clone(), requires_grad=requires_grad)
        self.logvar = nn.Parameter(logvar.detach().clone(), requires_grad=requires_grad)

    @classmethod
    def from_shape(
        cls,
        shape: Sequence[int],
        mu_std: float = 0.1,
        logvar: float = -10.0,
        generator: torch.Generator | None = None,
    ) -> MeanFieldGaussian:
        """A q with ``mu ~ N(0, mu_std^2)`` and every ``log sigma^2 = logvar``."""
        mu = mu_std * torch.randn(tuple(shape), generator=generator)
        return cls(mu, logvar)

    @property
    def shape(self) -> torch.Size:
        return self.mu.shape

    @property
    def var(self) -> Tensor:
        return self.logvar.exp()

    @property
    def sigma(self) -> Tensor:
        return (0.5 * self.logvar).exp()

    def rsample(
        self, sample_shape: Sequence[int] = (), generator: torch.Generator | None = None
    ) -> Tensor:
        """xi = mu + sigma * eps, eps ~ N(0, I): a differentiable sample of shape (*sample_shape, *shape).

        This is the reparametrisation trick (book/02, eq-reparam).
        """
        eps = torch.randn(
            (*sample_shape, *self.shape),
            generator=generator,
            dtype=self.mu.dtype,
            device=self.mu.device,
        )
        return self.mu + self.sigma * eps

    def sample(
        self, sample_shape: Sequence[int] = (), generator: torch.Generator | None = None
    ) -> Tensor:
        """Like :meth:`rsample`, without a gradient path to the parameters."""
        with torch.no_grad():
            return self.rsample(sample_shape, generator)

    def log_prob(self, w: Tensor) -> Tensor:
        """log q_theta(w) for ``w`` of shape (*batch, *shape); returns shape (*batch)."""
        n = len(self.shape)
        if tuple(w.shape[w.dim() - n :]) != tuple(self.shape):
            raise ValueError(
                f"w has shape {tuple(w.shape)}; its last dims must be q's shape {tuple(self.shape)}"
            )
        lp = log_normal(w, self.mu, self.logvar)
        return lp.sum(dim=tuple(range(w.dim() - n, w.dim()))) if n else lp

    def entropy(self) -> Tensor:
        """H[q] = sum_i 0.5 (1 + log 2 pi + log sigma_i^2), a scalar."""
        return 0.5 * (1.0 + LOG_2PI + self.logvar).sum()

    def kl_to_normal(self, prior_mu: Tensor | float = 0.0, prior_logvar: Tensor | float = 0.0):
        """KL(q || N(prior_mu, exp(prior_logvar))) in closed form (a scalar)."""
        return kl_normal_normal(self.mu, self.logvar, prior_mu, prior_logvar)

    def covariance(self) -> Tensor:
        """The (diagonal) covariance matrix, for a vector-shaped q only."""
        if self.mu.dim() != 1:
            raise ValueError("covariance() needs a vector-shaped q (one dimension)")
        return torch.diag(self.var)

    def to_distribution(self) -> torch.distributions.Distribution:
        """The same q as a ``torch.distributions`` object (used by the tests to cross-check)."""
        base = torch.distributions.Normal(self.mu, self.sigma)
        return torch.distributions.Independent(base, self.mu.dim())


class FullRankGaussian(nn.Module):
    """q_theta(w) = N(w | mu, L L^T) over vectors w in R^D, with L lower-triangular.

    theta = (mu, the strictly lower part of L, log of L's diagonal). It can represent correlated
    posteriors that a :class:`MeanFieldGaussian` cannot; chapter 1 compares the two.
    """

    def __init__(self, mu: Tensor, scale_tril: Tensor | None = None, requires_grad: bool = True):
        super().__init__()
        mu = torch.as_tensor(mu)
        if mu.dim() != 1 or not mu.is_floating_point():
            raise ValueError(f"mu must be a 1-D floating-point tensor, got shape {tuple(mu.shape)}")
        d = mu.shape[0]
        if scale_tril is None:
            scale_tril = torch.eye(d, dtype=mu.dtype)
        if scale_tril.shape != (d, d) or (scale_tril.diagonal() <= 0).any():
            raise ValueError("scale_tril must be (D, D) lower-triangular with a positive diagonal")
        self.mu = nn.Parameter(mu.detach().clone(), requires_grad=requires_grad)
        self.tril = nn.Parameter(
            torch.tril(scale_tril.detach(), -1).clone(), requires_grad=requires_grad
        )
        self.log_diag = nn.Parameter(
            scale_tril.detach().diagonal().log().clone(), requires_grad=requires_grad
        )

    @property
    def scale_tril(self) -> Tensor:
        return torch.tril(self.tril, -1) + torch.diag(self.log_diag.exp())

    def covariance(self) -> Tensor:
        lower = self.scale_tril
        return lower @ lower.T

    def rsample(
        self, sample_shape: Sequence[int] = (), generator: torch.Generator | None = None
    ) -> Tensor:
        """w = mu + L eps, eps ~ N(0, I); shape (*sample_shape, D)."""
        eps = torch.randn(
            (*sample_shape, self.mu.shape[0]),
            generator=generator,
            dtype=self.mu.dtype,
            device=self.mu.device,
        )
        return self.mu + eps @ self.scale_tril.T

    def sample(
        self, sample_shape: Sequence[int] = (), generator: torch.Generator | None = None
    ) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape, generator)

    def log_prob(self, w: Tensor) -> Tensor:
        """log q(w) for ``w`` of shape (*batch, D); returns (*batch)."""
        d = self.mu.shape[0]
        lower = self.scale_tril
        z = torch.linalg.solve_triangular(lower, (w - self.mu).reshape(-1, d).T, upper=False).T
        lp = -0.5 * (z**2).sum(-1) - self.log_diag.sum() - 0.5 * d * LOG_2PI
        return lp.reshape(w.shape[:-1])

    def entropy(self) -> Tensor:
        d = self.mu.shape[0]
        return 0.5 * d * (1.0 + LOG_2PI) + self.log_diag.sum()

    def kl_to_normal(self, prior_mu: float = 0.0, prior_logvar: float = 0.0) -> Tensor:
        """KL(q || N(prior_mu, exp(prior_logvar) I)) in closed form."""
        # kl_gaussian specialised to an isotropic prior s^2 I: no Cholesky needed, since
        # tr(L L^T) = ||L||_F^2 and log det(L L^T) = 2 sum log diag L.
        d = self.mu.shape[0]
        prior_var = math.exp(prior_logvar)
        trace = (self.scale_tril**2).sum() / prior_var
        maha = ((self.mu - prior_mu) ** 2).sum() / prior_var
        return 0.5 * (trace + maha - d + d * prior_logvar - 2.0 * self.log_diag.sum())


# --- the bound -------------------------------------------------------------------------------------


def elbo(log_lik: Tensor, kl: Tensor, n_data: int) -> Tensor:
    """Mini-batch estimate of the VLB (book/02, eq-minibatch-vlb):

        VLB ~= (N / B) * sum_{i in batch} log p(y_i | x_i, w) - KL(q || p),   w ~ q.

    ``log_lik``: per-example log-likelihoods, shape (B,) for one weight sample or (S, B) for S
    samples (averaged). ``kl``: the KL term (a scalar, closed form or an estimate). ``n_data``: the
    size N of the whole training set. With B = N this is the plain one-sample VLB estimate.
    """
    if log_lik.dim() not in (1, 2):
        raise ValueError(
            f"log_lik must hold one log-likelihood per example, shape (B,) or (S, B); "
            f"got shape {tuple(log_lik.shape)}. Pass per-example values, not their sum."
        )
    batch = log_lik.shape[-1]
    if batch == 0 or n_data < batch:
        raise ValueError(f"n_data ({n_data}) must be >= the batch size ({batch}) and positive")
    data_term = (n_data / batch) * log_lik.sum(-1)
    return data_term.mean() - kl


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
class GradientStudyConfig:
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


# --- a model with an exact posterior: Bayesian linear regression ---------------------------------


@dataclass(frozen=True)
class BayesianLinearRegression:
    """y = X w + noise, noise ~ N(0, noise_var), prior p(w) = N(0, prior_var I) (book/01, eq-blr).

    Everything is Gaussian, so Bayes' rule p(w|D) = p(D|w) p(w) / p(D) (book/01, eq-bayes) can be
    solved exactly: :meth:`posterior` and :meth:`log_evidence` (book/01, eq-blr-posterior and
    book/01, eq-blr-evidence), and the VLB of a Gaussian q has a closed form too. ``X`` has
    shape (N, D), ``y`` shape (N,). Use float64 for exact comparisons.
    """

    prior_var: float = 1.0
    noise_var: float = 0.25

    def __post_init__(self):
        if self.prior_var <= 0 or self.noise_var <= 0:
            raise ValueError(
                f"prior_var and noise_var must be positive, got {self.prior_var}, {self.noise_var}"
            )

    @staticmethod
    def _check(X: Tensor, y: Tensor) -> None:
        if X.dim() != 2 or y.shape != (X.shape[0],):
            raise ValueError(
                f"X must be (N, D) and y (N,); got X {tuple(X.shape)} and y {tuple(y.shape)}"
            )

    def log_likelihood(self, w: Tensor, X: Tensor, y: Tensor) -> Tensor:
        """log p(D | w) = sum_n log N(y_n | x_n . w, noise_var); ``w`` (*batch, D) -> (*batch)."""
        self._check(X, y)
        pred = w @ X.T  # (*batch, N)
        return log_normal(y, pred, math.log(self.noise_var)).sum(-1)

    def log_prior(self, w: Tensor) -> Tensor:
        """log p(w) for ``w`` of shape (*batch, D)."""
        return log_normal(w, 0.0, math.log(self.prior_var)).sum(-1)

    def posterior(self, X: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """The exact posterior N(mean, cov): cov = (I / prior_var + X^T X / noise_var)^-1,
        mean = cov X^T y / noise_var (book/01, eq-blr-posterior)."""
        self._check(X, y)
        d = X.shape[1]
        precision = torch.eye(d, dtype=X.dtype, device=X.device) / self.prior_var
        precision = precision + X.T @ X / self.noise_var
        cov = torch.linalg.inv(precision)
        cov = 0.5 * (cov + cov.T)
        mean = cov @ (X.T @ y) / self.noise_var
        return mean, cov

    def log_evidence(self, X: Tensor, y: Tensor) -> Tensor:
        """log p(D) = log ∫ p(D|w) p(w) dw (book/01, eq-evidence), the marginal likelihood,
        in closed form: log N(y | 0, noise_var I + prior_var X X^T) (book/01, eq-blr-evidence)."""
        self._check(X, y)
        n = X.shape[0]
        cov = self.noise_var * torch.eye(n, dtype=X.dtype, device=X.device)
        cov = cov + self.prior_var * X @ X.T
        return torch.distributions.MultivariateNormal(torch.zeros_like(y), cov).log_prob(y)

    def expected_log_likelihood(self, mean: Tensor, cov: Tensor, X: Tensor, y: Tensor) -> Tensor:
        """E_{N(w|mean,cov)} log p(D|w) in closed form:
        -N/2 log(2 pi noise_var) - ( ||y - X mean||^2 + tr(X cov X^T) ) / (2 noise_var)
        (book/01, eq-blr-ell)."""
        self._check(X, y)
        n = X.shape[0]
        resid = y - X @ mean
        spread = ((X @ cov) * X).sum()
        return (
            -0.5 * n * (LOG_2PI + math.log(self.noise_var))
            - 0.5 * (resid @ resid + spread) / self.noise_var
        )

    def vlb(self, mean: Tensor, cov: Tensor, X: Tensor, y: Tensor) -> Tensor:
        """The VLB of q = N(mean, cov) in closed form: E_q log p(D|w) - KL(q || p(w)) (book/01,
        eq-vlb): :meth:`expected_log_likelihood` minus :func:`kl_gaussian` to the prior."""
        d = mean.shape[0]
        prior_cov = self.prior_var * torch.eye(d, dtype=mean.dtype, device=mean.device)
        kl = kl_gaussian(mean, cov, torch.zeros_like(mean), prior_cov)
        return self.expected_log_likelihood(mean, cov, X, y) - kl


def make_regression_data(
    n: int,
    weights: Sequence[float] = (0.5, -1.0),
    noise_std: float = 0.5,
    x_range: tuple[float, float] = (0.0, 2.0),
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> tuple[Tensor, Tensor, Tensor]:
    """A toy data set for chapter 1: x ~ U(x_range), features (1, x), y = w0 + w1 x + noise.

    Returns ``(X, y, x)``: the design matrix (n, 2), targets (n,), inputs (n,). Inputs away from
    zero make the intercept and the slope strongly correlated in the posterior (on purpose).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    gen = torch.Generator().manual_seed(seed)
    lo, hi = x_range
    x = lo + (hi - lo) * torch.rand(n, generator=gen, dtype=dtype)
    X = torch.stack([torch.ones_like(x), x], dim=1)
    w = torch.tensor(weights, dtype=dtype)
    y = X @ w + noise_std * torch.randn(n, generator=gen, dtype=dtype)
    return X, y, x


def mean_field_optimum(mean: Tensor, cov: Tensor) -> tuple[Tensor, Tensor]:
    """The mean-field Gaussian closest to N(mean, cov) in KL(q || p): same mean, and variances
    1 / Lambda_ii, where Lambda = cov^-1 is the precision (book/01, eq-mf-optimum). With the
    exact posterior as N(mean, cov), this q minimises KL(q || p(w|D)) (book/01, eq-kl-post) over
    the mean-field family.

    Returns ``(mu, var)``. Since 1 / Lambda_ii <= cov_ii, mean-field q under-estimates every
    marginal variance unless the posterior is already uncorrelated.
    """
    precision = torch.linalg.inv(cov)
    return mean.clone(), 1.0 / precision.diagonal()


# --- fitting q by maximising the VLB -------------------------------------------------------------


@dataclass
class VIFitConfig:
    """Stochastic maximisation of the VLB with reparametrised gradients and Adam."""

    steps: int = 2000
    lr: float = 0.1
    final_lr_fraction: float = 0.02  # linear decay to lr * this (not to zero)
    n_samples: int = 16  # weight samples per step for the data term
    seed: int = 0

    @classmethod
    def tiny(cls) -> VIFitConfig:
        return cls(steps=600, n_samples=16)

    @classmethod
    def book(cls) -> VIFitConfig:
        return cls(steps=2000, n_samples=16)

    @classmethod
    def paper(cls) -> VIFitConfig:
        return cls(steps=10000, n_samples=32)


@dataclass
class FitHistory:
    """The per-step Monte-Carlo VLB estimates of :func:`fit_vlb`."""

    vlb: list[float] = field(default_factory=list)


def fit_vlb(
    q: MeanFieldGaussian | FullRankGaussian,
    log_lik: Callable[[Tensor], Tensor],
    cfg: VIFitConfig,
    prior_logvar: float = 0.0,
) -> FitHistory:
    """Fit q (in place) by maximising VLB = E_q log p(D|w) - KL(q || N(0, exp(prior_logvar) I)).

    The data term is estimated with ``cfg.n_samples`` reparametrised samples (``log_lik`` maps
    weights (S, *q.shape) to log p(D|w) of shape (S,)); the KL is exact. Returns the history of the
    VLB estimates. This is (book/01, eq-vlb), maximised by gradient ascent as in (book/02,
    eq-vlb-2).
    """
    if cfg.steps < 1 or cfg.n_samples < 1:
        raise ValueError("cfg.steps and cfg.n_samples must be >= 1")
    gen = torch.Generator(device=q.mu.device).manual_seed(cfg.seed)
    opt = torch.optim.Adam(q.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LinearLR(
        opt, start_factor=1.0, end_factor=cfg.final_lr_fraction, total_iters=cfg.steps
    )
    history = FitHistory()
    for _ in progress(range(cfg.steps), desc="fit q"):
        w = q.rsample((cfg.n_samples,), generator=gen)
        values = log_lik(w)
        if values.shape != (cfg.n_samples,):
            raise ValueError(
                f"log_lik must return shape ({cfg.n_samples},), got {tuple(values.shape)}"
            )
        loss = -(values.mean() - q.kl_to_normal(0.0, prior_logvar))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        history.vlb.append(-loss.item())
    return history


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
    eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
    # The small floor keeps sqrt differentiable when an input row is all zeros.
    return mean + (var + 1e-16).sqrt() * eps


def linear_shared_weights(
    x: Tensor,
    mu: Tensor,
    logvar: Tensor,
    bias: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The naive estimator: one W = mu + sigma * eps for the whole mini-batch, then x @ W."""
    linear_output_moments(x[:1], mu, logvar)  # shape checks
    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
    out = x @ (mu + (0.5 * logvar).exp() * eps)
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
class MinibatchVIConfig:
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
    opt = torch.optim.Adam(
        [{"params": others, "lr": cfg.lr}, {"params": logvars, "lr": cfg.lr_logvar}]
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    history = VIHistory()
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    bar = progress(total=cfg.epochs * steps_per_epoch, desc="mini-batch VI")
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=gen).to(device)
        for start in range(0, n, cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            log_lik = -F.cross_entropy(model(x[idx]), y[idx], reduction="none")
            kl = model.kl()
            bound = elbo(log_lik, kl, n)
            opt.zero_grad(set_to_none=True)
            (-bound).backward()
            opt.step()
            history.elbo.append(bound.item())
            history.kl.append(kl.item())
            history.data_term.append(bound.item() + kl.item())
            bar.update()
    bar.close()
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
