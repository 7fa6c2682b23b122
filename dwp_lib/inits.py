"""Conv-kernel inits behind one interface (book/05): default, xavier, filters (bank), dwp (VAE)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Protocol

import torch
from torch import Tensor, nn

from .bayes import BayesConv2d
from .kernel_bank import KernelBank
from .kernel_vae import KernelVAE
from .nets import FConv


class Initialisation(Protocol):
    """How to draw the conv weights of a layer: ``xavier``, ``filters`` or ``dwp``."""

    name: str

    def conv_weight(
        self, layer: str, shape: tuple[int, ...], generator: torch.Generator
    ) -> Tensor: ...


class TorchDefaultInit:
    """PyTorch's own ``nn.Conv2d`` init (Kaiming-uniform with a = sqrt(5)): the "default"."""

    name = "default"

    def conv_weight(self, layer: str, shape: tuple[int, ...], generator: torch.Generator):
        return nn.init.kaiming_uniform_(torch.empty(shape), a=math.sqrt(5), generator=generator)


class XavierInit:
    """Xavier-normal (Glorot & Bengio 2010): N(0, 2 / (fan_in + fan_out)), not torch's default."""

    name = "xavier"

    def conv_weight(self, layer: str, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        return nn.init.xavier_normal_(torch.empty(shape), generator=generator)


class FiltersInit:
    """Source slices drawn uniformly, with replacement, from the kernel bank ("filters")."""

    name = "filters"

    def __init__(self, bank: KernelBank, split: str = "train") -> None:
        self.bank, self.split = bank, split

    def conv_weight(self, layer: str, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        c_out, c_in = shape[:2]
        w = self.bank.random_kernels(layer, c_out, c_in, self.split, generator).float().cpu()
        _check_slices(w, shape, layer, "the kernel bank")
        return w


class DWPInit:
    """Samples of the layer's kernel VAE ("dwp"): decoder means at z ~ N(0, I)."""

    name = "dwp"

    def __init__(self, kernel_vaes: Mapping[str, KernelVAE]) -> None:
        self.kernel_vaes = dict(kernel_vaes)

    def conv_weight(self, layer: str, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        if layer not in self.kernel_vaes:
            raise KeyError(f"no kernel VAE for layer {layer!r}; have {sorted(self.kernel_vaes)}")
        w = self.kernel_vaes[layer].sample(shape[0] * shape[1], generator=generator).cpu()
        _check_slices(w, shape, layer, "the kernel VAE")
        return w.reshape(shape)


def _check_slices(w: Tensor, shape: tuple[int, ...], layer: str, source: str) -> None:
    if w.numel() != math.prod(shape) or tuple(w.shape[-2:]) != tuple(shape[-2:]):
        raise ValueError(
            f"{source} gives kernels of shape {tuple(w.shape)} for layer {layer!r}, "
            f"whose weight is {tuple(shape)}: use the bank/VAE of the same kernel size"
        )


def conv_weights(model: FConv) -> dict[str, nn.Parameter]:
    """The weights an initialisation sets, by layer (Bayesian convolutions: their means)."""
    return {
        name: layer.mu if isinstance(layer, BayesConv2d) else layer.weight
        for name, layer in model.conv_layers().items()
    }


#: the head's generator is seeded apart from the kernels' (see :func:`initialise`)
HEAD_SEED_OFFSET = 1_000_003


@torch.no_grad()
def initialise(model: FConv, init: Initialisation, seed: int = 0) -> FConv:
    """Set the conv weights (Bayesian: means) with ``init``, *into* the parameters (an optimiser
    built before sees them); the head Xavier-normal from its own seed; zero biases."""
    gen = torch.Generator().manual_seed(seed)
    for name, weight in conv_weights(model).items():
        weight.copy_(init.conv_weight(name, tuple(weight.shape), gen))
        model.conv_layers()[name].bias.zero_()
    head = model.fc
    head_gen = torch.Generator().manual_seed(HEAD_SEED_OFFSET + seed)
    head.weight.copy_(
        nn.init.xavier_normal_(torch.empty_like(head.weight, device="cpu"), generator=head_gen)
    )
    head.bias.zero_()
    return model
