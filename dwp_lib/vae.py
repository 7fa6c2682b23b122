"""The variational autoencoder, and the kernel VAEs that become the deep weight prior.

See ``book/03_vae.md``. A VAE is a latent-variable model p(x) = ∫ p(x|z) p(z) dz with
p(z) = N(0, I), fitted by maximising the evidence lower bound (ELBO, eq. ``eq-vae-elbo``)

    log p(x) >= E_q(z|x) [ log p(x|z) ] - KL( q(z|x) || N(0, I) ),

where the encoder q(z|x) = N(mu(x), diag sigma^2(x)) is *amortised*: one network gives the
variational posterior of every x. The importance-weighted bound of Burda et al. (eq.
``eq-vae-iwae``) tightens it with K samples and tends to log p(x) as K grows.

Two models share that machinery (:class:`VAE`):

- :class:`MLPVAE`: a small fully-connected VAE with a Bernoulli decoder, for the MNIST digits of
  chapter 3;
- :class:`KernelVAE`: a convolutional VAE for k x k kernel slices (ours, or the authors' exact
  layer lists: ``KernelVAEConfig.authors``) with a Gaussian
  decoder. Fitted to the slices of trained source networks, p(w) = ∫ p(w|z) p(z) dz is the deep
  weight prior, and its encoder is the reverse model r(z|w) of the auxiliary bound (chapter 4).

Shapes: a batch of slices is ``(B, k, k)``; latent codes are ``(B, d)``; per-example quantities
(ELBO, log-densities) are ``(B,)``. Sample dimensions come first: ``(S, B, d)``.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import artifacts
from .config import check_fields, preset_of, to_dict
from .device import default_device, seed_everything
from .progress import progress
from .train import check_finite

LOG_2PI = math.log(2 * math.pi)

# ------------------------------------------------------------------------------------------------
# The math, as pure functions (unit-testable against closed forms)
# ------------------------------------------------------------------------------------------------


def randn(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Standard normal noise of ``shape`` on ``like``'s device and dtype.

    A ``generator`` may live on the CPU while ``like`` is on a GPU: the noise is drawn where the
    generator lives and moved, so seeded runs give the same numbers on every device.
    """
    if generator is None:
        return torch.randn(shape, device=like.device, dtype=like.dtype)
    eps = torch.randn(shape, generator=generator, device=generator.device, dtype=like.dtype)
    return eps.to(like.device)


def rsample(mu: Tensor, logvar: Tensor, num_samples: int | None = None, generator=None) -> Tensor:
    """Reparametrised sample z = mu + sigma * eps, eps ~ N(0, I) (book/02, book/03 eq-vae-rsample).

    With ``num_samples=S`` the result has a leading sample dimension: ``(S, *mu.shape)``.
    """
    shape = tuple(mu.shape) if num_samples is None else (num_samples, *mu.shape)
    return mu + torch.exp(0.5 * logvar) * randn(shape, mu, generator)


def gaussian_log_prob(x: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """Element-wise log N(x | mu, exp(logvar)) (no sum)."""
    return -0.5 * (LOG_2PI + logvar + (x - mu) ** 2 * torch.exp(-logvar))


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z | 0, I), summed over the last dimension."""
    return -0.5 * (LOG_2PI + z**2).sum(-1)


def kl_to_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL( N(mu, diag exp(logvar)) || N(0, I) ), summed over the last dimension.

    The closed form 0.5 * sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2) (book/03, eq-vae-kl).
    """
    return 0.5 * (mu**2 + torch.exp(logvar) - 1.0 - logvar).sum(-1)


# ------------------------------------------------------------------------------------------------
# The shared machinery
# ------------------------------------------------------------------------------------------------


