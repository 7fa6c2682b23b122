"""The variational autoencoder (book/03): :class:`VAE`, shared with the kernel VAE of the deep
weight prior, the MNIST VAE and training. Latent codes ``(B, d)``, samples first ``(S, B, d)``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import gaussian
from .config import Presets, check_fields, to_dict
from .device import default_device, seed_everything
from .gaussian import randn, rsample, standard_log_prob
from .train import History, fit, linear_decay


class VAE(nn.Module):
    """A VAE with encoder q(z|x) = N(mu(x), diag exp(logvar(x))) and prior p(z) = N(0, I):
    subclasses define :meth:`encode`, :meth:`decode` and :meth:`log_likelihood`."""

    latent_dim: int

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover (abstract)
        raise NotImplementedError

    def decode(self, z: Tensor):  # pragma: no cover (abstract)
        raise NotImplementedError

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:  # pragma: no cover (abstract)
        raise NotImplementedError

    def check_input(self, x: Tensor) -> Tensor:
        """Raise a clear error if ``x`` is not a batch this model can score; return it."""
        return x

    def to_model(self, t: Tensor) -> Tensor:
        """``t`` on the model's device (a no-op when it is there already)."""
        return t.to(next(self.parameters()).device)

    def elbo(self, x: Tensor, num_samples: int = 1, generator=None) -> Tensor:
        """The per-example ELBO (book/03 eq-vae-elbo), ``(B,)``: the reconstruction term averaged
        over ``num_samples`` draws of z ~ q(z|x), the KL to N(0, I) in closed form."""
        x = self.check_input(x)
        mu, logvar = self.encode(x)
        z = rsample(mu, logvar, num_samples, generator)  # (S, B, d)
        reconstruction = self.log_likelihood(x, z).mean(0)
        return reconstruction - gaussian.kl_to_standard(mu, logvar).sum(-1)

    def loss(self, x: Tensor, generator=None) -> Tensor:
        """The training loss: the negative ELBO averaged over the batch (one sample of z)."""
        return -self.elbo(x, 1, generator).mean()

    @torch.no_grad()
    def log_likelihood_iw(
        self, x: Tensor, num_samples: int, generator=None, chunk: int = 256
    ) -> Tensor:
        """log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(z|x) (Burda et al.; book/03
        eq-vae-iwae), ``(B,)``: a lower bound on log p(x) (book/03, eq-vae-marginal) that rises
        to it with K. ``chunk`` samples at a time bound the memory."""
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        x = self.check_input(x)
        mu, logvar = self.encode(x)
        total = torch.full(mu.shape[:1], -math.inf, device=mu.device, dtype=mu.dtype)
        for start in range(0, num_samples, chunk):
            z = rsample(mu, logvar, min(chunk, num_samples - start), generator)  # (s, B, d)
            log_q = gaussian.log_prob(z, mu, logvar).sum(-1)
            log_w = self.log_likelihood(x, z) + standard_log_prob(z) - log_q
            total = torch.logaddexp(total, torch.logsumexp(log_w, dim=0))
        return total - math.log(num_samples)

    @torch.no_grad()
    def prior_sample_z(self, n: int, generator=None) -> Tensor:
        """n draws of z ~ N(0, I), shape ``(n, d)``."""
        return randn((n, self.latent_dim), next(self.parameters()), generator)


@dataclass
class MLPVAEConfig:
    """Fully-connected VAE for binary images; ``hidden``: encoder widths, reversed in the decoder."""

    image_shape: tuple[int, int] = (28, 28)
    hidden: tuple[int, ...] = (512, 256)
    latent_dim: int = 2

    def __post_init__(self) -> None:
        self.image_shape = tuple(self.image_shape)
        self.hidden = (self.hidden,) if isinstance(self.hidden, int) else tuple(self.hidden)
        if len(self.image_shape) != 2 or min(self.image_shape) < 1:
            raise ValueError(f"image_shape must be (height, width), got {self.image_shape}")
        if not self.hidden or min(self.hidden) < 1 or self.latent_dim < 1:
            raise ValueError(f"hidden widths and latent_dim must be >= 1, got {self}")


