"""The diagonal Gaussian N(mean, diag exp(logvar)), elementwise (callers sum over one event)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOG_2PI = math.log(2 * math.pi)
LOG_2PI_E = math.log(2 * math.pi * math.e)


def _as_tensor(value: Tensor | float, like: Tensor) -> Tensor:
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


def log_prob(x: Tensor, mean: Tensor | float, logvar: Tensor | float) -> Tensor:
    """Elementwise log N(x | mean, exp(logvar)); broadcasts like ``x - mean`` (floats allowed)."""
    logvar = _as_tensor(logvar, x)
    return -0.5 * (LOG_2PI + logvar + (x - mean) ** 2 * torch.exp(-logvar))


def standard_log_prob(z: Tensor) -> Tensor:
    """log N(z | 0, I), summed over the last dimension."""
    return -0.5 * (LOG_2PI + z**2).sum(-1)


def randn(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Standard normal noise of ``shape`` on ``like``'s device and dtype, drawn where
    ``generator`` lives (seeded runs give the same numbers on every device)."""
    if generator is None:
        return torch.randn(shape, device=like.device, dtype=like.dtype)
    eps = torch.randn(shape, generator=generator, device=generator.device, dtype=like.dtype)
    return eps.to(like.device)


def rsample(
    mean: Tensor,
    logvar: Tensor,
    num_samples: int | tuple[int, ...] | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """mean + exp(logvar / 2) * eps, eps ~ N(0, I) (book/02, eq-reparam; book/03,
    eq-vae-rsample); ``num_samples`` (an int or a shape) leads: ``(S, *mean.shape)``."""
    lead = (num_samples,) if isinstance(num_samples, int) else tuple(num_samples or ())
    return mean + torch.exp(0.5 * logvar) * randn((*lead, *mean.shape), mean, generator)


def sample_from_moments(mean: Tensor, var: Tensor, eps: Tensor | None = None) -> Tensor:
    """mean + sqrt(var) * eps, the local reparametrisation (book/02, eq-local-reparam); the
    ``1e-16`` keeps the gradient finite where a variance is 0."""
    if eps is None:
        eps = torch.randn_like(mean)
    return mean + torch.sqrt(var + 1e-16) * eps


def entropy(logvar: Tensor) -> Tensor:
    """Elementwise entropy of N(., exp(logvar)): 0.5 (log 2 pi e + logvar)."""
    return 0.5 * (LOG_2PI_E + logvar)


def kl_to_standard(mean: Tensor, logvar: Tensor) -> Tensor:
    """Elementwise KL( N(mean, exp(logvar)) || N(0, 1) ) = 0.5 (sigma^2 + mean^2 - 1 - log sigma^2)
    (book/01, eq-kl-normal, second form; book/03, eq-vae-kl)."""
    return 0.5 * (torch.exp(logvar) + mean**2 - 1.0 - logvar)


def kl(
    mean_q: Tensor, logvar_q: Tensor, mean_p: Tensor | float = 0.0, logvar_p: Tensor | float = 0.0
) -> Tensor:
    """Elementwise KL( N(mean_q, exp(logvar_q)) || N(mean_p, exp(logvar_p)) ) (book/01,
    eq-kl-normal); the prior's arguments broadcast (floats allowed)."""
    logvar_p = _as_tensor(logvar_p, mean_q)
    mean_p = _as_tensor(mean_p, mean_q)
    return 0.5 * (
        logvar_p - logvar_q + (logvar_q.exp() + (mean_q - mean_p) ** 2) / logvar_p.exp() - 1.0
    )


def kl_full(mean_q: Tensor, cov_q: Tensor, mean_p: Tensor, cov_p: Tensor) -> Tensor:
    """KL( N(mean_q, cov_q) || N(mean_p, cov_p) ) for (D, D) covariances (book/01,
    eq-kl-gaussian); with the posterior as p, the gap log p(D) - VLB (book/01, eq-gap)."""
    d = mean_q.shape[-1]
    l_q = torch.linalg.cholesky(cov_q)
    l_p = torch.linalg.cholesky(cov_p)
    # cov_p^-1 cov_q = (L_p^-1 L_q)(L_p^-1 L_q)^T, so its trace is a squared Frobenius norm.
    m = torch.linalg.solve_triangular(l_p, l_q, upper=False)
    diff = torch.linalg.solve_triangular(l_p, (mean_p - mean_q).unsqueeze(-1), upper=False)
    logdet_p = 2.0 * l_p.diagonal().log().sum()
    logdet_q = 2.0 * l_q.diagonal().log().sum()
    return 0.5 * ((m**2).sum() + (diff**2).sum() - d + logdet_p - logdet_q)
