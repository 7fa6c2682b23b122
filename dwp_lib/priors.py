"""The priors of the Bayesian CNN, behind one interface: ``prior.kl(layer)`` (book/04, book/05)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from . import gaussian
from .kernel_vae import KernelVAE

if TYPE_CHECKING:
    from .bayes import BayesConv2d, BayesianCNN

# Random slices of a layer in the DWP penalty per step (None: all), chosen by accuracy per
# CPU-second on the n = 50 experiment (benchmarks/README.md)
DWP_SLICES_PER_STEP: int | None = 256


class Prior(nn.Module):
    """A prior over a :class:`BayesConv2d`'s weights: :meth:`kl` is the layer's KL(q || p) (book/04,
    eq-kl-q-p), closed form or an unbiased estimate of an upper bound."""

    alpha_parametrised: bool = False

    def kl(self, layer: BayesConv2d) -> Tensor:  # pragma: no cover (abstract)
        raise NotImplementedError


class StandardNormal(Prior):
    """p(w) = N(0, 1) for every weight; KL(q || p) in closed form (book/01, eq-kl-normal)."""

    def kl(self, layer: BayesConv2d) -> Tensor:
        return gaussian.kl_to_standard(layer.mu, layer.log_var()).sum()


# Kingma, Salimans & Welling (2015): -KL(q || log-uniform) ~ const + 0.5 log a + c1 a + c2 a^2 + c3 a^3
LOG_UNIFORM_C = (1.16145124, -1.50204118, 0.58629921)


def kl_log_uniform(log_alpha: Tensor) -> Tensor:
    """KL(N(mu, alpha mu^2) || log-uniform) per weight, up to the (improper prior's) constant:
    the approximation of Kingma et al. (2015), for alpha <= 1 (book/05)."""
    c1, c2, c3 = LOG_UNIFORM_C
    alpha = torch.exp(log_alpha)
    return -(0.5 * log_alpha + c1 * alpha + c2 * alpha**2 + c3 * alpha**3)


class LogUniform(Prior):
    """p(|w|) ~ 1/|w| of variational dropout (book/05), for alpha-parametrised layers only."""

    alpha_parametrised = True

    def kl(self, layer: BayesConv2d) -> Tensor:
        if not layer.alpha_parametrised:  # the authors' code silently returned a KL of 0
            raise ValueError(
                "the log-uniform prior needs the alpha parametrisation sigma^2 = alpha * mu^2; "
                "build the network with BayesianCNN(cfg, alpha_parametrised=True) "
                "(LogUniform.alpha_parametrised says so)"
            )
        return kl_log_uniform(layer.log_alpha()).sum()


class DeepWeightPrior(Prior):
    """The deep weight prior of one layer: p(w) = prod_slices ∫ p(w_s|z) N(z|0, I) dz (book/04).

    :meth:`kl` estimates the auxiliary bound -H(q) - sum_s E_q(w_s) [ aux_bound(w_s) ] (book/04,
    eq-dwp-aux; book/05, eq-exp-aux), one w_s ~ q and z ~ r(z|w_s) a slice, over
    ``slices_per_step`` random slices (``None``: all) rescaled. ``train_reverse`` trains r(z|w)
    with q (the paper's algorithm); the decoder, the prior, stays frozen, in a copy of the VAE.
    """

    def __init__(
        self,
        kernel_vae: KernelVAE,
        slices_per_step: int | None = DWP_SLICES_PER_STEP,
        train_reverse: bool = False,
    ) -> None:
        super().__init__()
        if slices_per_step is not None and slices_per_step < 1:
            raise ValueError(f"slices_per_step must be None (exact) or >= 1, got {slices_per_step}")
        self.kernel_vae = copy.deepcopy(kernel_vae).eval()
        self.slices_per_step = slices_per_step
        self.train_reverse = train_reverse
        self.kernel_vae.requires_grad_(False)
        for p in self.kernel_vae.reverse_parameters() if train_reverse else ():
            p.requires_grad_(True)

    def extra_repr(self) -> str:
        return f"slices_per_step={self.slices_per_step}, train_reverse={self.train_reverse}"

    def aux_bound(self, w: Tensor) -> Tensor:
        """The kernel VAE's ELBO E_r(z|w) [ log p(w|z) + log p(z) - log r(z|w) ] per slice,
        ``(B,)`` (one z each): a lower bound on log p(w)."""
        return self.kernel_vae.elbo(w)

    def kl(self, layer: BayesConv2d) -> Tensor:
        if layer.kernel_size != self.kernel_vae.kernel_size:
            raise ValueError(
                f"this DeepWeightPrior models {self.kernel_vae.kernel_size}x"
                f"{self.kernel_vae.kernel_size} slices but the layer has "
                f"{layer.kernel_size}x{layer.kernel_size} kernels; pass the layer's own kernel VAE"
            )
        mu, log_var = layer.slices()
        total = mu.shape[0]
        m = total if self.slices_per_step is None else min(self.slices_per_step, total)
        if m < total:
            idx = torch.randperm(total, device=mu.device)[:m]
            mu, log_var = mu[idx], log_var[idx]
        w = gaussian.rsample(mu, log_var)
        return -layer.entropy() - (total / m) * self.aux_bound(w).sum()


PriorSpec = Prior | Mapping[str, Prior]


def priors_by_layer(model: BayesianCNN, priors: PriorSpec) -> dict[str, Prior]:
    """One prior per Bayesian layer: the same for all, or a mapping that names every layer."""
    layers = model.bayes_layers()
    if isinstance(priors, Prior):
        return {name: priors for name in layers}
    missing, extra = set(layers) - set(priors), set(priors) - set(layers)
    if missing or extra:
        raise ValueError(
            f"priors must name exactly the Bayesian layers {sorted(layers)}; "
            f"missing {sorted(missing)}, unknown {sorted(extra)}"
        )
    for name, prior in priors.items():
        if not isinstance(prior, Prior):
            raise TypeError(f"prior of {name!r} is a {type(prior).__name__}, not a Prior")
    return dict(priors)
