"""The kernel VAE: p(w) = ∫ p(w|z) p(z) dz fitted to source kernels is the deep weight prior,
its encoder the reverse model r(z|w) (book/03, book/04). Slices ``(B, k, k)``, codes ``(B, d)``."""

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


def _log_softplus_plus(x: Tensor, floor: float) -> Tensor:
    """log(softplus(x) + floor); with floor 0 finite where softplus underflows (x as x -> -inf)."""
    if floor == 0:
        return torch.where(x < -20.0, x, torch.log(F.softplus(x.clamp_min(-20.0))))
    return torch.log(F.softplus(x) + floor)


class KernelVAE(VAE):
    """Convolutional VAE for k x k slices: encoder r(z|w) = q(z|w) down to 1 x 1, decoder
    p(w|z) = prod_ij N(w_ij | mu_ij(z), sigma^2_ij(z)) (eq-dwp-decoder)."""

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
        """p(w|z): codes ``(..., d)`` -> per-pixel mean and log-variance ``(..., k, k)`` each
        (``"floored"``: logvar = floor + softplus(raw - floor), a smooth floor)."""
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
        """log p(w|z) summed over pixels: w ``(B, k, k)``, z ``(..., B, d)`` -> ``(..., B)``."""
        mu, logvar = self.decode(z)
        return gaussian.log_prob(w, mu, logvar).sum((-2, -1))

    def log_p_w_given_z(self, w: Tensor, z: Tensor) -> Tensor:
        """:meth:`log_likelihood` under the auxiliary bound's name (book/04)."""
        return self.log_likelihood(self.check_input(w), z)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n slices ``(n, k, k)``: decoder means (as the paper) at z ~ N(0, I), the "dwp" init."""
        mu, _ = self.decode(self.prior_sample_z(n, generator))
        return mu

    @torch.no_grad()
    def init_output_from_data(self, slices: Tensor) -> None:
        """Output biases = mean and variance of ``slices`` (ours; unit variance costs steps)."""
        slices = self.check_input(slices).float()
        self.w_mean.bias.fill_(slices.mean().item())
        var = max(slices.var(0, unbiased=False).mean().item(), 1e-30)
        if self.config.variance == "softplus":
            # the raw head value whose softplus is var: log(expm1(var)), stable for small var
            var = max(var - self.config.w_var_floor, 1e-12)
            self.w_var.bias.fill_(math.log(math.expm1(var)) if var < 20 else var)
        else:
            self.w_var.bias.fill_(max(math.log(var), self.config.logvar_floor + 1.0))

    def save(self, path: str | Path, provenance: dict | None = None) -> str:
        """Save weights and config as an artifact (with its sidecar); return its SHA-256."""
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        obj = {"kind": "KernelVAE", "config": to_dict(self.config), "state_dict": state}
        prov = {"model": "KernelVAE", "config": to_dict(self.config), **(provenance or {})}
        return artifacts.save_artifact(path, obj, prov)

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> KernelVAE:
        """A hash-checked VAE written by :meth:`save`, in eval mode, with ``vae.record``."""
        obj, record = artifacts.load_artifact(path, map_location=map_location)
        if not isinstance(obj, dict) or obj.get("kind") != "KernelVAE":
            kind = obj.get("kind") if isinstance(obj, dict) else type(obj).__name__
            raise artifacts.ArtifactError(
                f"{path} is not a KernelVAE artifact (kind={kind}); save one with KernelVAE.save"
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
    """Training of a kernel VAE; ``paper`` is the authors' (300 epochs, no ``init_from_data``)."""

    init_from_data: bool = True

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
    k = vae.kernel_size
    return fit_vae(vae, slices.float(), cfg, seed, device, desc=f"kernel VAE {k}x{k}")


def per_pixel_gaussian_baseline(train_slices: Tensor, test_slices: Tensor) -> Tensor:
    """log-density ``(B,)`` of test slices under per-pixel Gaussians fitted to the train slices
    (maximum likelihood): a kernel VAE that does not beat it learned only per-pixel scale."""
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
    """Score ``vae`` on held-out slices against :func:`per_pixel_gaussian_baseline`."""
    vae.eval()
    gen = torch.Generator().manual_seed(seed)
    device = next(vae.parameters()).device
    elbo, iw = [], []
    for chunk in test_slices.float().split(batch_size):
        chunk = chunk.to(device)
        elbo.append(vae.elbo(chunk, num_samples=1, generator=gen).cpu())
        iw.append(vae.log_likelihood_iw(chunk, num_samples, generator=gen).cpu())
    base = per_pixel_gaussian_baseline(train_slices.float().cpu(), test_slices.float().cpu())
    elbo, iw = torch.cat(elbo).mean().item(), torch.cat(iw).mean().item()
    return HeldOutScore(elbo, iw, base.mean().item(), len(test_slices), num_samples)
