"""dwp_lib.vae, dwp_lib.kernel_layers and dwp_lib.kernel_vae: the general VAE and the kernel
VAEs (book/03)."""

from __future__ import annotations

import math

import pytest
import torch

from dwp_lib import artifacts
from dwp_lib.kernel_layers import KernelVAEConfig
from dwp_lib.kernel_vae import (
    KernelVAE,
    KernelVAETrainConfig,
    nats_above_baseline,
    per_pixel_gaussian_baseline,
    train_kernel_vae,
)
from dwp_lib.slices import toy_kernel_slices


@pytest.mark.parametrize(
    ("k", "latent", "hidden"), [(7, 2, 32), (5, 4, 64), (3, 2, 32), (9, 4, 64)]
)
def test_kernel_vae_shapes(k, latent, hidden):
    cfg = KernelVAEConfig.for_kernel(k)
    assert (cfg.latent_dim, cfg.hidden) == (latent, hidden)
    vae = KernelVAE(cfg)
    w = torch.randn(6, k, k)
    mu, logvar = vae.encode(w)
    assert mu.shape == logvar.shape == (6, latent)
    mean, wlogvar = vae.decode(mu)
    assert mean.shape == wlogvar.shape == (6, k, k)
    assert (wlogvar >= cfg.logvar_floor).all()
    # sample dimensions come first
    mean_s, _ = vae.decode(torch.randn(3, 6, latent))
    assert mean_s.shape == (3, 6, k, k)
    assert vae.log_p_w_given_z(w, mu).shape == (6,)
    assert vae.log_p_w_given_z(w, torch.randn(3, 6, latent)).shape == (3, 6)
    assert vae.elbo(w, num_samples=4).shape == (6,)
    assert vae.log_likelihood_iw(w, 7).shape == (6,)
    assert vae.sample(5).shape == (5, k, k)


def test_encoder_reaches_one_by_one():
    # 7x7: three valid convolutions; 5x5: the first is padded (5 -> 5 -> 3 -> 1)
    assert KernelVAEConfig.for_kernel(7).paddings == [0, 0, 0]
    assert KernelVAEConfig.for_kernel(5).paddings == [1, 0, 0]
    assert KernelVAEConfig.for_kernel(3).paddings == [1, 1, 0]
    vae = KernelVAE(KernelVAEConfig.for_kernel(5))
    assert vae.encoder(torch.randn(2, 1, 5, 5)).shape[-2:] == (1, 1)


def test_wrong_kernel_size_is_a_clear_error():
    vae = KernelVAE(KernelVAEConfig.for_kernel(7))
    with pytest.raises(ValueError, match=r"7x7 slices.*got \(4, 5, 5\).*for_kernel\(5\)"):
        vae.encode(torch.randn(4, 5, 5))
    with pytest.raises(ValueError, match=r"reshape\(-1, 7, 7\)"):
        vae.elbo(torch.randn(2, 3, 7, 7))
    with pytest.raises(ValueError, match="odd integer"):
        KernelVAEConfig.for_kernel(4)
    with pytest.raises(ValueError, match="latent_dim=2"):
        vae.decode(torch.randn(3, 4))
    with pytest.raises(ValueError, match="7x7"):
        train_kernel_vae(vae, torch.randn(10, 5, 5), KernelVAETrainConfig.tiny(), device="cpu")


def test_kernel_vae_training_decays_the_rate_to_a_tenth_over_ten_steps():
    vae = KernelVAE(KernelVAEConfig.for_kernel(3))
    hist = train_kernel_vae(
        vae, torch.randn(64, 3, 3), KernelVAETrainConfig(steps=10, batch_size=16), device="cpu"
    )
    assert hist.steps == 10 and hist.lr[0] == 1e-3 and math.isclose(hist.lr[-1], 1e-4)
    assert KernelVAETrainConfig.paper().num_steps(1769) == 300 * 14


def test_training_lowers_the_loss_on_a_fixed_batch():
    slices = toy_kernel_slices(128, 7, seed=0)
    vae = KernelVAE(KernelVAEConfig.for_kernel(7))
    gen = torch.Generator().manual_seed(0)
    before = -vae.elbo(slices, num_samples=32, generator=gen).mean().item()
    cfg = KernelVAETrainConfig(steps=150, batch_size=128)
    hist = train_kernel_vae(vae, slices, cfg, seed=0, device="cpu")
    after = -vae.elbo(slices, num_samples=32, generator=gen).mean().item()
    assert after < before - 20, (before, after)
    assert sum(hist.loss[-10:]) < sum(hist.loss[:10])


