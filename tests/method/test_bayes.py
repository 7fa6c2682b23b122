"""Tests of dwp_lib.bayes, dwp_lib.priors and dwp_lib.inits: each compares the code with an
independent computation that could disagree (closed form vs Monte Carlo, approximation vs
numerical integral, bound vs an importance-sampled estimate, subsampled vs exact), or checks a
behaviour that a known bug of public code would break."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dwp_lib import bayes, inits, priors
from dwp_lib.bayes import BayesConfig, BayesConv2d, BayesianCNN
from dwp_lib.inits import DWPInit, FiltersInit, XavierInit
from dwp_lib.kernel_bank import KernelBank
from dwp_lib.kernel_layers import KernelVAEConfig
from dwp_lib.kernel_vae import KernelVAE, KernelVAETrainConfig, train_kernel_vae
from dwp_lib.priors import DeepWeightPrior, LogUniform, StandardNormal
from dwp_lib.slices import toy_kernel_slices


def mc_tolerance(samples: np.ndarray, k: float = 5.0) -> float:
    """k standard errors of the mean of ``samples``."""
    return k * float(np.std(samples)) / math.sqrt(len(samples))


# --------------------------------------------------------------------------------------------
# Fixtures: a kernel VAE fitted to toy 7x7 slices, a tiny 5x5 one, a toy data set
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_vae() -> KernelVAE:
    vae = KernelVAE(KernelVAEConfig.for_kernel(7, hidden=16))
    train_kernel_vae(
        vae, toy_kernel_slices(2000, 7, seed=0), KernelVAETrainConfig(steps=200), 0, "cpu"
    )
    return vae


@pytest.fixture(scope="module")
def vae5() -> KernelVAE:
    torch.manual_seed(5)
    return KernelVAE(KernelVAEConfig.for_kernel(5, hidden=8)).eval()


@pytest.fixture
def data():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(20, 1, 28, 28, generator=gen)
    y = torch.arange(20) % 10
    return x, y


def small_cfg(**kw) -> BayesConfig:
    return BayesConfig.preset("tiny", channels=(4, 8), **kw)


# --------------------------------------------------------------------------------------------
# The layer: local reparametrisation
# --------------------------------------------------------------------------------------------


def test_local_reparametrisation_matches_weight_sampling():
    """Output mean and variance of the local reparametrisation = Monte Carlo over weights."""
    torch.manual_seed(0)
    layer = BayesConv2d(2, 3, 3, log_sigma2_init=-2.0)
    with torch.no_grad():
        layer.mu.normal_(0, 0.5)
        layer.log_sigma2.uniform_(-3, -1)
        layer.bias.normal_()
    x = torch.randn(1, 2, 5, 5)
    s = 4000
    with torch.no_grad():
        local = torch.stack([layer(x, sample=True) for _ in range(s)])
        weights = torch.stack([F.conv2d(x, layer.rsample_weight(), layer.bias) for _ in range(s)])
        mean = F.conv2d(x, layer.mu, layer.bias)
        var = F.conv2d(x**2, layer.log_sigma2.exp())
    for draws in (local, weights):
        z = (draws.mean(0) - mean) / (var / s).sqrt()
        assert z.abs().max() < 5, "sample mean differs from conv(x, mu)"
        rel = draws.var(0) / var - 1
        assert rel.abs().max() < 5 * math.sqrt(2 / s), "sample variance differs from conv(x^2, s2)"
    # and the two samplers agree with each other
    assert torch.allclose(local.var(0), weights.var(0), rtol=0.15)


def test_layer_samples_in_train_mode_and_uses_the_mean_in_eval_mode():
    layer = BayesConv2d(1, 2, 3, log_sigma2_init=-1.0)
    x = torch.randn(3, 1, 6, 6)
    mean = F.conv2d(x, layer.mu, layer.bias)
    assert not torch.equal(layer(x), layer(x))
    assert torch.equal(layer(x, sample=False), mean)
    layer.eval()
    assert torch.equal(layer(x), mean)
    assert not torch.equal(layer(x, sample=True), mean)


def test_network_samples_in_train_mode_and_uses_the_means_in_eval_mode(data):
    x, _ = data
    model = BayesianCNN(small_cfg(log_sigma2_init=-2.0))
    assert not torch.equal(model.train()(x), model(x))
    mean_net = bayes.det_cnn(small_cfg())
    mean_net.load_state_dict(
        {k.replace(".mu", ".weight"): v for k, v in model.state_dict().items() if "sigma" not in k}
    )
    assert torch.allclose(model.eval()(x), mean_net(x), atol=1e-6)


# --------------------------------------------------------------------------------------------
# The priors' KL terms
# --------------------------------------------------------------------------------------------


def test_standard_normal_kl_closed_form_matches_monte_carlo():
    torch.manual_seed(1)
    layer = BayesConv2d(2, 3, 3)
    with torch.no_grad():
        layer.mu.normal_(0, 1)
        layer.log_sigma2.uniform_(-3, 1)
    closed = StandardNormal().kl(layer).item()
    # KL = E_q[log q(w) - log p(w)], estimated from draws of the whole weight tensor
    q = torch.distributions.Normal(layer.mu, (0.5 * layer.log_sigma2).exp())
    p = torch.distributions.Normal(0.0, 1.0)
    with torch.no_grad():
        w = q.sample((20000,))
        draws = (q.log_prob(w) - p.log_prob(w)).sum((1, 2, 3, 4)).numpy()
    assert abs(draws.mean() - closed) < mc_tolerance(draws)


def test_standard_normal_kl_works_in_the_alpha_parametrisation():
    layer = BayesConv2d(1, 2, 3, alpha_parametrised=True, alpha_logit_init=0.0)
    sigma2 = 0.5 * layer.mu**2  # alpha = sigmoid(0) = 0.5
    expected = 0.5 * (sigma2 + layer.mu**2 - 1 - sigma2.log()).sum()
    assert torch.allclose(StandardNormal().kl(layer), expected, rtol=1e-5)


def _log_uniform_kl_by_quadrature(alpha: float) -> float:
    """KL(N(mu, alpha mu^2) || log-uniform) up to a constant: -0.5 log alpha + E log|eps|,
    eps ~ N(1, alpha) (Kingma et al. 2015, eq. 15), by the trapezoid rule on a fine grid."""
    s = math.sqrt(alpha)
    t = np.linspace(1 - 12 * s, 1 + 12 * s, 1_000_001)
    pdf = np.exp(-((t - 1) ** 2) / (2 * alpha)) / math.sqrt(2 * math.pi * alpha)
    e_log = np.trapezoid(np.log(np.abs(t) + 1e-300) * pdf, t)
    return -0.5 * math.log(alpha) + e_log


def test_log_uniform_approximation_matches_numerical_integral():
    alphas = [0.001, 0.01, 0.1, 0.3, 0.5, 0.8, 1.0]
    approx = priors.kl_log_uniform(torch.tensor(alphas, dtype=torch.float64).log()).numpy()
    exact = np.array([_log_uniform_kl_by_quadrature(a) for a in alphas])
    diff = exact - approx  # a constant (the prior is improper) up to the approximation error
    assert np.ptp(diff) < 0.05, f"approximation error varies by {np.ptp(diff):.3f} nats"
    # over the same range the KL itself varies by several nats: the test has teeth
    assert np.ptp(exact) > 3


def test_log_uniform_refuses_a_layer_without_alpha_parametrisation(data):
    x, y = data
    with pytest.raises(ValueError, match="alpha parametrisation"):
        LogUniform().kl(BayesConv2d(1, 2, 7))
    model = BayesianCNN(small_cfg())
    with pytest.raises(ValueError, match="alpha_parametrised=True"):
        bayes.train_bayesian_cnn(model, LogUniform(), x, y, small_cfg(steps=1), device="cpu")


def test_log_uniform_kl_ignores_the_mean():
    layer = BayesConv2d(1, 2, 3, alpha_parametrised=True)
    before = LogUniform().kl(layer)
    with torch.no_grad():
        layer.mu.mul_(10)
    assert torch.allclose(LogUniform().kl(layer), before)


# --------------------------------------------------------------------------------------------
# The deep weight prior: auxiliary bound, reverse model, subsampling
# --------------------------------------------------------------------------------------------


def test_aux_bound_is_below_importance_sampled_log_p_and_close_to_it(toy_vae):
    torch.manual_seed(2)
    prior = DeepWeightPrior(toy_vae)
    w = toy_kernel_slices(50, 7, seed=1)
    with torch.no_grad():
        aux = torch.stack([prior.aux_bound(w) for _ in range(32)]).mean(0)
        log_p = toy_vae.log_likelihood_iw(w, 300)
    gap = log_p - aux
    assert gap.mean() > 0
    assert (gap > -0.5).all(), "aux bound above the IW estimate of log p(w) for some slice"
    assert gap.mean() < 1.0, f"bound not tight with a trained r: gap {gap.mean():.2f} nats"


def _layer_holding(slices: torch.Tensor, c_out: int) -> BayesConv2d:
    k = slices.shape[-1]
    layer = BayesConv2d(len(slices) // c_out, c_out, k, log_sigma2_init=-10.0)
    with torch.no_grad():
        layer.mu.copy_(slices.reshape(layer.mu.shape))
    return layer.requires_grad_(False)


def test_joint_training_of_the_reverse_model_tightens_the_bound(toy_vae):
    torch.manual_seed(3)
    untrained_r = KernelVAE(toy_vae.config)
    vae = KernelVAE(toy_vae.config)
    vae.load_state_dict(toy_vae.state_dict())
    with torch.no_grad():  # a trained decoder with an untrained reverse model
        for mine, fresh in zip(
            vae.reverse_parameters(), untrained_r.reverse_parameters(), strict=True
        ):
            mine.copy_(fresh)
    prior = DeepWeightPrior(vae, slices_per_step=None, train_reverse=True)
    layer = _layer_holding(toy_kernel_slices(50, 7, seed=4), c_out=10)
    decoder = prior.kernel_vae.decoder_parameters()
    decoder_before = [p.clone() for p in decoder]
    trainable = [p for p in prior.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == {id(p) for p in prior.kernel_vae.reverse_parameters()}
    assert not any(p.requires_grad for p in decoder), "the decoder is the prior: never trained"

    def penalty(n: int = 20) -> float:
        with torch.no_grad():
            return sum(prior.kl(layer).item() for _ in range(n)) / n

    before = penalty()
    opt = torch.optim.Adam(trainable, lr=1e-2)
    for _ in range(100):
        opt.zero_grad()
        prior.kl(layer).backward()
        opt.step()
    after = penalty()
    w = layer.mu.reshape(-1, 7, 7)
    log_p = prior.kernel_vae.log_likelihood_iw(w, 300).sum().item()
    bound_gap = after - (-layer.entropy().item() - log_p)  # penalty minus its value at r = p(z|w)
    assert after < before - 50, f"training r did not tighten the bound: {before:.0f} -> {after:.0f}"
    assert bound_gap / len(w) < 1.5, f"gap still {bound_gap / len(w):.2f} nats/slice"
    assert all(torch.equal(a, b) for a, b in zip(decoder_before, decoder, strict=True))


def test_frozen_dwp_has_no_trainable_parameters_but_passes_gradient_to_q(toy_vae):
    prior = DeepWeightPrior(toy_vae)
    assert not any(p.requires_grad for p in prior.parameters())
    layer = BayesConv2d(2, 3, 7)
    prior.kl(layer).backward()
    assert layer.mu.grad is not None and layer.mu.grad.abs().sum() > 0
    assert layer.log_sigma2.grad is not None
    # the caller's VAE is not touched
    assert all(p.requires_grad for p in toy_vae.parameters())


def test_subsampled_dwp_estimate_is_unbiased(toy_vae):
    torch.manual_seed(4)
    layer = BayesConv2d(4, 16, 7, log_sigma2_init=-6.0).requires_grad_(False)
    with torch.no_grad():
        layer.mu.copy_(toy_kernel_slices(64, 7, seed=5).reshape(layer.mu.shape))
    exact, sub = DeepWeightPrior(toy_vae, None), DeepWeightPrior(toy_vae, 8)
    n = 300
    with torch.no_grad():
        a = np.array([exact.kl(layer).item() for _ in range(n)])
        b = np.array([sub.kl(layer).item() for _ in range(n)])
    tol = 4 * math.sqrt(a.var() / n + b.var() / n)
    assert abs(a.mean() - b.mean()) < tol, f"{a.mean():.1f} vs {b.mean():.1f} (tol {tol:.1f})"
    assert b.std() > 2 * a.std(), "subsampling should add variance; is it subsampling at all?"
    # without the M/m rescaling the estimate would be off by far more than the tolerance
    entropy = layer.entropy().item()
    assert abs(a.mean() - ((b.mean() + entropy) / 8 - entropy)) > 10 * tol


def test_dwp_refuses_a_layer_of_another_kernel_size(toy_vae):
    with pytest.raises(ValueError, match="7x7 slices"):
        DeepWeightPrior(toy_vae).kl(BayesConv2d(1, 2, 5))


def test_priors_by_layer_checks_names():
    model = BayesianCNN(small_cfg())
    assert set(priors.priors_by_layer(model, StandardNormal())) == {"conv1", "conv2"}
    with pytest.raises(ValueError, match="missing"):
        priors.priors_by_layer(model, {"conv1": StandardNormal()})
    with pytest.raises(TypeError, match="not a Prior"):
        priors.priors_by_layer(model, {"conv1": StandardNormal(), "conv2": "sn"})


# --------------------------------------------------------------------------------------------
# The ELBO and training
# --------------------------------------------------------------------------------------------


def test_negative_elbo_scales_the_data_term_by_n_over_batch(data):
    x, y = data
    model = BayesianCNN(small_cfg(log_sigma2_init=-30.0))  # q ~ a point mass: no sampling noise
    model.train()
    terms = bayes.negative_elbo(model, x[:5], y[:5], num_train=20, priors=StandardNormal())
    ce = F.cross_entropy(model.eval()(x[:5]), y[:5], reduction="sum")
    model.train()
    assert torch.allclose(terms.nll, 4 * ce, rtol=1e-4)
    assert torch.allclose(terms.loss, terms.nll + terms.kl)
    half = bayes.negative_elbo(model, x[:5], y[:5], 20, StandardNormal(), kl_weight=0.5)
    assert torch.allclose(half.loss, half.nll + 0.5 * half.kl, rtol=1e-4)


def test_negative_elbo_refuses_a_model_in_eval_mode(data):
    x, y = data
    model = BayesianCNN(small_cfg()).eval()
    with pytest.raises(ValueError, match="model.train()"):
        bayes.negative_elbo(model, x, y, len(x), StandardNormal())


def _mean_loss(model, priors, x, y, n=10) -> float:
    torch.manual_seed(123)
    model.train()
    with torch.no_grad():
        return (
            sum(bayes.negative_elbo(model, x, y, len(x), priors).loss.item() for _ in range(n)) / n
        )


@pytest.mark.parametrize(
    "prior_name", ["normal", "log-uniform", "dwp-exact", "dwp-sub", "dwp-joint"]
)
def test_a_few_steps_lower_the_negative_elbo(prior_name, data, toy_vae, vae5):
    x, y = data
    priors = {
        "normal": lambda: StandardNormal(),
        "log-uniform": lambda: LogUniform(),
        "dwp-exact": lambda: {
            "conv1": DeepWeightPrior(toy_vae, None),
            "conv2": DeepWeightPrior(vae5, None),
        },
        "dwp-sub": lambda: {
            "conv1": DeepWeightPrior(toy_vae, 2),
            "conv2": DeepWeightPrior(vae5, 8),
        },
        "dwp-joint": lambda: {
            "conv1": DeepWeightPrior(toy_vae, None, train_reverse=True),
            "conv2": DeepWeightPrior(vae5, 8, train_reverse=True),
        },
    }[prior_name]()
    alpha = isinstance(priors, LogUniform)
    cfg = small_cfg(steps=25, lr=1e-2)
    model = BayesianCNN(cfg, alpha_parametrised=alpha)
    inits.initialise(model, XavierInit())
    before = _mean_loss(model, priors, x, y)
    hist = bayes.train_bayesian_cnn(model, priors, x, y, cfg, seed=0, device="cpu")
    after = _mean_loss(model, priors, x, y)
    assert len(hist.loss) == 25 and all(math.isfinite(v) for v in hist.loss)
    assert after < before - 0.01 * abs(before), f"{prior_name}: {before:.1f} -> {after:.1f}"


def test_learning_rate_decays_linearly_and_stays_positive(data):
    x, y = data
    cfg = small_cfg(steps=10, lr=1e-3)
    hist = bayes.train_bayesian_cnn(BayesianCNN(cfg), StandardNormal(), x, y, cfg, device="cpu")
    assert hist.lr[0] == pytest.approx(1e-3)
    assert hist.lr[-1] == pytest.approx(1e-4) and hist.lr[-1] > 0
    assert np.allclose(np.diff(hist.lr), -1e-4)


def test_training_is_reproducible_with_a_seed(data):
    x, y = data
    cfg = small_cfg(steps=5, batch_size=8)
    runs = []
    for _ in range(2):
        model = inits.initialise(BayesianCNN(cfg), XavierInit(), seed=1)
        runs.append(
            bayes.train_bayesian_cnn(model, StandardNormal(), x, y, cfg, seed=7, device="cpu").loss
        )
    assert runs[0] == runs[1]


def test_det_baseline_trains_with_l2(data):
    x, y = data
    cfg = small_cfg(steps=20, lr=1e-2)
    net = inits.initialise(bayes.det_cnn(cfg), XavierInit())
    assert not any(isinstance(m, BayesConv2d) for m in net.modules())
    hist = bayes.train_det_cnn(net, x, y, cfg, device="cpu")
    assert hist.nll[-1] < 0.8 * hist.nll[0]
    l2 = sum(p.pow(2).sum() for layer in net.conv_layers().values() for p in layer.parameters())
    assert hist.loss[-1] == pytest.approx(hist.nll[-1] + cfg.det_weight_decay * hist.l2[-1])
    assert hist.l2[-1] == pytest.approx(l2.item(), rel=0.05)


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def test_evaluation_does_not_change_the_model(data):
    x, y = data
    model = BayesianCNN(small_cfg(log_sigma2_init=-1.0))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    acc = bayes.ensemble_accuracy(model, x, y, samples=4)
    mean_acc = bayes.mean_accuracy(model, x, y)
    assert 0 <= acc <= 1 and 0 <= mean_acc <= 1
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_ensemble_averages_probabilities_over_samples(data):
    x, _ = data
    model = BayesianCNN(small_cfg(log_sigma2_init=-30.0))
    model.train()  # predictive_probs must pick the mode itself
    p_mean = bayes.predictive_probs(model, x, samples=0)
    p_ens = bayes.predictive_probs(model, x, samples=3)
    assert torch.allclose(p_mean, p_ens, atol=1e-4)  # q is a point mass
    noisy = BayesianCNN(small_cfg(log_sigma2_init=0.0))
    p = bayes.predictive_probs(noisy, x, samples=50)
    assert torch.allclose(p.sum(-1), torch.ones(len(x)))
    assert not torch.allclose(p, bayes.predictive_probs(noisy, x, samples=0), atol=1e-3)


# --------------------------------------------------------------------------------------------
# Initialisations
# --------------------------------------------------------------------------------------------


def toy_bank() -> KernelBank:
    """A real KernelBank holding 50 random 7x7 and 60 random 5x5 'train' slices."""

    def layer(n: int, k: int, shift: float) -> dict:
        zeros = torch.zeros(n, dtype=torch.long)
        return {
            "slices": torch.randn(n, k, k) + shift,
            "split": torch.zeros(n, dtype=torch.int8),
            "net": zeros,
            "out_channel": zeros,
            "in_channel": zeros,
        }

    return KernelBank({"conv1": layer(50, 7, 3.0), "conv2": layer(60, 5, -3.0)}, provenance={})


def test_xavier_is_a_real_xavier_normal():
    model = inits.initialise(BayesianCNN(BayesConfig()), XavierInit(), seed=0)
    w = model.conv2.mu.detach()
    fan_in, fan_out = 32 * 25, 128 * 25
    assert w.std().item() == pytest.approx(math.sqrt(2 / (fan_in + fan_out)), rel=0.02)
    # torch's default (kaiming-uniform) is bounded by 1/sqrt(fan_in); a normal has tails
    assert w.abs().max().item() > 2 / math.sqrt(fan_in)


def test_filters_and_dwp_inits_draw_from_their_source(toy_vae, vae5):
    bank = toy_bank()
    model = inits.initialise(BayesianCNN(small_cfg()), FiltersInit(bank), seed=0)
    for layer, k in (("conv1", 7), ("conv2", 5)):
        drawn = model.bayes_layers()[layer].mu.detach().reshape(-1, 1, k * k)
        pool = bank.slices(layer).reshape(1, -1, k * k)
        assert (drawn == pool).all(-1).any(-1).all(), f"{layer}: a slice not from the bank"

    init = DWPInit({"conv1": toy_vae, "conv2": vae5})
    model = inits.initialise(BayesianCNN(small_cfg()), init, seed=3)
    expected = toy_vae.sample(4, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(model.conv1.mu.detach().reshape(-1, 7, 7), expected)


@pytest.mark.parametrize("kind", ["xavier", "filters", "dwp"])
def test_initialised_values_are_the_ones_the_optimiser_trains(kind, data, toy_vae, vae5):
    """Regression test for a pitfall of public code: weights replaced after the optimiser was
    built never train. Start from the initialisation, take one Adam step of size lr, and check
    that the trained weights moved by about lr from the initialised values."""
    x, y = data
    init = {
        "xavier": XavierInit(),
        "filters": FiltersInit(toy_bank()),
        "dwp": DWPInit({"conv1": toy_vae, "conv2": vae5}),
    }[kind]
    cfg = small_cfg(steps=1, lr=1e-3)
    model = BayesianCNN(cfg)
    params_before = {n: id(p) for n, p in model.named_parameters()}
    inits.initialise(model, init, seed=0)
    assert params_before == {n: id(p) for n, p in model.named_parameters()}
    w0 = {n: w.detach().clone() for n, w in inits.conv_weights(model).items()}
    bayes.train_bayesian_cnn(model, StandardNormal(), x, y, cfg, device="cpu")
    for name, w in inits.conv_weights(model).items():
        step = (w.detach() - w0[name]).abs()
        assert step.max() <= 1.01e-3, f"{name}: did not start from the initialised values"
        assert step.mean() > 5e-4, f"{name}: the initialised values were not trained"


def test_unknown_layer_in_dwp_init_raises(toy_vae):
    with pytest.raises(KeyError, match="no kernel VAE"):
        inits.initialise(BayesianCNN(small_cfg()), DWPInit({"conv1": toy_vae}))


def test_nan_input_or_a_diverging_lr_stops_training():
    from dwp_lib.train import NonFiniteLossError

    x, y = torch.rand(20, 1, 28, 28), torch.arange(20) % 10
    cfg = BayesConfig(channels=(4, 8), steps=5, eval_samples=1)
    bad = x.clone()
    bad[3, 0, 5, 5] = float("nan")  # refused before a step is taken
    with pytest.raises(ValueError, match="Bayesian CNN: 1 pixel.* NaN or infinite.*image 3"):
        bayes.train_bayesian_cnn(BayesianCNN(cfg), StandardNormal(), bad, y, cfg, 0, "cpu")
    with pytest.raises(ValueError, match="det CNN: 1 pixel"):
        bayes.train_det_cnn(bayes.det_cnn(cfg), bad, y, cfg, seed=0, device="cpu")
    with pytest.raises(ValueError, match="labels run from 0 to 10, outside 0..9"):
        bayes.train_det_cnn(bayes.det_cnn(cfg), x, torch.where(y == 3, 10, y), cfg, 0, "cpu")
    with pytest.raises(ValueError, match="20 images but 19 labels"):
        bayes.train_det_cnn(bayes.det_cnn(cfg), x, y[:19], cfg, 0, "cpu")
    huge = BayesConfig(channels=(4, 8), steps=30, eval_samples=1, lr=1e4)  # diverges
    with pytest.raises(NonFiniteLossError, match="Bayesian CNN: the loss is (nan|inf) at step"):
        bayes.train_bayesian_cnn(BayesianCNN(huge), StandardNormal(), x, y, huge, 0, "cpu")
    with pytest.raises(NonFiniteLossError, match="det CNN: the loss is"):
        bayes.train_det_cnn(bayes.det_cnn(huge), x * 1e38, y, huge, seed=0, device="cpu")


@pytest.mark.parametrize("slices", [256, None])
def test_the_fast_paths_give_the_same_losses_as_the_reference(monkeypatch, slices):
    """The fused local reparametrisation and the transposed convolutions computed as ordinary
    ones change how the sums are taken, not what is computed: a seeded DWP run with the authors'
    kernel VAE layers gives the same loss curve (to float rounding) on either path."""
    from dwp_lib import kernel_layers

    torch.manual_seed(0)
    vaes = {
        "conv1": KernelVAE(KernelVAEConfig.authors(7)).eval(),
        "conv2": KernelVAE(KernelVAEConfig.authors(5)).eval(),
    }
    x, y = torch.rand(20, 1, 28, 28), torch.arange(20) % 10
    cfg = BayesConfig(channels=(8, 16), steps=15, eval_samples=1, dwp_slices_per_step=slices)

    def run(fast: bool):
        monkeypatch.setattr(bayes, "FUSED_LRT", fast)
        monkeypatch.setattr(kernel_layers, "CONVT_AS_CONV", fast)
        model = inits.initialise(BayesianCNN(cfg), DWPInit(vaes), seed=1)
        priors = {k: DeepWeightPrior(v, slices) for k, v in vaes.items()}
        hist = bayes.train_bayesian_cnn(model, priors, x, y, cfg, seed=2, device="cpu")
        return torch.tensor(hist.loss, dtype=torch.float64), model

    ref, ref_model = run(False)
    fast, fast_model = run(True)
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(fast_model.conv2.mu, ref_model.conv2.mu, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("fused", [True, False])
def test_predictive_probs_is_the_same_bits_as_one_model_call_per_sample(fused, monkeypatch):
    """The evaluation computes conv1's moments once per batch and pools in channels-last; the
    ensemble must still be exactly the mean of softmaxes of plain train-mode forward passes."""
    import torch.nn.functional as F

    from dwp_lib import nets

    monkeypatch.setattr(bayes, "FUSED_LRT", fused)
    model = bayes.BayesianCNN(bayes.BayesConfig(channels=(4, 8), log_sigma2_init=-4.0))
    x = torch.rand(37, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(5)
    fast = bayes.predictive_probs(model, x, samples=3, batch_size=16)
    torch.manual_seed(5)
    model.train()
    with torch.no_grad():
        naive = torch.cat([
            sum(F.softmax(model.fc(torch.flatten(F.max_pool2d(F.leaky_relu(model.conv2(
                F.max_pool2d(F.leaky_relu(model.conv1(c), 0.01), 2)), 0.01), 2), 1)), -1)
                for _ in range(3)) / 3
            for c in x.split(16)
        ])  # fmt: skip
    assert torch.equal(fast, naive)
    h = torch.randn(5, 3, 7, 7)
    assert torch.equal(nets.max_pool2(h), F.max_pool2d(h, 2)) and nets.max_pool2(h).is_contiguous()
