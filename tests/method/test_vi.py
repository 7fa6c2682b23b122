"""dwp_lib.vi and dwp_lib.reparam against closed forms, torch.distributions and seeded
Monte-Carlo estimates."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from dwp_lib import gaussian, minibatch_vi, reparam, vi
from dwp_lib.train import History

D64 = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- variational families ---------------------------------------------------------------------


def test_mean_field_gaussian_against_torch_distributions():
    q = vi.MeanFieldGaussian(
        torch.randn(2, 3, generator=gen(1)), torch.randn(2, 3, generator=gen(2))
    )
    ref = q.to_distribution()
    w = torch.randn(5, 2, 3, generator=gen(3))
    torch.testing.assert_close(q.log_prob(w), ref.log_prob(w))
    torch.testing.assert_close(q.entropy(), ref.entropy())
    torch.testing.assert_close(
        q.kl_to_normal(), kl_divergence(ref.base_dist, Normal(0.0, 1.0)).sum()
    )
    torch.testing.assert_close(q.sigma**2, q.var)
    with pytest.raises(ValueError, match="last dims"):
        q.log_prob(torch.zeros(5, 3))


def test_mean_field_rsample_moments_and_gradient_path():
    q = vi.MeanFieldGaussian(torch.tensor([1.0, -2.0]), torch.log(torch.tensor([0.25, 4.0])))
    w = q.rsample((100_000,), generator=gen(5))
    assert w.shape == (100_000, 2)
    # sample mean within 5 standard errors; sample variance within 3%
    assert ((w.mean(0) - q.mu).abs() < 5 * q.sigma / math.sqrt(len(w))).all()
    torch.testing.assert_close(w.var(0), q.var.detach(), rtol=0.03, atol=0.0)
    w.sum().backward()
    assert q.mu.grad is not None and q.logvar.grad is not None
    assert q.sample((3,)).requires_grad is False


def test_mean_field_entropy_is_monte_carlo_of_minus_log_prob():
    q = vi.MeanFieldGaussian(torch.zeros(4), torch.tensor([-1.0, 0.0, 1.0, 2.0]))
    w = q.sample((100_000,), generator=gen(6))
    mc = -q.log_prob(w)
    assert abs(mc.mean() - q.entropy()) < 5 * mc.std() / math.sqrt(len(mc))


def test_mean_field_rejects_integer_mu_and_broadcasts_logvar():
    with pytest.raises(TypeError, match="floating"):
        vi.MeanFieldGaussian(torch.zeros(3, dtype=torch.long))
    q = vi.MeanFieldGaussian.from_shape((4, 2), logvar=-10.0, generator=gen(0))
    assert q.logvar.shape == (4, 2) and (q.logvar == -10.0).all()
    with pytest.raises(ValueError, match="vector"):
        q.covariance()


def test_full_rank_gaussian_against_torch():
    lower = torch.tensor([[1.0, 0.0], [0.8, 0.5]], dtype=D64)
    q = vi.FullRankGaussian(torch.tensor([0.5, -1.0], dtype=D64), lower)
    ref = MultivariateNormal(q.mu.detach(), scale_tril=lower)
    w = torch.randn(6, 2, generator=gen(1), dtype=D64)
    torch.testing.assert_close(q.log_prob(w), ref.log_prob(w))
    torch.testing.assert_close(q.entropy(), ref.entropy())
    torch.testing.assert_close(q.covariance(), lower @ lower.T)
    prior = MultivariateNormal(torch.zeros(2, dtype=D64), 2.0 * torch.eye(2, dtype=D64))
    torch.testing.assert_close(q.kl_to_normal(0.0, math.log(2.0)), kl_divergence(ref, prior))
    s = q.rsample((200_000,), generator=gen(2))
    torch.testing.assert_close(torch.cov(s.T), lower @ lower.T, atol=0.02, rtol=0.0)
    with pytest.raises(ValueError, match="positive diagonal"):
        vi.FullRankGaussian(torch.zeros(2), -torch.eye(2))


# --- the bound ------------------------------------------------------------------------------------


def test_elbo_scaling_and_errors():
    log_lik = torch.tensor([-1.0, -2.0, -3.0, -4.0])
    kl = torch.tensor(5.0)
    # N / B * sum - KL = 100 / 4 * (-10) - 5
    assert vi.elbo(log_lik, kl, n_data=100).item() == pytest.approx(-255.0)
    # S samples are averaged
    two = torch.stack([log_lik, 2 * log_lik])
    assert vi.elbo(two, kl, n_data=4).item() == pytest.approx(-15.0 - 5.0)
    with pytest.raises(ValueError, match="per-example"):
        vi.elbo(log_lik.sum(), kl, n_data=100)
    with pytest.raises(ValueError, match="batch size"):
        vi.elbo(log_lik, kl, n_data=2)


def test_minibatch_elbo_is_unbiased_for_the_full_batch_elbo():
    g = gen(7)
    per_example = torch.randn(50, generator=g, dtype=D64)
    full = vi.elbo(per_example, torch.tensor(1.0, dtype=D64), n_data=50)
    estimates = torch.stack(
        [
            vi.elbo(per_example[torch.randperm(50, generator=g)[:5]], torch.tensor(1.0), n_data=50)
            for _ in range(20_000)
        ]
    )
    assert abs(estimates.mean() - full) < 5 * estimates.std() / math.sqrt(len(estimates))


# --- gradient estimators ------------------------------------------------------------------------


def _exact_gradient_problem():
    """E_q f(w) for f(w) = log p(D|w) of a linear regression, with its exact gradient."""
    X, y, _ = vi.make_regression_data(20, seed=3)
    model = vi.BayesianLinearRegression(prior_var=1.0, noise_var=0.25)
    q = vi.MeanFieldGaussian(
        torch.tensor([0.2, -0.5], dtype=D64), torch.tensor([-1.0, -2.0], dtype=D64)
    )
    value = model.expected_log_likelihood(q.mu, torch.diag(q.logvar.exp()), X, y)
    g_mu, g_lv = torch.autograd.grad(value, [q.mu, q.logvar])
    return q, (lambda w: model.log_likelihood(w, X, y)), g_mu, g_lv


@pytest.mark.parametrize("estimator", ["score", "score_loo", "reparam"])
def test_gradient_estimators_are_unbiased(estimator):
    q, f, g_mu, g_lv = _exact_gradient_problem()
    n = 40_000
    if estimator == "reparam":
        samples = reparam.reparam_gradients(q, f, n, generator=gen(8))
    else:
        baseline = "loo" if estimator == "score_loo" else None
        samples = reparam.score_function_gradients(q, f, n, generator=gen(8), baseline=baseline)
    (m_mu, m_lv), (se_mu, se_lv) = samples.mean(), samples.std_error()
    assert ((m_mu - g_mu).abs() < 5 * se_mu).all()
    assert ((m_lv - g_lv).abs() < 5 * se_lv).all()
    # and the test has power: standard errors are small next to the gradient itself
    assert (se_mu < 0.2 * g_mu.abs()).all()


def test_reparam_has_lower_variance_than_score_function():
    q, f, _, _ = _exact_gradient_problem()
    v_score = reparam.score_function_gradients(q, f, 5000, generator=gen(9)).variance()[0]
    v_loo = reparam.score_function_gradients(
        q, f, 5000, generator=gen(9), baseline="loo"
    ).variance()[0]
    v_rep = reparam.reparam_gradients(q, f, 5000, generator=gen(9)).variance()[0]
    assert (v_rep * 2 < v_loo).all() and (v_loo * 2 < v_score).all()


@pytest.mark.parametrize("method", ["score", "score_loo", "reparam"])
def test_gradient_variance_by_samples_follows_one_over_s(method):
    q, f, _, _ = _exact_gradient_problem()
    v = reparam.gradient_variance_by_samples(
        q, f, method, (2, 32), n_repeats=400, generator=gen(14)
    )
    assert v.mu.shape == (2, 2) and v.logvar.shape == (2, 2)
    # 16x more samples: 16x less variance, up to the noise of 400 repeats (about +-15% each)
    # (the leave-one-out baseline also improves with S, so its variance falls faster than 1/S)
    ratio = v.mu[0] / v.mu[1]
    upper = 60 if method == "score_loo" else 25
    assert ((ratio > 10) & (ratio < upper)).all(), ratio
    with pytest.raises(ValueError, match="method"):
        reparam.gradient_variance_by_samples(q, f, "pathwise", (2,), n_repeats=10)


def test_gradient_study_config_presets():
    for name in ("tiny", "book", "paper"):
        cfg = getattr(reparam.GradientStudyConfig, name)()
        assert min(cfg.sample_counts) >= 2  # the leave-one-out baseline needs two samples


def test_score_closed_form_matches_autograd_of_log_prob():
    q = vi.MeanFieldGaussian(torch.tensor([0.5, -1.0]), torch.tensor([0.3, -0.7]))
    samples = reparam.score_function_gradients(
        q, lambda w: torch.ones(w.shape[0]), 3, generator=gen(1)
    )
    eps = torch.randn(3, 2, generator=gen(1))
    w = (q.mu + q.sigma * eps).detach()
    for s in range(3):
        g_mu, g_lv = torch.autograd.grad(q.log_prob(w[s]), [q.mu, q.logvar])
        torch.testing.assert_close(samples.mu[s], g_mu)
        torch.testing.assert_close(samples.logvar[s], g_lv)


def test_reparam_matches_autograd_through_rsample():
    q = vi.MeanFieldGaussian(torch.tensor([0.5, -1.0]), torch.tensor([0.3, -0.7]))

    def f(w):
        return (w**3).sum(-1)

    samples = reparam.reparam_gradients(q, f, 4, generator=gen(2))
    w = q.rsample((4,), generator=gen(2))
    g_mu, g_lv = torch.autograd.grad(f(w).mean(), [q.mu, q.logvar])
    torch.testing.assert_close(samples.mean()[0], g_mu)
    torch.testing.assert_close(samples.mean()[1], g_lv)


def test_estimators_check_f_output_shape():
    q = vi.MeanFieldGaussian(torch.zeros(2))
    with pytest.raises(ValueError, match="one value per sample"):
        reparam.reparam_gradients(q, lambda w: w, 3)
    with pytest.raises(ValueError, match="baseline"):
        reparam.score_function_gradients(q, lambda w: w.sum(-1), 3, baseline="mean")


# --- Bayesian linear regression -----------------------------------------------------------------


def test_blr_posterior_is_bayes_rule():
    """log p(w|D) = log p(D|w) + log p(w) - log p(D) at any w."""
    X, y, _ = vi.make_regression_data(15, seed=1)
    model = vi.BayesianLinearRegression(prior_var=2.0, noise_var=0.3)
    mean, cov = model.posterior(X, y)
    w = torch.randn(10, 2, generator=gen(3), dtype=D64)
    lhs = MultivariateNormal(mean, cov).log_prob(w)
    rhs = model.log_likelihood(w, X, y) + model.log_prior(w) - model.log_evidence(X, y)
    torch.testing.assert_close(lhs, rhs)


def test_blr_evidence_against_monte_carlo_over_the_prior():
    X, y, _ = vi.make_regression_data(5, seed=2)
    model = vi.BayesianLinearRegression(prior_var=1.0, noise_var=0.5)
    w = torch.randn(400_000, 2, generator=gen(4), dtype=D64)  # prior draws
    log_mc = torch.logsumexp(model.log_likelihood(w, X, y), 0) - math.log(len(w))
    assert abs(log_mc - model.log_evidence(X, y)) < 0.02


def test_blr_vlb_gap_is_kl_to_posterior_and_closed_forms_match_mc():
    X, y, _ = vi.make_regression_data(12, seed=5)
    model = vi.BayesianLinearRegression(prior_var=1.0, noise_var=0.25)
    mean, cov = model.posterior(X, y)
    q_mean = torch.tensor([0.1, 0.2], dtype=D64)
    q_cov = torch.tensor([[0.3, 0.05], [0.05, 0.2]], dtype=D64)
    gap = model.log_evidence(X, y) - model.vlb(q_mean, q_cov, X, y)
    torch.testing.assert_close(gap, gaussian.kl_full(q_mean, q_cov, mean, cov))
    assert gap > 0
    # at the exact posterior the bound is tight
    torch.testing.assert_close(model.vlb(mean, cov, X, y), model.log_evidence(X, y))
    # the closed-form expected log-likelihood against Monte Carlo
    w = MultivariateNormal(q_mean, q_cov).sample((100_000,))
    ll = model.log_likelihood(w, X, y)
    exact = model.expected_log_likelihood(q_mean, q_cov, X, y)
    assert abs(ll.mean() - exact) < 5 * ll.std() / math.sqrt(len(ll))


def test_blr_input_checks():
    with pytest.raises(ValueError, match="positive"):
        vi.BayesianLinearRegression(prior_var=0.0)
    with pytest.raises(ValueError, match="X must be"):
        vi.BayesianLinearRegression().posterior(torch.zeros(3, 2), torch.zeros(4))
    with pytest.raises(ValueError, match="n must be"):
        vi.make_regression_data(0)


def test_mean_field_optimum_minimises_kl_and_underestimates_variance():
    mean = torch.tensor([1.0, -1.0], dtype=D64)
    cov = torch.tensor([[1.0, 0.9], [0.9, 1.0]], dtype=D64)
    mu, var = vi.mean_field_optimum(mean, cov)
    torch.testing.assert_close(var, torch.full((2,), 0.19, dtype=D64))  # 1 - rho^2
    best = gaussian.kl_full(mu, torch.diag(var), mean, cov)
    for scale in (0.8, 1.25):  # any other diagonal is worse
        assert gaussian.kl_full(mu, torch.diag(var * scale), mean, cov) > best
    assert (var < cov.diagonal()).all()


def test_fit_vlb_reaches_the_optimum():
    X, y, _ = vi.make_regression_data(10, seed=0)
    model = vi.BayesianLinearRegression(prior_var=1.0, noise_var=0.25)
    mean, cov = model.posterior(X, y)
    cfg = vi.VIFitConfig.tiny()

    def log_lik(w):
        return model.log_likelihood(w, X, y)

    q_mf = vi.MeanFieldGaussian(torch.zeros(2, dtype=D64), torch.zeros(2, dtype=D64))
    hist = vi.fit_vlb(q_mf, log_lik, cfg)
    assert len(hist.vlb) == cfg.steps and hist.vlb[-1] > hist.vlb[0]
    mu_opt, var_opt = vi.mean_field_optimum(mean, cov)
    torch.testing.assert_close(q_mf.mu.detach(), mu_opt, atol=0.05, rtol=0.0)
    torch.testing.assert_close(q_mf.var.detach(), var_opt, rtol=0.15, atol=0.0)
    # the full-rank q closes the gap almost completely; mean-field cannot
    q_fr = vi.FullRankGaussian(torch.zeros(2, dtype=D64))
    vi.fit_vlb(q_fr, log_lik, cfg)
    log_ev = model.log_evidence(X, y)
    gap_fr = log_ev - model.vlb(q_fr.mu, q_fr.covariance(), X, y)
    gap_mf = log_ev - model.vlb(q_mf.mu, q_mf.covariance(), X, y)
    gap_mf_opt = gaussian.kl_full(mu_opt, torch.diag(var_opt), mean, cov)
    assert 0 <= gap_fr < 0.05 < gap_mf_opt <= gap_mf < gap_mf_opt + 0.05


# --- local reparametrisation ------------------------------------------------------------------


def test_linear_output_moments_against_weight_samples():
    g = gen(10)
    x = torch.randn(3, 4, generator=g, dtype=D64)
    mu, logvar = (
        torch.randn(4, 2, generator=g, dtype=D64),
        torch.randn(4, 2, generator=g, dtype=D64),
    )
    mean, var = reparam.linear_output_moments(x, mu, logvar)
    w = mu + (0.5 * logvar).exp() * torch.randn(100_000, 4, 2, generator=g, dtype=D64)
    out = torch.einsum("bi,sio->sbo", x, w)
    se = (var / len(w)).sqrt()
    assert ((out.mean(0) - mean).abs() < 5 * se).all()
    torch.testing.assert_close(out.var(0), var, rtol=0.03, atol=0.0)
    b = reparam.linear_local_reparam(x[:1].expand(100_000, 4), mu, logvar, generator=g)
    torch.testing.assert_close(b.var(0), var[0], rtol=0.03, atol=0.0)
    with pytest.raises(ValueError, match="in, out"):
        reparam.linear_output_moments(x, mu.T, logvar.T)


def test_per_example_and_shared_samplers_have_the_local_moments():
    g = gen(13)
    x = torch.randn(2, 3, generator=g, dtype=D64)
    mu, logvar = (
        torch.randn(3, 2, generator=g, dtype=D64),
        torch.randn(3, 2, generator=g, dtype=D64),
    )
    mean, var = reparam.linear_output_moments(x, mu, logvar)
    many = x[:1].expand(50_000, 3)
    each = reparam.linear_per_example(many, mu, logvar, generator=g)
    torch.testing.assert_close(
        each.mean(0), mean[0], atol=5 * (var[0] / 50_000).sqrt().max().item(), rtol=0
    )
    torch.testing.assert_close(each.var(0), var[0], rtol=0.05, atol=0.0)
    shared = torch.stack(
        [reparam.linear_shared_weights(x, mu, logvar, generator=g) for _ in range(20_000)]
    )
    torch.testing.assert_close(shared.var(0), var, rtol=0.05, atol=0.0)
    # one W for the batch: two identical inputs get identical outputs; local noise does not
    twice = x[:1].expand(2, 3)
    out = reparam.linear_shared_weights(twice, mu, logvar, generator=g)
    assert torch.equal(out[0], out[1])
    out = reparam.linear_local_reparam(twice, mu, logvar, generator=g)
    assert not torch.equal(out[0], out[1])


def _softmax_regression(
    logvar: float,
) -> tuple[minibatch_vi.BayesianMLP, torch.Tensor, torch.Tensor]:
    g = gen(11)
    x = torch.randn(500, 20, generator=g)
    y = torch.randint(0, 5, (500,), generator=g)
    model = minibatch_vi.BayesianMLP((20, 5), logvar_init=logvar, seed=0)
    return model, x, y


def test_local_reparam_lowers_minibatch_gradient_variance():
    model, x, y = _softmax_regression(logvar=-1.0)
    kw = dict(batch_size=50, n_repeats=300, resample_batch=False, seed=1)
    v_shared = minibatch_vi.minibatch_gradient_variance(model, x, y, "shared", **kw)
    v_local = minibatch_vi.minibatch_gradient_variance(model, x, y, "local", **kw)
    v_each = minibatch_vi.minibatch_gradient_variance(model, x, y, "per_example", **kw)
    assert v_shared.shape == (1,)
    assert v_local * 2 < v_shared  # measured ratio about 2.5 here
    assert 0.7 < v_local / v_each < 1.4  # same noise model, same variance
    assert all(layer.sampler == "local" for layer in model.layers)  # restored
    # with a resampled batch the batch noise adds to both, but local still wins
    kw["resample_batch"] = True
    assert minibatch_vi.minibatch_gradient_variance(
        model, x, y, "local", **kw
    ) < minibatch_vi.minibatch_gradient_variance(model, x, y, "shared", **kw)
    with pytest.raises(ValueError, match="method"):
        minibatch_vi.minibatch_gradient_variance(model, x, y, "bogus", batch_size=5)
    with pytest.raises(ValueError, match="sampler"):
        model.layers[0].sampler = "bogus"


def test_gradient_variance_vanishes_with_a_point_mass_q():
    model, x, y = _softmax_regression(logvar=-30.0)
    v = minibatch_vi.minibatch_gradient_variance(
        model, x, y, "shared", batch_size=50, n_repeats=20, resample_batch=False
    )
    assert v.item() < 1e-6


# --- mini-batch VI ------------------------------------------------------------------------------


def test_bayesian_linear_kl_and_modes():
    layer = minibatch_vi.BayesianLinear(6, 3, logvar_init=-2.0, prior_logvar=0.0, generator=gen(0))
    torch.testing.assert_close(
        layer.kl(), gaussian.kl_to_standard(layer.q.mu, layer.q.logvar).sum()
    )
    x = torch.randn(4, 6, generator=gen(1))
    layer.eval()
    torch.testing.assert_close(layer(x), x @ layer.q.mu + layer.bias)
    assert not torch.equal(layer(x, sample=True), layer(x))


def test_train_minibatch_vi_learns_a_separable_problem():
    torch.manual_seed(0)
    g = gen(12)
    centres = 3 * torch.randn(3, 10, generator=g)
    y = torch.randint(0, 3, (600,), generator=g)
    x = centres[y] + torch.randn(600, 10, generator=g)
    cfg = minibatch_vi.MinibatchVIConfig(
        n_train=600, hidden=(16,), batch_size=50, epochs=15, lr=1e-2
    )
    model = minibatch_vi.BayesianMLP((10, 16, 3), cfg.logvar_init, cfg.prior_logvar, seed=0)
    hist = minibatch_vi.train_minibatch_vi(model, x, y, cfg)
    assert len(hist.elbo) == cfg.epochs * 12
    assert sum(hist.elbo[-12:]) / 12 > sum(hist.elbo[:12]) / 12
    assert minibatch_vi.predictive_accuracy(model, x, y, n_samples=3) > 0.9
    assert minibatch_vi.predictive_accuracy(model, x, y, n_samples=0) > 0.9
    with pytest.raises(ValueError, match="disagree"):
        minibatch_vi.train_minibatch_vi(model, x, y[:10], cfg)


# --- presets, data and figures ------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls", [vi.VIFitConfig, minibatch_vi.MinibatchVIConfig, reparam.GradientStudyConfig]
)
def test_presets_build_and_grow(cls):
    from dwp_lib.config import to_dict

    tiny, book, paper = (cls.preset(name) for name in ("tiny", "book", "paper"))
    assert to_dict(tiny) != to_dict(book) != to_dict(paper)


def test_make_regression_data_is_seeded_and_follows_the_model():
    X, y, x = vi.make_regression_data(5000, weights=(0.5, -1.0), noise_std=0.5, seed=3)
    assert X.shape == (5000, 2) and y.shape == (5000,) and (X[:, 0] == 1).all()
    assert torch.equal(X[:, 1], x) and ((x >= 0) & (x <= 2)).all()
    X2, y2, _ = vi.make_regression_data(5000, weights=(0.5, -1.0), noise_std=0.5, seed=3)
    assert torch.equal(y, y2)
    resid = y - X @ torch.tensor([0.5, -1.0], dtype=D64)
    assert abs(resid.mean()) < 5 * 0.5 / math.sqrt(5000)
    assert abs(resid.std() - 0.5) < 0.02


def test_fit_vlb_checks_log_lik_shape():
    q = vi.MeanFieldGaussian(torch.zeros(2))
    with pytest.raises(ValueError, match="log_lik must return"):
        vi.fit_vlb(q, lambda w: w, vi.VIFitConfig(steps=1, n_samples=3))


def test_chapter_figures_draw():
    """Each figure of chapters 1 and 2 draws its panels and series, labelled, from the data given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from dwp_lib import plots

    mean, cov = torch.zeros(2), torch.tensor([[1.0, 0.5], [0.5, 1.0]])
    X, y, x = vi.make_regression_data(10)
    hist = History(terms={"elbo": [-3.0] * 30, "data_term": [-1.0] * 30, "kl": [2.0] * 30})

    def legend(ax):
        return [t.get_text() for t in ax.get_legend().get_texts()]

    # q against the posterior: 2 filled posterior contours; q's 1 and 2 sd, the prior, the mode
    fig = plots.plot_q_vs_posterior(mean, cov, {"q": (mean, torch.eye(2))}, prior_var=1.0)
    (ax,) = fig.axes
    assert len(ax.patches) == 2 and len(ax.lines) == 4
    assert legend(ax) == ["exact posterior p(w|D)", "q", "prior p(w), 1 sd"]
    np.testing.assert_allclose(ax.lines[0].get_xdata().max(), 1.0, atol=1e-3)  # q = N(0, I), 1 sd
    assert ax.get_xlabel() == "$w_0$ (intercept)"

    # VLB traces: the raw trace, its running mean (60 >= 25 steps) and log p(D)
    fig = plots.plot_vlb_traces({"q": list(range(-60, 0))}, log_evidence=0.0)
    (ax,) = fig.axes
    assert len(ax.lines) == 3 and ax.get_ylim() == (-15.0, 3.0)
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), np.arange(-60, 0))
    assert len(ax.lines[1].get_ydata()) == 60 - 25 + 1

    # mean-field failure: one contour panel, the ratio panel and its twin (the KL)
    fig = plots.plot_mean_field_failure(
        torch.tensor([0.0, 0.5]),
        torch.tensor([1.0, 0.75]),
        torch.tensor([0.0, 0.14]),
        [(0.5, cov, torch.tensor([0.75, 0.75]))],
    )
    contours, ratio, twin = fig.axes
    assert len(contours.lines) == 4 and contours.get_title() == "correlation 0.50"
    np.testing.assert_allclose(ratio.lines[0].get_ydata(), [1.0, 0.75])
    np.testing.assert_allclose(twin.lines[0].get_ydata(), [0.0, 0.14])
    assert twin.get_ylabel() == "KL (nats)"

    # BLR: weight space (prior and posterior, 1 and 2 sd) and data space (band, mean, data)
    fig = plots.plot_blr_posterior(x, y, mean, cov, 1.0, 0.25)
    ax_w, ax_d = fig.axes
    assert len(ax_w.lines) == 4 and legend(ax_w) == ["prior", "posterior"]
    assert len(ax_d.collections) == 1 and len(ax_d.lines) == 2
    np.testing.assert_allclose(ax_d.lines[1].get_xdata(), x.numpy())
    assert "data (N=10)" in legend(ax_d)

    fig = plots.plot_blr_grid([[(mean, cov)]], [1.0], [10], 0.25, truth=(0.5, -1.0))
    (ax,) = fig.axes
    assert len(ax.lines) == 5 and ax.get_title() == "prior sd 1, N=10"
    assert list(ax.lines[-1].get_xydata()[0]) == [0.5, -1.0]  # the true weights
    assert fig.get_suptitle().startswith("posterior (blue) and prior (grey)")

    # chapter 2
    fig = plots.plot_estimator_histograms({"a": torch.randn(100)}, exact=0.0, bins=20)
    (ax,) = fig.axes
    assert len(ax.patches) == 20 and list(ax.lines[0].get_xdata()) == [0.0, 0.0]
    assert legend(ax)[0].startswith("a: sd ")

    fig = plots.plot_estimator_variance([2, 8], {"a": torch.tensor([1.0, 0.25])})
    (ax,) = fig.axes
    assert len(ax.lines) == 2 and ax.get_xscale() == ax.get_yscale() == "log"
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [1.0, 0.25])
    np.testing.assert_allclose(ax.lines[1].get_ydata(), [1.0, 0.25])  # the 1/S law through S = 2

    fig = plots.plot_vi_history(hist, n_data=10)
    terms, kl = fig.axes
    assert len(terms.lines) == 2 and len(terms.lines[0].get_ydata()) == 30 - 20 + 1
    np.testing.assert_allclose(terms.lines[0].get_ydata(), -0.3)  # the VLB per example
    np.testing.assert_allclose(kl.lines[0].get_ydata(), [0.2] * 30)

    fig = plots.plot_pixel_posterior(torch.randn(784, 10), torch.zeros(784, 10))
    assert len(fig.axes) == 2 * 5 + 1  # 4 digits and the summary, two rows, and the colour bar
    assert [a.get_title() for a in fig.axes[:4]] == [
        f"mean weights, digit {c}" for c in (0, 1, 3, 7)
    ]
    assert fig.axes[0].images[0].get_array().shape == (28, 28)
    assert len(fig.axes[9].patches) == 50  # the histogram of all sds

    fig = plots.plot_gradient_variance_vs_batch([10, 100], {"a": torch.tensor([1.0, 0.1])})
    (ax,) = fig.axes
    assert len(ax.lines) == 1 and ax.get_xlabel() == "batch size B"
    np.testing.assert_allclose(ax.lines[0].get_xydata(), [[10, 1.0], [100, 0.1]])
    plt.close("all")
