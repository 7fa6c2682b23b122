"""Tests of dwp_lib.implicit_prior: the auxiliary bound, its gap, log p(w) by quadrature.

The reference is a kernel VAE whose decoder is made *linear*, p(w|z) = N(w | A z + b, s^2 I):
then p(w) = N(w | b, A A^T + s^2 I) and the posterior p(z|w) are known in closed form, and an
encoder that outputs that posterior closes the gap exactly. Each test compares the code with
that independent computation, or checks a property a plausible bug would break.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dwp_lib import implicit_prior as ip
from dwp_lib.kernel_layers import KernelVAEConfig
from dwp_lib.kernel_vae import KernelVAE

K, D, S = 7, 2, 0.1  # kernel size, latent dim, decoder standard deviation
SCALES = torch.tensor([0.5, 0.3], dtype=torch.float64)  # lengths of A's orthogonal columns


def mc_tolerance(samples: np.ndarray, k: float = 5.0) -> float:
    """k standard errors of the mean of ``samples``."""
    return k * float(np.std(samples)) / math.sqrt(len(samples))


class LinearGaussian:
    """w = A z + b + s * eps with z ~ N(0, I_2): everything in closed form (float64)."""

    def __init__(self, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(K * K, D, generator=gen, dtype=torch.float64))
        self.A = q * SCALES  # orthogonal columns: the posterior covariance is diagonal
        self.b = 0.05 * torch.randn(K * K, generator=gen, dtype=torch.float64)
        cov = self.A @ self.A.T + S**2 * torch.eye(K * K, dtype=torch.float64)
        self.marginal = torch.distributions.MultivariateNormal(self.b, cov)
        self.post_var = 1.0 / (1.0 + SCALES**2 / S**2)  # diag of (I + A^T A / s^2)^-1

    def log_p(self, w: torch.Tensor) -> torch.Tensor:
        return self.marginal.log_prob(w.double().flatten(1))

    def posterior(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.post_var * ((w.double().flatten(1) - self.b) @ self.A) / S**2
        return mean, self.post_var.expand_as(mean)

    def sample(self, n: int, seed: int = 1) -> torch.Tensor:
        torch.manual_seed(seed)
        return self.marginal.sample((n,)).float().reshape(n, K, K)

    def vae(self, exact_encoder: bool) -> KernelVAE:
        """A KernelVAE whose decoder is this model; its encoder is the true posterior if
        ``exact_encoder``, else the VAE's own (untrained) one."""
        torch.manual_seed(0)
        vae = KernelVAE(KernelVAEConfig.for_kernel(K, hidden=8)).eval()
        A, b = self.A.float(), self.b.float()

        def decode(z):
            mean = (z @ A.T + b).reshape(*z.shape[:-1], K, K)
            return mean, torch.full_like(mean, 2 * math.log(S))

        vae.decode = decode
        if exact_encoder:

            def encode(w):
                mean, var = self.posterior(w)
                return mean.float(), var.log().float()

            vae.encode = encode
        return vae


@pytest.fixture(scope="module")
def model() -> LinearGaussian:
    return LinearGaussian()


@pytest.fixture(scope="module")
def cfg() -> ip.ImplicitPriorConfig:
    return ip.ImplicitPriorConfig.preset(
        "tiny", bound_samples=256, iw_samples=2000, grid_size=161, grid_radius=6.0
    )


# --------------------------------------------------------------------------------------------
# log p(w) by quadrature
# --------------------------------------------------------------------------------------------


def test_grid_log_marginal_matches_closed_form(model):
    vae = model.vae(exact_encoder=False)
    w = model.sample(12)
    grid = ip.LatentGrid(vae, size=161, radius=6.0)
    got = grid.log_marginal(w).double()
    np.testing.assert_allclose(got.numpy(), model.log_p(w).numpy(), atol=2e-3)
    assert grid.edge_mass(w).max() < 1e-6
    assert grid.peak_mass(w).max() < 0.05  # the posterior spans many cells


def test_grid_posterior_is_the_closed_form_posterior(model):
    vae = model.vae(exact_encoder=False)
    w = model.sample(3)
    grid = ip.LatentGrid(vae, size=121, radius=5.0)
    log_post = grid.log_posterior(w).double()  # (3, 121, 121)
    mean, var = model.posterior(w)
    z = grid.z.double()  # (G, 2)
    want = torch.distributions.Normal(mean[:, None], var[:, None].sqrt()).log_prob(z).sum(-1)
    np.testing.assert_allclose(log_post.flatten(1).numpy(), want.numpy(), atol=2e-3)
    # a density: integrates to one over the grid
    total = torch.logsumexp(log_post.flatten(1), -1) + grid.log_cell
    np.testing.assert_allclose(total.numpy(), 0.0, atol=1e-5)


