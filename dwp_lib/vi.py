"""Variational inference (chapter 1): variational families, the bound
VLB = E_q log p(D|w) - KL(q(w) || p(w)) <= log p(D) (book/01, eq-vlb) and an exact model.
Linear weights are ``(in_features, out_features)``, so that ``x @ W`` reads as written."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from dwp_lib import gaussian
from dwp_lib.config import Presets
from dwp_lib.gaussian import LOG_2PI, LOG_2PI_E
from dwp_lib.train import fit


class MeanFieldGaussian(nn.Module):
    """q_theta(w) = prod_i N(w_i | mu_i, sigma_i^2), theta = (mu, log sigma^2) (book/01,
    eq-mean-field). ``mu`` and ``logvar`` have the weight's shape, one event: ``log_prob`` sums."""

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
        return cls(mu_std * torch.randn(tuple(shape), generator=generator), logvar)

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
        """mu + sigma * eps, eps ~ N(0, I), ``(*sample_shape, *shape)`` (book/02, eq-reparam)."""
        return gaussian.rsample(self.mu, self.logvar, tuple(sample_shape), generator)

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
        lp = gaussian.log_prob(w, self.mu, self.logvar)
        return lp.sum(dim=tuple(range(w.dim() - n, w.dim()))) if n else lp

    def entropy(self) -> Tensor:
        """H[q] = sum_i 0.5 (1 + log 2 pi + log sigma_i^2), a scalar."""
        return gaussian.entropy(self.logvar).sum()

    def kl_to_normal(self, prior_mu: Tensor | float = 0.0, prior_logvar: Tensor | float = 0.0):
        """KL(q || N(prior_mu, exp(prior_logvar))) in closed form (a scalar)."""
        return gaussian.kl(self.mu, self.logvar, prior_mu, prior_logvar).sum()

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
    """q_theta(w) = N(w | mu, L L^T) over w in R^D, L lower-triangular: theta = (mu, the strictly
    lower part of L, log of L's diagonal). Unlike mean-field, it can represent correlations."""

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
        scale_tril = scale_tril.detach()
        self.mu = nn.Parameter(mu.detach().clone(), requires_grad=requires_grad)
        self.tril = nn.Parameter(torch.tril(scale_tril, -1).clone(), requires_grad=requires_grad)
        self.log_diag = nn.Parameter(
            scale_tril.diagonal().log().clone(), requires_grad=requires_grad
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
        eps = gaussian.randn((*sample_shape, self.mu.shape[0]), self.mu, generator)
        return self.mu + eps @ self.scale_tril.T

    sample = MeanFieldGaussian.sample

    def log_prob(self, w: Tensor) -> Tensor:
        """log q(w) for ``w`` of shape (*batch, D); returns (*batch)."""
        d = self.mu.shape[0]
        lower = self.scale_tril
        z = torch.linalg.solve_triangular(lower, (w - self.mu).reshape(-1, d).T, upper=False).T
        lp = -0.5 * (z**2).sum(-1) - self.log_diag.sum() - 0.5 * d * LOG_2PI
        return lp.reshape(w.shape[:-1])

    def entropy(self) -> Tensor:
        return 0.5 * self.mu.shape[0] * LOG_2PI_E + self.log_diag.sum()

    def kl_to_normal(self, prior_mu: float = 0.0, prior_logvar: float = 0.0) -> Tensor:
        """KL(q || N(prior_mu, exp(prior_logvar) I)) in closed form."""
        # gaussian.kl_full specialised to an isotropic prior s^2 I: no Cholesky needed, since
        # tr(L L^T) = ||L||_F^2 and log det(L L^T) = 2 sum log diag L.
        d = self.mu.shape[0]
        prior_var = math.exp(prior_logvar)
        trace = (self.scale_tril**2).sum() / prior_var
        maha = ((self.mu - prior_mu) ** 2).sum() / prior_var
        return 0.5 * (trace + maha - d + d * prior_logvar - 2.0 * self.log_diag.sum())


def elbo(log_lik: Tensor, kl: Tensor, n_data: int) -> Tensor:
    """VLB ~= (N / B) * sum_{i in batch} log p(y_i | x_i, w) - KL(q || p) (book/02,
    eq-minibatch-vlb) from per-example ``log_lik`` (B,) or (S, B) (S weight samples, averaged)."""
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


@dataclass(frozen=True)
class BayesianLinearRegression:
    """y = X w + noise, noise ~ N(0, noise_var), p(w) = N(0, prior_var I) (book/01, eq-blr): Bayes'
    rule (book/01, eq-bayes) solved exactly. ``X`` (N, D), ``y`` (N,); float64 for exact checks."""

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
        return gaussian.log_prob(y, w @ X.T, math.log(self.noise_var)).sum(-1)

    def log_prior(self, w: Tensor) -> Tensor:
        """log p(w) for ``w`` of shape (*batch, D)."""
        return gaussian.log_prob(w, 0.0, math.log(self.prior_var)).sum(-1)

    def posterior(self, X: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """The exact posterior N(mean, cov): cov = (I / prior_var + X^T X / noise_var)^-1,
        mean = cov X^T y / noise_var (book/01, eq-blr-posterior)."""
        self._check(X, y)
        precision = torch.eye(X.shape[1], dtype=X.dtype, device=X.device) / self.prior_var
        precision = precision + X.T @ X / self.noise_var
        cov = torch.linalg.inv(precision)
        cov = 0.5 * (cov + cov.T)
        mean = cov @ (X.T @ y) / self.noise_var
        return mean, cov

    def log_evidence(self, X: Tensor, y: Tensor) -> Tensor:
        """log p(D) = log ∫ p(D|w) p(w) dw (book/01, eq-evidence), the marginal likelihood,
        in closed form: log N(y | 0, noise_var I + prior_var X X^T) (book/01, eq-blr-evidence)."""
        self._check(X, y)
        cov = self.noise_var * torch.eye(X.shape[0], dtype=X.dtype, device=X.device)
        cov = cov + self.prior_var * X @ X.T
        return torch.distributions.MultivariateNormal(torch.zeros_like(y), cov).log_prob(y)

    def expected_log_likelihood(self, mean: Tensor, cov: Tensor, X: Tensor, y: Tensor) -> Tensor:
        """E_{N(w|mean,cov)} log p(D|w) in closed form (book/01, eq-blr-ell)."""
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
        eq-vlb): :meth:`expected_log_likelihood` minus :func:`dwp_lib.gaussian.kl_full` to the prior."""
        prior_cov = self.prior_var * torch.eye(mean.shape[0], dtype=mean.dtype, device=mean.device)
        kl = gaussian.kl_full(mean, cov, torch.zeros_like(mean), prior_cov)
        return self.expected_log_likelihood(mean, cov, X, y) - kl


def make_regression_data(
    n: int,
    weights: Sequence[float] = (0.5, -1.0),
    noise_std: float = 0.5,
    x_range: tuple[float, float] = (0.0, 2.0),
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> tuple[Tensor, Tensor, Tensor]:
    """x ~ U(x_range), features (1, x), y = w0 + w1 x + noise; returns ``(X (n, 2), y, x)``.
    Inputs away from zero correlate the intercept and the slope in the posterior (on purpose)."""
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
    """``(mu, var)`` of the mean-field q closest to N(mean, cov) in KL(q || p) (book/01,
    eq-mf-optimum; book/01, eq-kl-post): the mean, and 1 / Lambda_ii <= cov_ii, Lambda = cov^-1."""
    precision = torch.linalg.inv(cov)
    return mean.clone(), 1.0 / precision.diagonal()


@dataclass
class VIFitConfig(Presets):
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
    """Fit q in place by gradient ascent on the VLB with prior N(0, exp(prior_logvar) I) (book/02,
    eq-vlb-2); ``log_lik`` maps samples (S, *q.shape) to log p(D|w) (S,); the KL is exact."""
    if cfg.steps < 1 or cfg.n_samples < 1:
        raise ValueError("cfg.steps and cfg.n_samples must be >= 1")
    gen = torch.Generator(device=q.mu.device).manual_seed(cfg.seed)

    def loss_at(step: int) -> Tensor:
        w = q.rsample((cfg.n_samples,), generator=gen)
        values = log_lik(w)
        if values.shape != (cfg.n_samples,):
            raise ValueError(
                f"log_lik must return shape ({cfg.n_samples},), got {tuple(values.shape)}"
            )
        return -(values.mean() - q.kl_to_normal(0.0, prior_logvar))

    def decay(t: int) -> float:  # linearly to lr * final_lr_fraction
        return 1.0 + (cfg.final_lr_fraction - 1.0) * t / cfg.steps

    log = fit(q.parameters(), loss_at, cfg.steps, cfg.lr, "fit q", schedule=decay)
    return FitHistory(vlb=[-loss for loss in log.loss])