def test_training_is_reproducible_with_a_seed():
    slices = toy_kernel_slices(256, 5, seed=1)
    cfg = KernelVAETrainConfig(steps=20, batch_size=64)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)  # the initialisation
        vae = KernelVAE(KernelVAEConfig.for_kernel(5))
        runs.append(train_kernel_vae(vae, slices, cfg, seed=3, device="cpu").loss)
    assert len(runs[0]) == 20 and runs[0] == runs[1]


@pytest.fixture(scope="module")
def fitted_vae():
    torch.manual_seed(0)
    slices = toy_kernel_slices(2048, 7, seed=0)
    vae = KernelVAE(KernelVAEConfig.for_kernel(7))
    train_kernel_vae(vae, slices, KernelVAETrainConfig(steps=300), seed=0, device="cpu")
    return vae, slices


def _elbo_and_iw(vae, w, ks):
    gen = torch.Generator().manual_seed(1)
    elbo = vae.elbo(w, num_samples=64, generator=gen).mean().item()
    return elbo, {k: vae.log_likelihood_iw(w, k, generator=gen).mean().item() for k in ks}


def test_iw_estimate_above_elbo_and_growing(fitted_vae):
    w = toy_kernel_slices(256, 7, seed=5)
    # an untrained encoder is a poor posterior: a wide gap that closes as K grows
    torch.manual_seed(0)
    fresh = KernelVAE(KernelVAEConfig.for_kernel(7))
    fresh.init_output_from_data(w)
    elbo, iw = _elbo_and_iw(fresh, w, (1, 10, 100))
    assert abs(iw[1] - elbo) < 0.5, (iw[1], elbo)  # K = 1 estimates the ELBO
    assert elbo + 0.5 < iw[10] < iw[100] - 0.1, (elbo, iw)
    # a trained encoder is close to the posterior: the gap is small but still positive
    elbo, iw = _elbo_and_iw(fitted_vae[0], w, (1, 10, 50))
    assert abs(iw[1] - elbo) < 0.5, (iw[1], elbo)
    assert elbo < iw[10] < iw[50], (elbo, iw)
    # chunked log-sum-exp equals the one-shot one
    g1, g2 = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    torch.testing.assert_close(
        fitted_vae[0].log_likelihood_iw(w[:8], 50, generator=g1, chunk=7),
        fitted_vae[0].log_likelihood_iw(w[:8], 50, generator=g2, chunk=50),
    )


def test_fitted_vae_beats_per_pixel_gaussian(fitted_vae):
    vae, slices = fitted_vae
    score = nats_above_baseline(vae, slices, toy_kernel_slices(256, 7, seed=9), num_samples=50)
    assert score.advantage > 5.0, score.as_dict()
    assert score.log_likelihood_iw >= score.elbo


def test_per_pixel_baseline_is_the_diagonal_gaussian_mle():
    train = torch.randn(1000, 3, 3) * 0.5 + 1.0
    test = torch.randn(7, 3, 3)
    mu, sd = train.mean(0), train.std(0, unbiased=False)
    ref = torch.distributions.Normal(mu, sd).log_prob(test).sum((-2, -1))
    torch.testing.assert_close(per_pixel_gaussian_baseline(train, test), ref)
    with pytest.raises(ValueError, match="same k"):
        per_pixel_gaussian_baseline(train, torch.randn(2, 5, 5))