def test_coarse_grid_says_so(model):
    """A grid whose cells are wider than the posterior must report a heavy peak cell."""
    vae = model.vae(exact_encoder=False)
    w = model.sample(4)
    coarse = ip.LatentGrid(vae, size=5, radius=6.0)  # cells 3 wide, posterior sd 0.2-0.3
    assert coarse.peak_mass(w).min() > 0.5


def test_grid_refuses_a_four_dimensional_latent_space():
    vae = KernelVAE(KernelVAEConfig.for_kernel(5, hidden=4))
    with pytest.raises(ValueError, match="latent_dim=4"):
        ip.LatentGrid(vae, 11, 3.0)


# --------------------------------------------------------------------------------------------
# The bound and its gap
# --------------------------------------------------------------------------------------------


def test_bound_is_exact_when_r_is_the_true_posterior(model, cfg):
    """With r(z|w) = p(z|w) the gap KL(r || p(z|w)) is zero: bound = log p(w)."""
    vae = model.vae(exact_encoder=True)
    w = model.sample(16)
    scores = ip.score_slices(vae, w, cfg, "exact", ip.LatentGrid(vae, 161, 6.0))
    truth = model.log_p(w).float()
    np.testing.assert_allclose(scores.log_p_grid.numpy(), truth.numpy(), atol=2e-3)
    # the bound is a Monte-Carlo mean of 256 draws (reconstruction sampled, KL in closed form:
    # about 0.06 nats of standard error per slice here)
    np.testing.assert_allclose(scores.bound.numpy(), truth.numpy(), atol=0.3)
    assert abs(scores.gap.mean().item()) < 0.1
    # every importance weight equals p(w) when the proposal is the posterior
    np.testing.assert_allclose(scores.log_p_iw.numpy(), truth.numpy(), atol=1e-3)


def test_bound_below_log_p_and_iw_in_between_for_a_poor_reverse_model(model, cfg):
    vae = model.vae(exact_encoder=False)  # a random encoder: a poor r(z|w)
    w = model.sample(16)
    scores = ip.score_slices(vae, w, cfg, "random r", ip.LatentGrid(vae, 161, 6.0))
    truth = model.log_p(w).float()
    gap = (truth - scores.bound).numpy()
    assert gap.mean() > 1.0, "a random encoder should leave a sizeable gap"
    assert (gap > -0.1).all()
    # IW with K = 2000 recovers most of the gap, and does not overshoot log p(w) on average
    iw_gap = (truth - scores.log_p_iw).numpy()
    assert iw_gap.mean() < 0.25 * gap.mean()
    assert iw_gap.mean() > -0.05
    np.testing.assert_allclose(scores.gap.numpy(), gap, atol=5e-3)  # gap uses the grid
    summary = scores.summary()
    assert summary["slices"] == 16 and summary["gap"] == pytest.approx(gap.mean(), abs=5e-3)


def test_iw_curve_rises_from_the_bound_to_log_p(model):
    vae = model.vae(exact_encoder=False)
    w = model.sample(8)
    log_w = ip.log_importance_weights(vae, w, 1024, seed=0)
    assert log_w.shape == (1024, 8)
    ks, curve = ip.iw_curve(log_w)
    assert ks == [2**i for i in range(11)] and curve.shape == (11, 8)
    torch.testing.assert_close(curve[0], log_w.mean(0))  # K = 1: the bound's estimate
    torch.testing.assert_close(curve[-1], torch.logsumexp(log_w, 0) - math.log(1024))
    mean_curve = curve.mean(1).numpy()
    assert (np.diff(mean_curve) > -0.05).all(), mean_curve  # rises with K (up to noise)
    truth = model.log_p(w).mean().item()
    assert mean_curve[0] < truth - 1.0 and abs(mean_curve[-1] - truth) < 0.25 * (
        truth - mean_curve[0]
    )
    with pytest.raises(ValueError, match="outside"):
        ip.iw_curve(log_w, [2048])


def test_score_slices_reuses_a_given_iw_estimate(model, cfg):
    vae = model.vae(exact_encoder=False)
    w = model.sample(4)
    given = torch.arange(4.0)
    scores = ip.score_slices(vae, w, cfg, log_p_iw=given)
    assert torch.equal(scores.log_p_iw, given) and torch.equal(scores.gap, given - scores.bound)
    with pytest.raises(ValueError, match="log_p_iw has shape"):
        ip.score_slices(vae, w, cfg, log_p_iw=torch.zeros(3))


def test_score_slices_refuses_a_grid_of_another_decoder(model, cfg):
    vae = model.vae(exact_encoder=False)
    other = KernelVAE(KernelVAEConfig.for_kernel(K))
    with pytest.raises(ValueError, match="another VAE's decoder"):
        ip.score_slices(other, model.sample(2), cfg, grid=ip.LatentGrid(vae, 11, 3.0))


