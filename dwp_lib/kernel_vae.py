"""The kernel VAE: the generative model of the deep weight prior (book/03, book/04).

:class:`KernelVAE` is a convolutional VAE for k x k kernel slices with a Gaussian decoder, built
from a :class:`dwp_lib.kernel_layers.KernelVAEConfig` (ours, or the authors' exact layers).
Fitted to the slices of trained source networks (:func:`train_kernel_vae`),
p(w) = ∫ p(w|z) p(z) dz is the deep weight prior, and its encoder is the reverse model r(z|w)
of the auxiliary bound (chapter 4). :func:`nats_above_baseline` scores a VAE on held-out slices
against a per-pixel Gaussian; :func:`dwp_lib.slices.toy_kernel_slices` is a known family of kernels for tests
and the chapter's demo.

Shapes: a batch of slices is ``(B, k, k)``; latent codes are ``(B, d)``; per-example quantities
are ``(B,)``. Sample dimensions come first: ``(S, B, d)``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import artifacts, gaussian
from .config import to_dict
from .kernel_layers import KernelVAEConfig, build_stack
from .train import History
from .vae import VAE, VAETrainConfig, fit_vae


def _log_softplus(x: Tensor) -> Tensor:
    """log(softplus(x)), finite where softplus underflows (log softplus(x) -> x as x -> -inf)."""
    return torch.where(x < -20.0, x, torch.log(F.softplus(x.clamp_min(-20.0))))


def _log_softplus_plus(x: Tensor, floor: float) -> Tensor:
    """log(softplus(x) + floor)."""
    return _log_softplus(x) if floor == 0 else torch.log(F.softplus(x) + floor)


class KernelVAE(VAE):
    """The convolutional VAE for k x k kernel slices (book/03, book/04).

    - encoder r(z|w) (the paper's reverse model, the VAE's q(z|w)): convolutions with ELU
      down to 1 x 1, then 1x1 heads for the mean and the (softplus) variance of z;
    - decoder p(w|z): (transposed) convolutions with ELU from 1 x 1 back up to k x k, then 1x1
      heads for a per-pixel mean and variance, so
      p(w|z) = prod_ij N(w_ij | mu_ij(z), sigma^2_ij(z)) (eq-dwp-decoder).

    The layer lists are :class:`KernelVAEConfig`'s: ``KernelVAEConfig.for_kernel(k)`` is ours,
    ``KernelVAEConfig.authors(k)`` the authors' exact networks (their weights load strictly,
    see :func:`dwp_lib.authors_vaes.load_authors_state_dict`).
    """

    def __init__(self, config: KernelVAEConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or KernelVAEConfig()
        self.kernel_size, self.latent_dim = cfg.kernel_size, cfg.latent_dim
        self.encoder, h = build_stack(cfg.encoder_layers, 1)
        self.z_mean = nn.Conv2d(h, cfg.latent_dim, 1)
        self.z_var = nn.Conv2d(h, cfg.latent_dim, 1)  # softplus -> variance of z
        self.decoder, h = build_stack(cfg.decoder_layers, cfg.latent_dim)
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
        return gaussian.log_prob(w, mu, logvar).sum((-2, -1))

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


def train_kernel_vae(
    vae: KernelVAE,
    slices: Tensor,
    cfg: KernelVAETrainConfig | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> History:
    """Fit a :class:`KernelVAE` to a bank of slices ``(N, k, k)`` (book/03, book/04)."""
    cfg = cfg or KernelVAETrainConfig.book()
    vae.check_input(slices)
    if getattr(cfg, "init_from_data", False):
        vae.init_output_from_data(slices.to(next(vae.parameters()).device))
    return fit_vae(
        vae,
        slices.float(),
        cfg,
        seed,
        device,
        desc=f"kernel VAE {vae.kernel_size}x{vae.kernel_size}",
    )


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
    logp = gaussian.log_prob(test_slices.double(), mu, var.log()).sum((-2, -1))
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