def test_save_load_round_trip(tmp_path, fitted_vae):
    vae, slices = fitted_vae
    path = tmp_path / "vae7.pt"
    digest = vae.save(path, provenance={"bank": "toy"})
    loaded = KernelVAE.load(path)
    assert loaded.config == vae.config
    assert loaded.record["sha256"] == digest
    assert loaded.record["provenance"]["bank"] == "toy"
    for (k, a), (_, b) in zip(vae.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    w = slices[:16]
    assert torch.equal(vae.encode(w)[0], loaded.encode(w)[0])
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert torch.equal(vae.sample(4, generator=g1), loaded.sample(4, generator=g2))
    # a corrupted file is refused with the artifact module's error
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(artifacts.CorruptArtifactError):
        KernelVAE.load(path)


# -- the general VAE of chapter 3 ------------------------------------------------------------


def _toy_images(n: int, seed: int = 0) -> torch.Tensor:
    """Binary 28x28 'images': two classes of bars, so a VAE has something to learn."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 28, 28)
    rows = torch.randint(4, 24, (n,), generator=g)
    vertical = torch.rand(n, generator=g) < 0.5
    for i in range(n):
        if vertical[i]:
            x[i, :, rows[i] - 2 : rows[i] + 2] = 1
        else:
            x[i, rows[i] - 2 : rows[i] + 2, :] = 1
    return x


def test_mlp_vae_shapes_and_input_checks():
    from dwp_lib.vae import MLPVAE, MLPVAEConfig, binarize

    model = MLPVAE(MLPVAEConfig(hidden=(32, 16), latent_dim=3))
    x = _toy_images(5)
    for xs in (x, x.unsqueeze(1), x.flatten(1)):
        mu, logvar = model.encode(xs)
        assert mu.shape == logvar.shape == (5, 3)
    assert model.elbo(x, num_samples=4).shape == (5,)
    assert model.log_likelihood_iw(x, 6).shape == (5,)
    assert model.reconstruct(x).shape == (5, 28, 28)
    s = model.sample(4)
    assert s.shape == (4, 28, 28) and (s >= 0).all() and (s <= 1).all()
    with pytest.raises(ValueError, match=r"expected images.*got \(5, 32, 32\)"):
        model.encode(torch.zeros(5, 32, 32))
    with pytest.raises(ValueError, match="binarize"):
        model.encode(torch.zeros(5, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        binarize(torch.full((2, 28, 28), 255.0))
    assert binarize(torch.tensor([[0.2, 0.7]])).tolist() == [[0.0, 1.0]]


def test_mlp_vae_training_and_iw_curve():
    from dwp_lib.vae import (
        MLPVAE,
        MLPVAEConfig,
        VAETrainConfig,
        importance_weighted_curve,
        train_vae,
    )

    x = _toy_images(512)
    torch.manual_seed(0)
    model = MLPVAE(MLPVAEConfig(hidden=64, latent_dim=2))
    before, _ = importance_weighted_curve(model, x, (1,))
    hist = train_vae(model, x, VAETrainConfig(steps=150, batch_size=64), seed=0, device="cpu")
    elbo, iw = importance_weighted_curve(model, x, (1, 20), seed=1)
    assert elbo > before + 100, (before, elbo)
    assert iw[20] > elbo and hist.steps == 150


def test_presets_exist():
    from dwp_lib.vae import VAEEvalConfig, VAETrainConfig

    for name in ("tiny", "book", "paper"):
        assert VAETrainConfig.preset(name).num_steps(60_000) > 0
        assert KernelVAETrainConfig.preset(name).num_steps(1769) > 0
        assert len(VAEEvalConfig.preset(name).iw_samples) >= 3
    assert KernelVAETrainConfig.paper().init_from_data is False
    with pytest.raises(ValueError, match="exactly one"):
        KernelVAETrainConfig(steps=10, epochs=3)


def test_chapter3_figures(fitted_vae):
    """Each figure of chapter 3 draws its panels, series and images from the data given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from dwp_lib import plots
    from dwp_lib.train import History

    vae, slices = fitted_vae

    def image(ax):
        return ax.images[0].get_array()

    # training: the smoothed minibatch ELBO (200 steps, window 50) and the test ELBO
    fig = plots.plot_vae_training(History(loss=[3.0 - 0.01 * i for i in range(200)]), -1.0)
    (ax,) = fig.axes
    curve, test = ax.lines
    assert len(curve.get_xdata()) == 151 and curve.get_xdata()[0] == 49
    np.testing.assert_allclose(curve.get_ydata()[-1], -(3.0 - 0.01 * 174.5))
    assert list(test.get_ydata()) == [-1.0, -1.0]
    assert "test ELBO -1.0" in [t.get_text() for t in ax.get_legend().get_texts()]

    fig = plots.plot_reconstructions(torch.rand(6, 28, 28), torch.rand(6, 28, 28))
    assert [a.get_ylabel() for a in fig.axes] == ["data", "reconstruction"]
    assert all(image(a).shape == (28, 6 * 28) for a in fig.axes)

    images = torch.rand(20, 28, 28)
    fig = plots.plot_image_samples(images, ncols=10)
    assert [a.get_ylabel() for a in fig.axes] == ["samples", ""]
    np.testing.assert_allclose(image(fig.axes[1])[:, :28], images[10].numpy())
    fig = plots.plot_image_samples(images, ncols=10, row_titles=["first", "second"])
    assert [a.get_ylabel() for a in fig.axes] == ["first", "second"]
    with pytest.raises(ValueError, match="2 rows of 10 images but 1 row_titles"):
        plots.plot_image_samples(images, ncols=10, row_titles=["only one"])

    # latent space: classes get one scatter and a legend, floats a colour bar
    z = torch.randn(50, 2)
    classes = torch.randint(0, 10, (50,))
    fig = plots.plot_vae_latent_space(z, classes)
    (ax,) = fig.axes
    (points,) = ax.collections
    assert len(points.get_offsets()) == 50
    np.testing.assert_allclose(np.sort(points.get_offsets()[:, 0]), np.sort(z[:, 0].numpy()))
    assert len(ax.get_legend().get_texts()) == len(classes.unique())
    fig = plots.plot_vae_latent_space(z, torch.rand(50), labels="angle")
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "angle"

    fig = plots.plot_latent_manifold(torch.rand(4, 4, 28, 28), extent=2.0)
    (ax,) = fig.axes
    assert image(ax).shape == (4 * 28, 4 * 28)
    assert ax.images[0].get_extent() == [-2.0, 2.0, -2.0, 2.0]
    assert ax.get_title() == "decoder means on a 4x4 grid of z"

    fig = plots.plot_iw_bounds({1: -3.0, 10: -2.5, 100: -2.4}, elbo=-3.0)
    (ax,) = fig.axes
    np.testing.assert_allclose(ax.lines[0].get_xydata(), [[1, -3.0], [10, -2.5], [100, -2.4]])
    assert ax.get_xscale() == "log" and len(ax.lines) == 2

    fig = plots.plot_kernel_vae_samples(slices[:16], vae.sample(16))
    assert [a.get_title() for a in fig.axes] == ["training slices (7x7)", "kernel-VAE samples"]
    assert all(image(a).shape == (2 * 8 - 1, 8 * 8 - 1) for a in fig.axes)  # 16 in rows of 8

    with pytest.raises(ValueError, match="2-D codes"):
        plots.plot_vae_latent_space(torch.randn(5, 3), torch.zeros(5, dtype=torch.long))
    plt.close("all")


def test_reverse_and_decoder_parameters_split_the_kernel_vae():
    """r(z|w) and p(w|z) share no parameter and together are the whole VAE."""
    vae = KernelVAE(KernelVAEConfig.for_kernel(5))
    rev = {id(p) for p in vae.reverse_parameters()}
    dec = {id(p) for p in vae.decoder_parameters()}
    assert rev and dec and not rev & dec
    assert rev | dec == {id(p) for p in vae.parameters()}


def test_non_finite_loss_stops_training_with_a_clear_error():
    from dwp_lib.train import NonFiniteLossError

    slices = toy_kernel_slices(64, 7, seed=0)
    vae = KernelVAE(KernelVAEConfig.for_kernel(7, hidden=4))
    cfg = KernelVAETrainConfig(steps=5, batch_size=64)
    with pytest.raises(
        NonFiniteLossError, match=r"kernel VAE 7x7: the loss is (nan|inf) at step 0"
    ):
        train_kernel_vae(vae, slices * 1e30, cfg, seed=0)  # finite data, a loss that overflows
    slices[3, 2, 2] = float("nan")  # one NaN is refused before training starts
    with pytest.raises(ValueError, match=r"1 of 64 training examples hold NaN.*example 3"):
        train_kernel_vae(vae, slices, cfg, seed=0)


def test_a_vae_saved_by_the_previous_version_still_loads(tmp_path):
    vae = KernelVAE(KernelVAEConfig.for_kernel(5, hidden=8))
    path = tmp_path / "old.pt"
    state = {
        k.replace("z_var.", "z_var.0.").replace("w_var.", "w_logvar."): v
        for k, v in vae.state_dict().items()
    }
    config = {"kernel_size": 5, "latent_dim": 4, "hidden": 8, "logvar_floor": -10.0}
    artifacts.save_artifact(path, {"kind": "KernelVAE", "config": config, "state_dict": state})
    again = KernelVAE.load(path)
    z = torch.randn(3, 4)
    torch.testing.assert_close(again.decode(z)[1], vae.eval().decode(z)[1])