# --------------------------------------------------------------------------------------------
# Training the reverse model alone
# --------------------------------------------------------------------------------------------


def test_train_reverse_closes_the_gap_and_leaves_the_prior_alone(cfg):
    torch.manual_seed(0)
    vae = KernelVAE(KernelVAEConfig.for_kernel(K, hidden=16)).eval()
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    w = ip.gaussian_slices(64, K, std=0.1, seed=3)
    grid = ip.LatentGrid(vae, 81, 5.0)
    small = ip.ImplicitPriorConfig.preset("tiny", bound_samples=64, iw_samples=8)
    first = ip.score_slices(vae, w, small, grid=grid)
    fitted, losses = ip.train_reverse(
        vae, w, ip.ImplicitPriorConfig.preset("tiny", reverse_steps=150, reverse_batch_size=32)
    )
    after = ip.score_slices(fitted, w, small, grid=grid)
    assert ip.same_decoder(vae, fitted)
    for k, v in vae.state_dict().items():  # the caller's VAE is untouched
        assert torch.equal(v, before[k]), k
    assert not all(
        torch.equal(a, b)
        for a, b in zip(vae.reverse_parameters(), fitted.reverse_parameters(), strict=True)
    )
    assert len(losses) == 150 and np.mean(losses[-10:]) < np.mean(losses[:10])
    torch.testing.assert_close(after.log_p_grid, first.log_p_grid)  # log p(w) is unchanged
    assert after.gap.mean() < 0.5 * first.gap.mean()
    assert all(not p.requires_grad for p in fitted.parameters())


# --------------------------------------------------------------------------------------------
# The per-layer penalty
# --------------------------------------------------------------------------------------------


def test_layer_penalty_matches_closed_form_for_the_exact_model(model):
    """With r = p(z|w), the slice term is -E_q log p(w_s), a Gaussian expectation in closed form:
    -log N(mu | b, C) + 0.5 tr(C^-1 diag(sigma_q^2))."""
    torch.manual_seed(4)
    vae = model.vae(exact_encoder=True)
    # near the mean b, where -log p(w) is flat, so that 400 draws resolve the trace term (~1 nat)
    mu = (model.b + 0.02 * torch.randn(6, K * K, dtype=torch.float64)).float().reshape(6, K, K)
    log_var = torch.full_like(mu, math.log(0.02**2))
    terms = ip.layer_penalty(vae, mu, log_var, num_samples=400, seed=1)
    cov = model.marginal.covariance_matrix
    trace = torch.diagonal(torch.linalg.inv(cov)).sum() * 0.02**2
    want = -model.log_p(mu) + 0.5 * trace
    # one z per draw of w: about 0.05 nats of standard error per slice with 400 draws
    np.testing.assert_allclose(terms.slice_terms.double().numpy(), want.numpy(), atol=0.3)
    assert abs((terms.slice_terms.double() - want).mean().item()) < 0.1
    assert 0.5 < 0.5 * trace.item() < 2.0  # the trace term is large enough to be tested here
    neg_entropy = -0.5 * mu.numel() * math.log(2 * math.pi * math.e * 0.02**2)
    assert terms.neg_entropy == pytest.approx(neg_entropy, rel=1e-6)
    assert terms.total == pytest.approx(neg_entropy + terms.slice_terms.sum().item(), rel=1e-6)


def test_layer_penalty_is_the_expectation_of_the_dwp_kl():
    """The library's DeepWeightPrior.kl draws one w and one z per slice; its mean over draws
    must agree with layer_penalty's total."""
    from dwp_lib import bayes, priors

    torch.manual_seed(0)
    vae = KernelVAE(KernelVAEConfig.for_kernel(K, hidden=8)).eval()
    layer = bayes.BayesConv2d(1, 6, K, log_sigma2_init=-6.0)
    prior = priors.DeepWeightPrior(vae, slices_per_step=None)
    with torch.no_grad():
        draws = np.array([prior.kl(layer).item() for _ in range(400)])
    mu, log_var = layer.slices()
    terms = ip.layer_penalty(vae, mu.detach(), log_var.detach(), num_samples=400)
    assert abs(draws.mean() - terms.total) < mc_tolerance(draws) + 1e-3 * abs(terms.total)


def test_layer_penalty_checks_shapes():
    vae = KernelVAE(KernelVAEConfig.for_kernel(K, hidden=4))
    with pytest.raises(ValueError, match="differ"):
        ip.layer_penalty(vae, torch.zeros(3, K, K), torch.zeros(2, K, K), 1)
    with pytest.raises(ValueError, match="expects shape"):
        ip.layer_penalty(vae, torch.zeros(3, 5, 5), torch.zeros(3, 5, 5), 1)