def _mlp(widths: list[int], last_activation: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if last_activation or i < len(widths) - 2:
            layers.append(nn.ELU())
    return nn.Sequential(*layers)


class MLPVAE(VAE):
    """VAE for binary images ``(B, [1,] H, W)`` (book/03) with a Bernoulli decoder
    p(x|z) = prod_i Bernoulli(x_i | sigmoid(logit_i(z))) (eq-vae-bernoulli)."""

    def __init__(self, config: MLPVAEConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or MLPVAEConfig()
        self.latent_dim = cfg.latent_dim
        widths = [cfg.image_shape[0] * cfg.image_shape[1], *cfg.hidden]
        self.encoder = _mlp(widths, last_activation=True)
        self.z_mean = nn.Linear(widths[-1], cfg.latent_dim)
        self.z_logvar = nn.Linear(widths[-1], cfg.latent_dim)
        self.decoder = _mlp([cfg.latent_dim, *reversed(widths)], last_activation=False)

    def check_input(self, x: Tensor) -> Tensor:
        """Images ``(B, H, W)``, ``(B, 1, H, W)`` or flattened ``(B, H*W)`` -> ``(B, H*W)``."""
        h, w = self.config.image_shape
        ok = isinstance(x, Tensor) and (
            (x.dim() == 2 and x.shape[1] == h * w)
            or (x.dim() == 3 and tuple(x.shape[1:]) == (h, w))
            or (x.dim() == 4 and tuple(x.shape[1:]) == (1, h, w))
        )
        if not ok:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"expected images (B, {h}, {w}), (B, 1, {h}, {w}) or (B, {h * w}), got {shape}"
            )
        if not x.is_floating_point():
            raise ValueError(
                f"images must be floats in {{0, 1}}, got {x.dtype}; use binarize(ds.float_images())"
            )
        return self.to_model(x.reshape(len(x), h * w))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """q(z|x) = N(mu(x), diag sigma^2(x)), the amortised encoder (book/03, eq-vae-encoder):
        images -> mean and log-variance of z, ``(B, d)`` each."""
        hid = self.encoder(self.check_input(x))
        return self.z_mean(hid), self.z_logvar(hid)

    def decode(self, z: Tensor) -> Tensor:
        """p(x|z): codes ``(..., d)`` -> pixel logits ``(..., H*W)``."""
        return self.decoder(self.to_model(z))

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x|z) summed over pixels: x ``(B, H*W)``, z ``(..., B, d)`` -> ``(..., B)``."""
        logits = self.decode(z)
        x = x.expand_as(logits)
        return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)

    @torch.no_grad()
    def mean_images(self, z: Tensor) -> Tensor:
        """Pixel probabilities at codes ``(n, d)``, as images ``(n, H, W)``."""
        return torch.sigmoid(self.decode(z)).reshape(-1, *self.config.image_shape)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Decoder means at z = mu(x): the VAE's reconstructions of ``x``, ``(B, H, W)``."""
        return self.mean_images(self.encode(x)[0])

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n new images ``(n, H, W)``: pixel probabilities at z ~ N(0, I)."""
        return self.mean_images(self.prior_sample_z(n, generator))


def binarize(images: Tensor, threshold: float = 0.5) -> Tensor:
    """Grey images in [0, 1] -> {0, 1} floats, so the Bernoulli likelihood is a probability."""
    if images.min() < 0 or images.max() > 1:
        raise ValueError("binarize expects intensities in [0, 1]; use ImageSet.float_images()")
    return (images > threshold).float()


@dataclass
class VAETrainConfig(Presets):
    """Adam on a VAE, its rate decayed linearly (not to 0) or fixed, for ``steps`` or ``epochs``."""

    steps: int | None = 2000
    epochs: int | None = None
    batch_size: int = 128
    lr: float = 1e-3
    schedule: str = "linear"  # "linear" or "constant"

    def __post_init__(self) -> None:
        check_fields(self)
        if (self.steps is None) == (self.epochs is None):
            raise ValueError(f"give exactly one of steps and epochs, got {self}")
        if self.schedule not in ("linear", "constant"):
            raise ValueError(f"schedule must be 'linear' or 'constant', got {self.schedule!r}")

    def num_steps(self, num_examples: int) -> int:
        if self.steps is not None:
            return self.steps
        return self.epochs * math.ceil(num_examples / self.batch_size)

    # The MNIST VAE of chapter 3 (60,000 images; batch 128 is 469 steps per epoch).
    @classmethod
    def tiny(cls):
        return cls(steps=200)

    @classmethod
    def book(cls):
        return cls(steps=3000)

    @classmethod
    def paper(cls):
        return cls(steps=None, epochs=100)


def fit_vae(
    vae: VAE,
    data: Tensor,
    cfg: VAETrainConfig,
    seed: int = 0,
    device: torch.device | str | None = None,
    desc: str = "VAE",
) -> History:
    """Fit ``vae`` to ``data`` ``(N, ...)``: the negative ELBO on minibatches of a seeded shuffle
    per pass. The model is left on ``device`` (default: CUDA if present), in eval mode."""
    if len(data) == 0:
        raise ValueError("cannot fit a VAE to an empty data set")
    device = torch.device(device) if device is not None else default_device()
    seed_everything(seed)
    gen = torch.Generator().manual_seed(seed)  # shuffling and the reparametrised noise
    vae.to(device).train()
    vae.check_input(data[:1].to(device))
    if not data.is_floating_point():
        raise ValueError(f"{desc}: the training data must be floats, got {data.dtype}")
    finite = torch.isfinite(data.reshape(len(data), -1)).all(1)
    if not bool(finite.all()):
        raise ValueError(
            f"{desc}: {int((~finite).sum())} of {len(data)} training examples hold NaN or "
            f"infinite values (the first is example {int((~finite).nonzero()[0])}); "
            "remove them before fitting"
        )
    data = data.to(device)
    total = cfg.num_steps(len(data))
    history = History(config=to_dict(cfg), seed=seed)
    batch = {"order": torch.randperm(len(data), generator=gen), "pos": 0}

    def loss_at(step: int) -> Tensor:
        if batch["pos"] + cfg.batch_size > len(data) and batch["pos"] > 0:
            batch["order"], batch["pos"] = torch.randperm(len(data), generator=gen), 0
        idx = batch["order"][batch["pos"] : batch["pos"] + cfg.batch_size].to(device)
        batch["pos"] += cfg.batch_size
        return vae.loss(data[idx], gen)

    decay = partial(linear_decay, total_steps=total, exact_ratio=True)
    schedule = decay if cfg.schedule == "linear" else None
    log = fit(vae.parameters(), loss_at, total, cfg.lr, desc, schedule=schedule, postfix=".2f")
    history.loss, history.lr, history.seconds = log.loss, log.lr, log.seconds
    vae.eval()
    return history


def train_vae(
    vae: MLPVAE,
    images: Tensor,
    cfg: VAETrainConfig | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> History:
    """Fit an :class:`MLPVAE` to binary images ``(N, [1,] H, W)`` (book/03)."""
    return fit_vae(vae, images, cfg or VAETrainConfig.book(), seed, device, desc="VAE")


@dataclass
class VAEEvalConfig(Presets):
    """How to score the chapter-3 VAE on test images: how many, and the K of the IW bound."""

    test_images: int = 500
    iw_samples: tuple[int, ...] = (1, 10, 100, 500)
    batch_size: int = 250

    @classmethod
    def tiny(cls):
        return cls(test_images=200, iw_samples=(1, 10, 100))

    @classmethod
    def paper(cls):
        # Burda et al. report K = 5000 on the whole test set
        return cls(test_images=10_000, iw_samples=(1, 10, 100, 1000, 5000))


@torch.no_grad()
def importance_weighted_curve(
    vae: VAE,
    x: Tensor,
    num_samples: tuple[int, ...] = (1, 10, 100),
    batch_size: int = 250,
    seed: int = 0,
) -> tuple[float, dict[int, float]]:
    """``(elbo, {K: estimate})``: the mean ELBO of ``x`` (one z each), the mean IW log p(x) by K."""
    vae.eval()
    device = next(vae.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    elbo, iw = [], {k: [] for k in num_samples}
    for chunk in x.split(batch_size):
        chunk = chunk.to(device)
        elbo.append(vae.elbo(chunk, 1, gen).cpu())
        for k in num_samples:
            iw[k].append(vae.log_likelihood_iw(chunk, k, gen).cpu())
    return torch.cat(elbo).mean().item(), {k: torch.cat(v).mean().item() for k, v in iw.items()}
