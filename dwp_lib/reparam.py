"""The reparametrisation trick (chapter 2): estimators of d/dtheta E_q f(w) and their variance,
and the local reparametrisation of a linear layer; mini-batch VI is :mod:`dwp_lib.minibatch_vi`.
Linear weights are stored ``(in_features, out_features)``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from dwp_lib import gaussian
from dwp_lib.config import Presets
from dwp_lib.vi import MeanFieldGaussian


@dataclass
class GradientSamples:
    """S one-sample gradient estimates in q's ``mu`` and ``logvar``, each ``(S, *q.shape)``."""

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
    """Score-function estimates E_q [ f(w) grad_theta log q_theta(w) ] (book/02, eq-score-function;
    book/02, eq-gauss-score) for any ``f``: (S, *q.shape) -> (S,). ``baseline="loo"`` subtracts
    the mean of f over the other samples (book/02, eq-baseline)."""
    if baseline not in (None, "loo"):
        raise ValueError(f"baseline must be None or 'loo', got {baseline!r}")
    if baseline == "loo" and n_samples < 2:
        raise ValueError("the leave-one-out baseline needs n_samples >= 2")
    with torch.no_grad():
        eps = gaussian.randn((n_samples, *q.shape), q.mu, generator)
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
    """Pathwise estimates E_eps [ grad_theta f(mu + sigma eps) ] (book/02, eq-reparam-grad);
    ``f`` must be differentiable, row s of its output depending on row s of w only."""
    eps = gaussian.randn((n_samples, *q.shape), q.mu, generator)
    w = (q.mu + q.sigma * eps).detach().requires_grad_(True)
    with torch.enable_grad():
        values = _check_f_values(f(w), n_samples)
        (grad_w,) = torch.autograd.grad(values.sum(), w)
    return GradientSamples(mu=grad_w, logvar=grad_w * 0.5 * q.sigma.detach() * eps)


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
    """The measured variance of the S-sample estimator ``method`` over ``n_repeats`` draws, for
    each S in ``sample_counts``: ``(len(sample_counts), *q.shape)`` each."""
    if method not in _ESTIMATORS:
        raise ValueError(f"method must be one of {sorted(_ESTIMATORS)}, got {method!r}")
    if n_repeats < 2:
        raise ValueError(f"n_repeats must be >= 2, got {n_repeats}")
    out_mu, out_lv = [], []
    for s in sample_counts:
        if method == "score_loo":
            # the baseline couples the S samples of one estimate: draw the estimates one by one
            means = [_ESTIMATORS[method](q, f, s, generator).mean() for _ in range(n_repeats)]
            mu_est, lv_est = (torch.stack(parts) for parts in zip(*means, strict=True))
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
    def paper(cls) -> GradientStudyConfig:
        return cls(
            n_check=100000,
            sample_counts=(2, 8, 32, 128, 512),
            n_repeats=1000,
            batch_sizes=(10, 30, 100, 300, 1000, 3000),
            n_batch_repeats=200,
        )


def linear_output_moments(
    x: Tensor, mu: Tensor, logvar: Tensor, bias: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Mean x @ mu (+ bias) and variance x^2 @ sigma^2 of b = x W, W ~ N(mu, exp(logvar)), a sum
    of independent Gaussians (book/02, eq-local-reparam). ``x`` (B, in), ``mu`` (in, out)."""
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
    """b = x @ mu + sqrt(x^2 @ sigma^2) * eps: per example the law of x W, W ~ q, with noise
    independent across examples, which lowers the gradients' variance (Kingma et al. 2015)."""
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
    w = gaussian.rsample(mu, logvar, x.shape[0], generator)  # (B, in, out)
    out = torch.einsum("bi,bio->bo", x, w)
    return out if bias is None else out + bias


LINEAR_SAMPLERS = {
    "shared": linear_shared_weights,
    "local": linear_local_reparam,
    "per_example": linear_per_example,
}