class VAE(nn.Module):
    """A VAE with encoder q(z|x) = N(mu(x), diag exp(logvar(x))) and prior p(z) = N(0, I).

    Subclasses define :meth:`encode` (x -> mu, logvar of shape ``(B, d)``), :meth:`decode`
    and :meth:`log_likelihood` (log p(x|z) of shape ``(..., B)`` for z of shape ``(..., B, d)``).
    This class turns them into the ELBO, the importance-weighted bound and samples.
    """

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
        """The per-example ELBO (book/03 eq-vae-elbo), shape ``(B,)``.

        The reconstruction term is a Monte-Carlo average over ``num_samples`` reparametrised
        draws of z ~ q(z|x); the KL to N(0, I) is in closed form.
        """
        x = self.check_input(x)
        mu, logvar = self.encode(x)
        z = rsample(mu, logvar, num_samples, generator)  # (S, B, d)
        reconstruction = self.log_likelihood(x, z).mean(0)
        return reconstruction - kl_to_standard_normal(mu, logvar)

    def loss(self, x: Tensor, generator=None) -> Tensor:
        """The training loss: the negative ELBO averaged over the batch (one sample of z)."""
        return -self.elbo(x, 1, generator).mean()

    @torch.no_grad()
    def log_likelihood_iw(
        self, x: Tensor, num_samples: int, generator=None, chunk: int = 256
    ) -> Tensor:
        """Importance-weighted estimate of log p(x) (Burda et al.; book/03 eq-vae-iwae), ``(B,)``.

        log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(z|x), estimates the log of the
        marginal p(x) = ∫ p(x|z) p(z) dz (book/03, eq-vae-marginal). A lower bound on log p(x)
        in expectation, equal to the ELBO's expectation for K = 1 and growing to log p(x) as K
        grows. Samples are processed ``chunk`` at a time with a running log-sum-exp, so memory
        stays bounded for large K.
        """
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        x = self.check_input(x)
        mu, logvar = self.encode(x)
        total = torch.full(mu.shape[:1], -math.inf, device=mu.device, dtype=mu.dtype)
        done = 0
        while done < num_samples:
            s = min(chunk, num_samples - done)
            z = rsample(mu, logvar, s, generator)  # (s, B, d)
            log_q = gaussian_log_prob(z, mu, logvar).sum(-1)
            log_w = self.log_likelihood(x, z) + standard_normal_log_prob(z) - log_q
            total = torch.logaddexp(total, torch.logsumexp(log_w, dim=0))
            done += s
        return total - math.log(num_samples)

    @torch.no_grad()
    def prior_sample_z(self, n: int, generator=None) -> Tensor:
        """n draws of z ~ N(0, I), shape ``(n, d)``."""
        like = next(self.parameters())
        return randn((n, self.latent_dim), like, generator)


# ------------------------------------------------------------------------------------------------
# A general VAE for images (chapter 3)
# ------------------------------------------------------------------------------------------------


@dataclass
class MLPVAEConfig:
    """A fully-connected VAE for binary images. ``hidden`` lists the widths of the encoder's
    hidden layers; the decoder uses them in reverse order.

    A 2-D latent space (``latent_dim=2``) can be drawn, coloured by digit; more latent
    dimensions fit MNIST better.
    """

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

    @property
    def input_dim(self) -> int:
        return self.image_shape[0] * self.image_shape[1]