# --------------------------------------------------------------------------------------------
# Slices that did not come from a source net
# --------------------------------------------------------------------------------------------


def test_random_slices():
    x = ip.xavier_slices(4000, 7, 1, 32, seed=0)
    assert x.shape == (4000, 7, 7)
    assert x.std().item() == pytest.approx(math.sqrt(2 / (33 * 49)), rel=0.02)
    assert torch.equal(ip.gaussian_slices(5, 3, 0.1, seed=1), ip.gaussian_slices(5, 3, 0.1, 1))
    w = ip.gaussian_slices(10, 5, 1.0, seed=2)
    s = ip.shuffle_pixels(w, seed=0)
    torch.testing.assert_close(s.flatten(1).sort(1).values, w.flatten(1).sort(1).values)
    assert (s != w).float().mean() > 0.8
    with pytest.raises(ValueError):
        ip.gaussian_slices(3, 7, -1.0)


def test_config_presets_and_validation():
    tiny, book = ip.ImplicitPriorConfig.preset("tiny"), ip.ImplicitPriorConfig.preset("book")
    assert tiny.iw_samples < book.iw_samples and tiny.grid_size < book.grid_size
    with pytest.raises(ValueError, match="iw_samples"):
        ip.ImplicitPriorConfig(iw_samples=0)


# --------------------------------------------------------------------------------------------
# The chapter's figures draw from these objects without error
# --------------------------------------------------------------------------------------------


def test_chapter_figures(model, cfg):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dwp_lib import plots

    vae = model.vae(exact_encoder=False)
    exact = model.vae(exact_encoder=True)
    grid = ip.LatentGrid(vae, 61, 5.0)
    kinds = {"a": model.sample(6, seed=1), "b": ip.gaussian_slices(6, K, 0.1, seed=2)}
    small = ip.ImplicitPriorConfig.preset("tiny")
    scores = [ip.score_slices(vae, w, small, k, grid) for k, w in kinds.items()]
    after = [ip.score_slices(exact, kinds[s.kind], small, s.kind, grid) for s in scores]
    table = ip.scores_table(scores, after)
    assert table.count("\n") == 1 + len(kinds) and "r trained" in table
    examples = {k: w[0] for k, w in kinds.items()}
    log_w = ip.log_importance_weights(vae, kinds["a"], 16)
    ks, curve = ip.iw_curve(log_w)
    figs = [
        plots.plot_slice_kinds(kinds, n=4),
        plots.plot_posterior_vs_reverse(
            grid, examples, {"own": vae, "exact": dict.fromkeys(kinds, exact)}
        ),
        plots.plot_bound_and_gap(scores, after),
        plots.plot_iw_curves(ks, {"a": curve}, {"a": grid.log_marginal(kinds["a"])}),
        plots.plot_penalty_sweep(
            [-4.0, -2.0, 0.0], [1.0, 0.0, -1.0], [0.0, 0.5, 3.0], -2.0, ("x", [2, 1, 0])
        ),
    ]
    # one row of 4 slices per kind, on one colour scale
    rows = figs[0].axes
    assert [a.get_ylabel().split("\n")[0] for a in rows] == ["a", "b"]
    assert all(a.images[0].get_array().shape == (K, 4 * (K + 1) - 1) for a in rows)
    vmax = max(float(w[:4].abs().max()) for w in kinds.values())
    assert rows[0].images[0].get_clim() == pytest.approx((-vmax, vmax))
    # a panel per slice: the posterior's filled contours, 1 and 2 sd of each of 2 reverse models
    panels = figs[1].axes
    assert [a.get_title() for a in panels] == ["a", "b"]
    assert all(len(a.lines) == 2 * 2 and a.collections for a in panels)
    # the bound against log p(w), a scatter per kind; the gaps as 2 x 2 boxes
    scatter, gaps = figs[2].axes
    assert [len(c.get_offsets()) for c in scatter.collections] == [6, 6]
    np.testing.assert_allclose(scatter.collections[0].get_offsets()[:, 0], scores[0].log_p.numpy())
    assert [t.get_text() for t in gaps.get_xticklabels()] == ["a", "b"]
    assert len(gaps.patches) == 2 * len(kinds)
    # IW curve: one line of len(ks) points per kind, and the zero line
    (ax,) = figs[3].axes
    assert len(ax.lines) == 2 and len(ax.lines[0].get_xdata()) == len(ks)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a"]
    # penalty: -H(q), the slice terms, their sum, its minimum, the decoder line, the baseline
    (ax,) = figs[4].axes
    assert len(ax.lines) == 6
    np.testing.assert_allclose(ax.lines[2].get_ydata(), [1.0, 0.5, 2.0])
    assert list(ax.lines[3].get_xydata()[0]) == [-2.0, 0.5]  # the minimum of the penalty
    for fig in figs:
        plt.close(fig)
