"""The reparametrisation trick (chapter 2); mini-batch VI on it is :mod:`dwp_lib.minibatch_vi`.

- Gradient estimators of d/dtheta E_q f(w): :func:`score_function_gradients` and
  :func:`reparam_gradients` (book/02, eq-score-function and book/02, eq-reparam-grad), and
  :func:`gradient_variance_by_samples`, which measures their variance against the sample count.
- The local reparametrisation trick for a linear layer (book/02, eq-local-reparam):
  :func:`linear_output_moments`, :func:`linear_local_reparam`, :func:`linear_shared_weights`.

The variational families and the bound are chapter 1's (:mod:`dwp_lib.vi`). Weight matrices
of linear layers are stored as ``(in_features, out_features)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from dwp_lib import gaussian
from dwp_lib.config import Presets
from dwp_lib.vi import MeanFieldGaussian

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
