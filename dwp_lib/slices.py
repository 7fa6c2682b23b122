"""Slices from no source net: references real kernels are scored against, and toy kernels."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def gaussian_slices(n: int, kernel_size: int, std: float, seed: int = 0) -> Tensor:
    """n slices of i.i.d. N(0, std^2) weights, ``(n, k, k)``: noise at a chosen scale."""
    if n < 0 or std < 0:
        raise ValueError(f"need n >= 0 and std >= 0, got n={n}, std={std}")
    gen = torch.Generator().manual_seed(seed)
    return std * torch.randn(n, kernel_size, kernel_size, generator=gen)


def xavier_std(c_in: int, c_out: int, kernel_size: int) -> float:
    """Standard deviation of a Xavier-normal conv weight: sqrt(2 / ((c_in + c_out) k^2))."""
    return math.sqrt(2.0 / ((c_in + c_out) * kernel_size**2))


def xavier_slices(n: int, kernel_size: int, c_in: int, c_out: int, seed: int = 0) -> Tensor:
    """n slices as a Xavier-normal init of a Conv(c_in -> c_out, k x k) would draw them."""
    return gaussian_slices(n, kernel_size, xavier_std(c_in, c_out, kernel_size), seed)


def shuffle_pixels(slices: Tensor, seed: int = 0) -> Tensor:
    """Each slice's k*k weights randomly permuted: the same values and norm, no spatial layout."""
    gen = torch.Generator().manual_seed(seed)
    flat = slices.flatten(1)
    order = torch.argsort(torch.rand(flat.shape, generator=gen), dim=1)
    return torch.gather(flat, 1, order.to(flat.device)).reshape(slices.shape)


def toy_kernel_slices(
    n: int,
    kernel_size: int = 7,
    seed: int = 0,
    noise: float = 0.02,
    scale: float = 0.3,
    return_angles: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """n toy "edge detector" slices ``(n, k, k)``: odd Gabor patches of random direction (also
    returned, ``(n,)``, with ``return_angles``) and contrast, plus noise; a 2-D family."""
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