def _mlp(widths: list[int], last_activation: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if last_activation or i < len(widths) - 2:
            layers.append(nn.ELU())
    return nn.Sequential(*layers)


class MLPVAE(VAE):
    """VAE for binary images (book/03): q(z|x) = N(mu(x), diag sigma^2(x)) and a Bernoulli decoder
    p(x|z) = prod_i Bernoulli(x_i | sigmoid(logit_i(z))) (eq-vae-bernoulli).

    Images are ``(B, H, W)`` or ``(B, 1, H, W)`` with values in {0, 1} (see :func:`binarize`).
    """

    def __init__(self, config: MLPVAEConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or MLPVAEConfig()
        self.latent_dim = cfg.latent_dim
        widths = [cfg.input_dim, *cfg.hidden]
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


# ------------------------------------------------------------------------------------------------
# The kernel VAE: the generative model of the deep weight prior
# ------------------------------------------------------------------------------------------------

# The authors' two kernel VAEs (bayesgroup/deep-weight-prior, checked against their released
# weights): layer lists, latent size, softplus variances without a floor. See
# ``KernelVAEConfig.authors`` and ``dwp_lib.release`` for their trained weights.
AUTHORS_KERNEL_VAES = {
    7: dict(
        latent_dim=2,
        hidden=32,  # their hidden_dim: the first layer's width (unused once layers are listed)
        encoder=("c3:32", "c3:64", "c3:64"),
        decoder=("t3:64", "t3:64", "t3:32"),
    ),
    5: dict(
        latent_dim=4,
        hidden=64,
        encoder=("c3p1:64", "c3p1:64", "c3:128", "c3:128"),
        decoder=("c1:128", "t3:128", "t3:128", "c1:64"),
    ),
}
VARIANCES = ("floored", "softplus")


@dataclass(frozen=True)
class LayerSpec:
    """One layer of a kernel VAE, parsed from ``"c3:64"`` (Conv2d 3x3 -> 64 channels),
    ``"c3p1:64"`` (the same, padded by 1) or ``"t3:64"`` (ConvTranspose2d 3x3 -> 64)."""

    kind: str  # "c" (Conv2d) or "t" (ConvTranspose2d)
    kernel: int
    padding: int
    channels: int

    @classmethod
    def parse(cls, text: str) -> LayerSpec:
        m = re.fullmatch(r"([ct])(\d+)(?:p(\d+))?:(\d+)", str(text).strip())
        if not m or int(m.group(2)) < 1 or int(m.group(4)) < 1:
            raise ValueError(
                f"layer {text!r}: write 'c3:64' (a 3x3 convolution to 64 channels), 'c3p1:64' "
                "(padded by 1), 't3:64' (a transposed 3x3 convolution) or 'c1:128' (1x1)"
            )
        return cls(m.group(1), int(m.group(2)), int(m.group(3) or 0), int(m.group(4)))

    def out_side(self, side: int) -> int:
        if self.kind == "c":
            return side + 2 * self.padding - self.kernel + 1
        return side - 2 * self.padding + self.kernel - 1

    def module(self, in_channels: int) -> nn.Module:
        conv = nn.Conv2d if self.kind == "c" else _ConvTranspose
        return conv(in_channels, self.channels, self.kernel, padding=self.padding)


#: Transposed convolutions computed as the equivalent ordinary convolution (same numbers to float
#: rounding, faster on a CPU); ``False`` runs torch's own, the reference kept for tests and
#: ``benchmarks/dwp_cell.py``.
CONVT_AS_CONV = True


class _ConvTranspose(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` (stride 1; same parameters and state_dict keys) computed as what it
    equals: on a 1 x 1 input a matrix product, otherwise a convolution with the kernel flipped,
    its two channel axes swapped, and padding k - 1 - p."""

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        if not CONVT_AS_CONV or self.stride != (1, 1) or self.output_padding != (0, 0):
            return super().forward(x)
        k, p = self.kernel_size[0], self.padding[0]
        if x.shape[-2:] == (1, 1) and p == 0:
            out = x.flatten(1) @ self.weight.reshape(self.in_channels, -1)
            out = out.reshape(len(x), self.out_channels, k, k)
            return out if self.bias is None else out + self.bias[:, None, None]
        w = self.weight.flip(-1, -2).transpose(0, 1)
        return F.conv2d(x, w, self.bias, padding=k - 1 - p)


@dataclass
class KernelVAEConfig:
    """Architecture of a :class:`KernelVAE` for ``kernel_size`` x ``kernel_size`` slices.

    ``encoder`` and ``decoder`` are layer lists (:class:`LayerSpec` strings; ELU after each):
    the encoder must take k x k to 1 x 1, the decoder 1 x 1 back to k x k; 1x1 heads follow
    both. Left empty, they are our default mirrored network of ``hidden`` channels
    (:attr:`paddings`); :meth:`authors` gives the authors' exact lists.

    ``variance``: how the heads give variances. ``"floored"`` (ours): the encoder's variance is
    softplus + ``z_var_floor``, the decoder's log-variance is floored smoothly at
    ``logvar_floor`` (without a floor the Gaussian likelihood of a slice the decoder
    reconstructs exactly is unbounded and training can diverge; exp(-10) is a standard deviation
    of 0.0067, below the spread of real kernels). ``"softplus"`` (the authors'): both variances
    are softplus of the head, plus ``z_var_floor`` / ``w_var_floor`` (0 in their networks).
    """

    kernel_size: int = 7
    latent_dim: int = 2
    hidden: int = 32
    encoder: tuple[str, ...] = ()
    decoder: tuple[str, ...] = ()
    variance: str = "floored"
    logvar_floor: float = -10.0
    z_var_floor: float = 1e-6  # added to the encoder's softplus variance, keeps log finite
    w_var_floor: float = 0.0  # "softplus" only: added to the decoder's variance

    def __post_init__(self) -> None:
        check_fields(self)
        k = self.kernel_size
        if not isinstance(k, int) or k < 3 or k % 2 == 0:
            raise ValueError(
                f"kernel_size must be an odd integer >= 3 (the encoder shrinks k x k to 1 x 1 "
                f"with 3x3 convolutions), got {k!r}"
            )
        if self.latent_dim < 1 or self.hidden < 1:
            raise ValueError(f"latent_dim and hidden must be >= 1, got {self}")
        if self.variance not in VARIANCES:
            raise ValueError(f"variance={self.variance!r}: use one of {', '.join(VARIANCES)}")
        if self.z_var_floor < 0 or self.w_var_floor < 0:
            raise ValueError(f"z_var_floor and w_var_floor must be >= 0, got {self}")
        self.encoder, self.decoder = tuple(self.encoder), tuple(self.decoder)
        for name, specs, start, end in (
            ("encoder", self.encoder_layers, k, 1),
            ("decoder", self.decoder_layers, 1, k),
        ):
            side = start
            for s in specs:
                side = s.out_side(side)
                if side < 1:
                    break
            if side != end:
                raise ValueError(
                    f"the {name} layers {[self._text(s) for s in specs]} map {start}x{start} to "
                    f"{side}x{side}, not {end}x{end}; change their kernels or paddings"
                )

    @staticmethod
    def _text(s: LayerSpec) -> str:
        return f"{s.kind}{s.kernel}{f'p{s.padding}' if s.padding else ''}:{s.channels}"

    @classmethod
    def for_kernel(cls, kernel_size: int, **overrides) -> KernelVAEConfig:
        """Our kernel VAE for ``kernel_size``: the authors' latent sizes (2 for 7x7, 4 for 5x5)
        and widths (32, 64), in our mirrored network (:attr:`paddings`) with floored variances.

        Not the authors' layer lists: :meth:`authors` builds those. Other odd sizes get latent
        2, hidden 32 for 3x3 (9 numbers need little), latent 4, hidden 64 otherwise.
        """
        arch = (
            dict(latent_dim=2, hidden=32)
            if kernel_size in (3, 7)
            else dict(latent_dim=4, hidden=64)
        )
        arch.update(overrides)
        return cls(kernel_size=kernel_size, **arch)

    @classmethod
    def authors(cls, kernel_size: int, **overrides) -> KernelVAEConfig:
        """The authors' kernel VAE for 7x7 or 5x5 slices, layer for layer (their released
        weights load into it, :func:`dwp_lib.release.load_released_vaes`): softplus variances,
        no floors."""
        if kernel_size not in AUTHORS_KERNEL_VAES:
            raise ValueError(
                f"the authors released kernel VAEs for 7x7 and 5x5 slices only, not {kernel_size}x"
                f"{kernel_size}; use KernelVAEConfig.for_kernel({kernel_size})"
            )
        arch = dict(AUTHORS_KERNEL_VAES[kernel_size], variance="softplus", z_var_floor=0.0)
        arch.update(overrides)
        return cls(kernel_size=kernel_size, **arch)

    @property
    def num_layers(self) -> int:
        """Number of 3x3 convolutions in our default encoder: at least 3 (the authors' depth)."""
        return max(3, (self.kernel_size - 1) // 2)

    @property
    def paddings(self) -> list[int]:
        """Padding of each convolution of our default encoder: 'same' (1) first, then 'valid' (0).

        A valid 3x3 convolution shrinks the side by 2, so k x k reaches 1 x 1 after (k-1)/2 of
        them: 7x7 needs all three (7 -> 5 -> 3 -> 1). A 5x5 slice needs two, so its first
        convolution is padded and keeps 5x5 (5 -> 5 -> 3 -> 1); a 3x3 slice has two padded
        ones (3 -> 3 -> 3 -> 1). The default decoder mirrors it: a 1x1 convolution of z, then
        transposed 3x3 convolutions with the same paddings in reverse order.
        """
        valid = (self.kernel_size - 1) // 2
        return [1] * (self.num_layers - valid) + [0] * valid

    @property
    def encoder_layers(self) -> list[LayerSpec]:
        if self.encoder:
            return [LayerSpec.parse(s) for s in self.encoder]
        return [LayerSpec("c", 3, p, self.hidden) for p in self.paddings]

    @property
    def decoder_layers(self) -> list[LayerSpec]:
        if self.decoder:
            return [LayerSpec.parse(s) for s in self.decoder]
        h = self.hidden
        return [LayerSpec("c", 1, 0, h)] + [
            LayerSpec("t", 3, p, h) for p in reversed(self.paddings)
        ]

    def describe(self) -> str:
        """``encoder c3:32 c3:64 c3:64 | decoder t3:64 t3:64 t3:32, latent 2, softplus``."""
        enc = " ".join(self._text(s) for s in self.encoder_layers)
        dec = " ".join(self._text(s) for s in self.decoder_layers)
        return f"encoder {enc} | decoder {dec}, latent {self.latent_dim}, {self.variance} variances"


#: How the authors' state_dict keys map to :class:`KernelVAE`'s (regex, replacement), in order.
#: Their encoder's variance head is ``fc_var`` (7x7) or ``fc_sigma`` (5x5), the 5x5 decoder's
#: heads are wrapped in a Sequential (``fc_mu.0``); both are softplus variances.
AUTHORS_KEY_MAP: tuple[tuple[str, str], ...] = (
    (r"^encoder\.features\.(\d+)\.", r"encoder.\1."),
    (r"^encoder\.fc_mu\.", "z_mean."),
    (r"^encoder\.fc_(?:var|sigma)\.", "z_var."),
    (r"^decoder\.decoder\.(\d+)\.", r"decoder.\1."),
    (r"^decoder\.fc_mu\.(?:0\.)?", "w_mean."),
    (r"^decoder\.fc_var\.(?:0\.)?", "w_var."),
)


def authors_key(key: str) -> str | None:
    """Our name for a key of the authors' kernel VAE state_dict (None if none maps)."""
    for pattern, repl in AUTHORS_KEY_MAP:
        new, count = re.subn(pattern, repl, key)
        if count:
            return new
    return None


def _log_softplus(x: Tensor) -> Tensor:
    """log(softplus(x)), finite where softplus underflows (log softplus(x) -> x as x -> -inf)."""
    return torch.where(x < -20.0, x, torch.log(F.softplus(x.clamp_min(-20.0))))


def _log_softplus_plus(x: Tensor, floor: float) -> Tensor:
    """log(softplus(x) + floor)."""
    return _log_softplus(x) if floor == 0 else torch.log(F.softplus(x) + floor)


def _stack(specs: list[LayerSpec], in_channels: int) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    for s in specs:
        layers += [s.module(in_channels), nn.ELU()]
        in_channels = s.channels
    return nn.Sequential(*layers), in_channels


class KernelVAE(VAE):
    """The convolutional VAE for k x k kernel slices (book/03, book/04).

    - encoder r(z|w) (the paper's reverse model, the VAE's q(z|w)): convolutions with ELU
      down to 1 x 1, then 1x1 heads for the mean and the (softplus) variance of z;
    - decoder p(w|z): (transposed) convolutions with ELU from 1 x 1 back up to k x k, then 1x1
      heads for a per-pixel mean and variance, so
      p(w|z) = prod_ij N(w_ij | mu_ij(z), sigma^2_ij(z)) (eq-dwp-decoder).

    The layer lists are :class:`KernelVAEConfig`'s: ``KernelVAEConfig.for_kernel(k)`` is ours,
    ``KernelVAEConfig.authors(k)`` the authors' exact networks (their weights load strictly,
    see :meth:`load_authors_state_dict`).
    """

    def __init__(self, config: KernelVAEConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or KernelVAEConfig()
        self.kernel_size, self.latent_dim = cfg.kernel_size, cfg.latent_dim
        self.encoder, h = _stack(cfg.encoder_layers, 1)
        self.z_mean = nn.Conv2d(h, cfg.latent_dim, 1)
        self.z_var = nn.Conv2d(h, cfg.latent_dim, 1)  # softplus -> variance of z
        self.decoder, h = _stack(cfg.decoder_layers, cfg.latent_dim)
        self.w_mean = nn.Conv2d(h, 1, 1)
        self.w_var = nn.Conv2d(h, 1, 1)  # -> (log-)variance of each pixel, see decode

    def extra_repr(self) -> str:
        return self.config.describe()

    # -- checks -----------------------------------------------------------------------------------
    def check_input(self, w: Tensor) -> Tensor:
        k = self.kernel_size
        if not isinstance(w, Tensor):
            raise TypeError(f"expected a tensor of {k}x{k} slices, got {type(w).__name__}")
        if w.dim() != 3 or tuple(w.shape[-2:]) != (k, k):
            hint = (
                f"a conv weight (c_out, c_in, {k}, {k}) becomes slices with w.reshape(-1, {k}, {k})"
                if w.dim() == 4 and tuple(w.shape[-2:]) == (k, k)
                else f"use a KernelVAE built with KernelVAEConfig.for_kernel({w.shape[-1]})"
                if w.dim() >= 2 and w.shape[-1] == w.shape[-2]
                else "slices must be square"
            )
            raise ValueError(
                f"this KernelVAE models {k}x{k} slices and expects shape (B, {k}, {k}), "
                f"got {tuple(w.shape)}; {hint}"
            )
        if not w.is_floating_point():
            raise ValueError(f"slices must be floating point, got {w.dtype}")
        return self.to_model(w)

    # -- the two networks -----------------------------------------------------------------------
    def reverse_parameters(self) -> list[nn.Parameter]:
        """The parameters of r(z|w): the encoder and its mean and variance heads."""
        return [p for m in (self.encoder, self.z_mean, self.z_var) for p in m.parameters()]

    def decoder_parameters(self) -> list[nn.Parameter]:
        """The parameters of p(w|z), the prior itself: the decoder and its two heads."""
        return [p for m in (self.decoder, self.w_mean, self.w_var) for p in m.parameters()]

    def encode(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """r(z|w) = q(z|w): slices ``(B, k, k)`` -> mean and log-variance of z, ``(B, d)`` each."""
        w = self.check_input(w)
        hid = self.encoder(w.unsqueeze(1))  # (B, h, 1, 1)
        mu = self.z_mean(hid).flatten(1)
        return mu, _log_softplus_plus(self.z_var(hid).flatten(1), self.config.z_var_floor)

    def decode(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """p(w|z): codes ``(..., d)`` -> per-pixel mean and log-variance ``(..., k, k)`` each.

        ``variance="floored"``: logvar = floor + softplus(raw - floor) >= floor (a smooth floor);
        ``"softplus"``: the variance is softplus(raw) + ``w_var_floor``.
        """
        if z.shape[-1] != self.latent_dim:
            raise ValueError(
                f"this KernelVAE has latent_dim={self.latent_dim}, got codes of shape "
                f"{tuple(z.shape)}"
            )
        lead, k, cfg = z.shape[:-1], self.kernel_size, self.config
        hid = self.decoder(self.to_model(z).reshape(-1, self.latent_dim, 1, 1))  # (M, h, k, k)
        mu = self.w_mean(hid).reshape(*lead, k, k)
        raw = self.w_var(hid)
        if cfg.variance == "softplus":
            logvar = _log_softplus_plus(raw, cfg.w_var_floor)
        else:
            logvar = cfg.logvar_floor + F.softplus(raw - cfg.logvar_floor)
        return mu, logvar.reshape(*lead, k, k)

    def log_likelihood(self, w: Tensor, z: Tensor) -> Tensor:
        """log p(w|z) summed over the k*k pixels: w ``(B, k, k)``, z ``(..., B, d)`` -> ``(..., B)``."""
        mu, logvar = self.decode(z)
        return gaussian_log_prob(w, mu, logvar).sum((-2, -1))

    def log_p_w_given_z(self, w: Tensor, z: Tensor) -> Tensor:
        """log p(w|z), the name used by the auxiliary bound (book/04); see :meth:`log_likelihood`."""
        return self.log_likelihood(self.check_input(w), z)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n slices ``(n, k, k)``: decoder means at z ~ N(0, I) (the "dwp" initialisation).

        The decoder mean, not a draw from p(w|z): the paper initialises with the mean, and the
        per-pixel noise would only add the decoder's unexplained variance.
        """
        mu, _ = self.decode(self.prior_sample_z(n, generator))
        return mu

    @torch.no_grad()
    def init_output_from_data(self, slices: Tensor) -> None:
        """Start the decoder at the data's scale: output biases = mean and log-variance of ``slices``.

        With the default initialisation the decoder starts at unit variance, ~100x the spread of
        real kernels, and spends its first hundreds of steps shrinking it. Not in the authors'
        code; ``KernelVAETrainConfig.init_from_data`` switches it off.
        """
        slices = self.check_input(slices).float()
        self.w_mean.bias.fill_(slices.mean().item())
        var = max(slices.var(0, unbiased=False).mean().item(), 1e-30)
        if self.config.variance == "softplus":
            # the raw head value whose softplus is var: log(expm1(var)), stable for small var
            var = max(var - self.config.w_var_floor, 1e-12)
            self.w_var.bias.fill_(math.log(math.expm1(var)) if var < 20 else var)
        else:
            self.w_var.bias.fill_(max(math.log(var), self.config.logvar_floor + 1.0))

    # -- the authors' released weights ---------------------------------------------------------
    def load_authors_state_dict(self, state_dict: Mapping[str, Tensor]) -> KernelVAE:
        """Load a state_dict of the authors' code (bayesgroup/deep-weight-prior) *strictly*.

        Their keys are renamed by :data:`AUTHORS_KEY_MAP` (e.g. ``encoder.features.2.weight``
        -> ``encoder.2.weight``, ``decoder.fc_var.0.bias`` -> ``w_var.bias``); every key must
        map, every parameter must be filled and every shape must agree, or the error lists what
        did not. Build the model with ``KernelVAEConfig.authors(k)``. Returns ``self``.
        """
        renamed, unknown = {}, []
        for key, value in state_dict.items():
            new = authors_key(key)
            (unknown.append(key) if new is None else renamed.__setitem__(new, value))
        own = self.state_dict()
        missing = sorted(set(own) - set(renamed))
        extra = sorted(set(renamed) - set(own)) + unknown
        shapes = [
            f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}"
            for k, v in renamed.items()
            if k in own and tuple(v.shape) != tuple(own[k].shape)
        ]
        if missing or extra or shapes:
            raise ValueError(
                "this state_dict does not fit a KernelVAE with "
                f"{self.config.describe()}: missing {missing}, unexpected {extra}, "
                f"shape mismatches {shapes}; build the model with KernelVAEConfig.authors("
                f"{self.kernel_size}) for the authors' {self.kernel_size}x{self.kernel_size} VAE"
            )
        self.load_state_dict(renamed, strict=True)
        return self

    # -- artifacts ------------------------------------------------------------------------------
    def save(self, path: str | Path, provenance: dict | None = None) -> str:
        """Save weights and config through :mod:`dwp_lib.artifacts` (hash + provenance sidecar).

        Returns the SHA-256 of the file.
        """
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        obj = {"kind": "KernelVAE", "config": to_dict(self.config), "state_dict": state}
        prov = {"model": "KernelVAE", "config": to_dict(self.config), **(provenance or {})}
        return artifacts.save_artifact(path, obj, prov)

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> KernelVAE:
        """Load a VAE written by :meth:`save`; its hash is verified first. Returned in eval mode.

        The sidecar record is attached as ``vae.record``.
        """
        obj, record = artifacts.load_artifact(path, map_location=map_location)
        if not isinstance(obj, dict) or obj.get("kind") != "KernelVAE":
            raise artifacts.ArtifactError(
                f"{path} is not a KernelVAE artifact (kind={obj.get('kind') if isinstance(obj, dict) else type(obj).__name__}); "
                "save one with KernelVAE.save"
            )
        vae = cls(KernelVAEConfig(**obj["config"]))
        # files of dwp_lib before the layer lists named two heads differently
        old = {"z_var.0.": "z_var.", "w_logvar.": "w_var."}
        state = {
            next((new + k[len(o) :] for o, new in old.items() if k.startswith(o)), k): v
            for k, v in obj["state_dict"].items()
        }
        vae.load_state_dict(state)
        vae.record = record
        return vae.to(map_location).eval()


# ------------------------------------------------------------------------------------------------
# Training (thin): Adam, linear decay that stays above zero, minibatches, a progress bar
# ------------------------------------------------------------------------------------------------


@dataclass
class VAETrainConfig:
    """How to fit a VAE: Adam with a learning rate decayed linearly over the run.

    Give the length in ``steps`` or in ``epochs`` (passes over the data), not both. With
    ``schedule="linear"`` step t (0-based, of T) uses lr * (T - t) / T: the last step still
    uses lr / T, never exactly zero (a pitfall of public code, whose last epoch learns nothing).
    """

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
        if self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"batch_size must be >= 1 and lr > 0, got {self}")

    def num_steps(self, num_examples: int) -> int:
        if self.steps is not None:
            return self.steps
        return self.epochs * math.ceil(num_examples / self.batch_size)

    @classmethod
    def preset(cls, name: str, **overrides):
        return preset_of(cls, name, **overrides)

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


@dataclass
class KernelVAETrainConfig(VAETrainConfig):
    """Training of a kernel VAE. ``paper``: the authors' 300 epochs, batch 128, Adam 1e-3.

    ``init_from_data``: start the decoder's output at the slices' mean and variance
    (:meth:`KernelVAE.init_output_from_data`); ours, off in the ``paper`` preset.
    """

    init_from_data: bool = True

    @classmethod
    def tiny(cls):
        return cls(steps=200)

    @classmethod
    def book(cls):
        return cls(steps=2000)

    @classmethod
    def paper(cls):
        return cls(steps=None, epochs=300, init_from_data=False)


@dataclass
class TrainHistory:
    """What a training run did: the loss (negative ELBO per example) and lr of every step."""

    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: float = 0.0
    config: dict = field(default_factory=dict)
    seed: int = 0

    @property
    def steps(self) -> int:
        return len(self.loss)


def linear_decay(total_steps: int):
    """The multiplier of step t for a linear decay that reaches lr / T, not 0, on the last step."""
    return lambda t: (total_steps - t) / total_steps


def fit(
    vae: VAE,
    data: Tensor,
    cfg: VAETrainConfig,
    seed: int = 0,
    device: torch.device | str | None = None,
    desc: str = "VAE",
) -> TrainHistory:
    """Fit ``vae`` to ``data`` (examples along dim 0) by minimising the negative ELBO.

    Minibatches are drawn by shuffling the data once per pass (seeded). The model is moved to
    ``device`` (default: CUDA if present) and left there, in eval mode.
    """
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
    opt = torch.optim.Adam(vae.parameters(), lr=cfg.lr)
    factor = linear_decay(total) if cfg.schedule == "linear" else (lambda t: 1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    history = TrainHistory(config=to_dict(cfg), seed=seed)
    order, pos = torch.randperm(len(data), generator=gen), 0
    start = time.perf_counter()
    bar = progress(range(total), desc=desc)
    for _ in bar:
        if pos + cfg.batch_size > len(data) and pos > 0:
            order, pos = torch.randperm(len(data), generator=gen), 0
        idx = order[pos : pos + cfg.batch_size].to(device)
        pos += cfg.batch_size
        loss = vae.loss(data[idx], gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        history.lr.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        history.loss.append(check_finite(loss.item(), desc, len(history.loss)))
        if len(history.loss) % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.2f}")
    history.seconds = time.perf_counter() - start
    vae.eval()
    return history


def train_vae(
    vae: MLPVAE,
    images: Tensor,
    cfg: VAETrainConfig | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> TrainHistory:
    """Fit an :class:`MLPVAE` to binary images ``(N, [1,] H, W)`` (book/03)."""
    return fit(vae, images, cfg or VAETrainConfig.book(), seed, device, desc="VAE")


def train_kernel_vae(
    vae: KernelVAE,
    slices: Tensor,
    cfg: KernelVAETrainConfig | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> TrainHistory:
    """Fit a :class:`KernelVAE` to a bank of slices ``(N, k, k)`` (book/03, book/04)."""
    cfg = cfg or KernelVAETrainConfig.book()
    vae.check_input(slices)
    if getattr(cfg, "init_from_data", False):
        vae.init_output_from_data(slices.to(next(vae.parameters()).device))
    return fit(
        vae,
        slices.float(),
        cfg,
        seed,
        device,
        desc=f"kernel VAE {vae.kernel_size}x{vae.kernel_size}",
    )


@dataclass
class VAEEvalConfig:
    """How to score the chapter-3 VAE on test images: how many, and the K of the IW bound."""

    test_images: int = 500
    iw_samples: tuple[int, ...] = (1, 10, 100, 500)
    batch_size: int = 250

    @classmethod
    def preset(cls, name: str, **overrides):
        return preset_of(cls, name, **overrides)

    @classmethod
    def tiny(cls):
        return cls(test_images=200, iw_samples=(1, 10, 100))

    @classmethod
    def book(cls):
        return cls()

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
    """The mean ELBO of ``x`` and the mean IW estimate of log p(x) for each K in ``num_samples``.

    Returns ``(elbo, {K: estimate})``, nats per example. The ELBO uses 1 sample of z per example
    (its expectation equals the K = 1 estimate's).
    """
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


# ------------------------------------------------------------------------------------------------
# Held-out evaluation of a kernel VAE against the simplest prior
# ------------------------------------------------------------------------------------------------


def per_pixel_gaussian_baseline(train_slices: Tensor, test_slices: Tensor) -> Tensor:
    """log-density ``(B,)`` of test slices under a diagonal Gaussian fitted to the train slices.

    Each of the k*k pixels gets its own mean and variance (maximum likelihood on the training
    slices). A kernel VAE that does not beat this has learned nothing beyond per-pixel scale.
    """
    if train_slices.dim() != 3 or test_slices.shape[-2:] != train_slices.shape[-2:]:
        raise ValueError(
            f"expected train and test slices of shape (N, k, k) with the same k, got "
            f"{tuple(train_slices.shape)} and {tuple(test_slices.shape)}"
        )
    if len(train_slices) < 2:
        raise ValueError("need at least 2 training slices to fit a variance")
    train = train_slices.double()
    mu, var = train.mean(0), train.var(0, unbiased=False).clamp_min(1e-12)
    logp = gaussian_log_prob(test_slices.double(), mu, var.log()).sum((-2, -1))
    return logp.to(test_slices.dtype)


@dataclass
class HeldOutScore:
    """Mean nats per held-out slice: VAE (ELBO and IW estimate), baseline, and the difference."""

    elbo: float
    log_likelihood_iw: float
    baseline: float
    num_slices: int
    num_samples: int

    @property
    def advantage(self) -> float:
        """Nats per slice by which the VAE's IW estimate of log p(w) beats the baseline."""
        return self.log_likelihood_iw - self.baseline

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "advantage": self.advantage}


@torch.no_grad()
def nats_above_baseline(
    vae: KernelVAE,
    train_slices: Tensor,
    test_slices: Tensor,
    num_samples: int = 100,
    batch_size: int = 1024,
    seed: int = 0,
) -> HeldOutScore:
    """Score ``vae`` on held-out slices against :func:`per_pixel_gaussian_baseline`.

    ``advantage`` > 0 means the VAE, as a density over slices, explains held-out kernels better
    than independent per-pixel Gaussians (by that many nats per slice).
    """
    vae.eval()
    gen = torch.Generator().manual_seed(seed)
    device = next(vae.parameters()).device
    elbo, iw = [], []
    for chunk in test_slices.float().split(batch_size):
        chunk = chunk.to(device)
        elbo.append(vae.elbo(chunk, num_samples=1, generator=gen).cpu())
        iw.append(vae.log_likelihood_iw(chunk, num_samples, generator=gen).cpu())
    base = per_pixel_gaussian_baseline(train_slices.float().cpu(), test_slices.float().cpu())
    return HeldOutScore(
        elbo=torch.cat(elbo).mean().item(),
        log_likelihood_iw=torch.cat(iw).mean().item(),
        baseline=base.mean().item(),
        num_slices=len(test_slices),
        num_samples=num_samples,
    )


# ------------------------------------------------------------------------------------------------
# Toy slices: a known low-dimensional family of kernels, for tests and the chapter's demo
# ------------------------------------------------------------------------------------------------


def toy_kernel_slices(
    n: int,
    kernel_size: int = 7,
    seed: int = 0,
    noise: float = 0.02,
    scale: float = 0.3,
    return_angles: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """n synthetic "edge detector" slices ``(n, k, k)``, for tests and the chapter-3 demo.

    Each slice is an odd Gabor patch, dark on one side and light on the other, with a random
    direction in [0, 2 pi) and a random contrast in [0.3, 1] x ``scale``, plus per-pixel noise
    of standard deviation ``noise``. A 2-D family (direction on a circle, contrast along a
    radius), like the oriented filters of a trained first layer. Not real kernels: those come
    from the source networks (book/05). With ``return_angles`` also returns the directions
    ``(n,)``.
    """
    gen = torch.Generator().manual_seed(seed)
    r = torch.linspace(-1.0, 1.0, kernel_size)
    y, x = torch.meshgrid(r, r, indexing="ij")
    theta = torch.rand(n, 1, 1, generator=gen) * 2 * math.pi
    contrast = 0.3 + 0.7 * torch.rand(n, 1, 1, generator=gen)
    u = x * torch.cos(theta) + y * torch.sin(theta)
    envelope = torch.exp(-(x**2 + y**2) / 0.5)
    w = scale * contrast * envelope * torch.sin(math.pi * u)
    w = w + noise * torch.randn(n, kernel_size, kernel_size, generator=gen)
    return (w, theta.flatten()) if return_angles else w
