"""dwp_lib.gaussian: the one diagonal Gaussian, against torch.distributions and Monte Carlo."""

from __future__ import annotations

import math

import torch
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from dwp_lib import gaussian

D64 = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_log_prob_matches_torch_and_takes_float_parameters():
    x = torch.randn(7, 3, generator=gen(1))
    mu, logvar = torch.randn(3, generator=gen(2)), torch.randn(3, generator=gen(3))
    ref = Normal(mu, (0.5 * logvar).exp()).log_prob(x)
    torch.testing.assert_close(gaussian.log_prob(x, mu, logvar), ref)
    ref = Normal(0.0, math.exp(0.5 * 0.3)).log_prob(x)
    torch.testing.assert_close(gaussian.log_prob(x, 0.0, 0.3), ref)
    z = torch.randn(4, 6, generator=gen(4))
    torch.testing.assert_close(gaussian.standard_log_prob(z), Normal(0.0, 1.0).log_prob(z).sum(-1))


def test_entropy_and_kl_to_standard_match_torch_and_vanish_at_the_prior():
    mu, logvar = torch.randn(4, 5, generator=gen(1)), torch.randn(4, 5, generator=gen(2))
    q = Normal(mu, (0.5 * logvar).exp())
    torch.testing.assert_close(gaussian.entropy(logvar), q.entropy())
    torch.testing.assert_close(
        gaussian.kl_to_standard(mu, logvar), kl_divergence(q, Normal(0.0, 1.0))
    )
    assert gaussian.kl_to_standard(torch.zeros(3), torch.zeros(3)).sum().item() == 0.0


def test_kl_matches_torch_and_monte_carlo():
    mu_q, lv_q = torch.tensor([0.3, -1.0], dtype=D64), torch.tensor([-1.0, 0.5], dtype=D64)
    mu_p, lv_p = torch.tensor([1.0, 0.0], dtype=D64), torch.tensor([0.2, -0.3], dtype=D64)
    q, p = Normal(mu_q, (0.5 * lv_q).exp()), Normal(mu_p, (0.5 * lv_p).exp())
    exact = gaussian.kl(mu_q, lv_q, mu_p, lv_p)
    torch.testing.assert_close(exact, kl_divergence(q, p))
    w = q.sample((200_000,))
    mc = (q.log_prob(w) - p.log_prob(w)).sum(-1)
    # 5 standard errors: a wrong formula (e.g. a missing 1/2) would be far outside.
    assert abs(mc.mean() - exact.sum()) < 5 * mc.std() / math.sqrt(len(mc))
    # a float prior broadcasts and equals kl_to_standard at N(0, 1)
    torch.testing.assert_close(
        gaussian.kl(mu_q, lv_q, 0.0, 0.0), gaussian.kl_to_standard(mu_q, lv_q)
    )


def test_kl_full_matches_torch():
    g = gen(4)
    a, b = torch.randn(3, 3, generator=g, dtype=D64), torch.randn(3, 3, generator=g, dtype=D64)
    cov_q, cov_p = a @ a.T + 0.1 * torch.eye(3, dtype=D64), b @ b.T + 0.1 * torch.eye(3, dtype=D64)
    mu_q, mu_p = torch.randn(3, generator=g, dtype=D64), torch.randn(3, generator=g, dtype=D64)
    ref = kl_divergence(MultivariateNormal(mu_q, cov_q), MultivariateNormal(mu_p, cov_p))
    torch.testing.assert_close(gaussian.kl_full(mu_q, cov_q, mu_p, cov_p), ref)
    assert abs(gaussian.kl_full(mu_q, cov_q, mu_q, cov_q).item()) < 1e-10


def test_rsample_has_the_moments_a_gradient_path_and_a_reproducible_stream():
    mu = torch.tensor([1.0, -2.0], dtype=D64, requires_grad=True)
    logvar = torch.tensor([0.0, math.log(4.0)], dtype=D64, requires_grad=True)
    w = gaussian.rsample(mu, logvar, 100_000, gen(0))
    assert w.shape == (100_000, 2)
    torch.testing.assert_close(w.mean(0), mu.detach(), atol=0.03, rtol=0)
    torch.testing.assert_close(w.std(0), torch.tensor([1.0, 2.0], dtype=D64), atol=0.03, rtol=0)
    w.sum().backward()
    assert mu.grad.tolist() == [100_000.0, 100_000.0] and logvar.grad.abs().sum() > 0
    again = gaussian.rsample(mu, logvar, (100_000,), gen(0))
    assert torch.equal(w, again)
    assert gaussian.rsample(mu, logvar).shape == (2,)


def test_sample_from_moments_is_the_mean_plus_scaled_noise():
    mean, eps = torch.tensor([1.0, 2.0]), torch.tensor([0.5, 3.0])
    var = torch.tensor([4.0, 0.0], requires_grad=True)
    out = gaussian.sample_from_moments(mean, var, eps)
    assert out.tolist() == [2.0, 2.0]
    out.sum().backward()  # finite where a variance is exactly 0
    assert torch.isfinite(var.grad).all() and var.grad[0].item() == 0.125
