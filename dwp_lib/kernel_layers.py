"""Kernel-VAE layer lists (:class:`LayerSpec`: ``"c3:32"``): ours and the authors' (book/03, 04)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from .config import check_fields

# The authors' two kernel VAEs (bayesgroup/deep-weight-prior), checked against their released
# weights (``dwp_lib.release``)
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
        """The side of a ``side`` x ``side`` input after this layer (a transposed one grows it)."""
        return side + (1 if self.kind == "c" else -1) * (2 * self.padding - self.kernel + 1)

    def module(self, in_channels: int) -> nn.Module:
        conv = nn.Conv2d if self.kind == "c" else _ConvTranspose
        return conv(in_channels, self.channels, self.kernel, padding=self.padding)


#: Transposed convolutions computed as the equivalent convolution (equal to float rounding, faster
#: on a CPU); ``False`` runs torch's own, the reference for tests and ``benchmarks/dwp_cell.py``.
CONVT_AS_CONV = True


class _ConvTranspose(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` (stride 1, same state_dict) as a matrix product on a 1 x 1 input,
    else a convolution with the kernel flipped, its channel axes swapped, padding k - 1 - p."""

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
    """Architecture of a :class:`~dwp_lib.kernel_vae.KernelVAE`: ``encoder``/``decoder`` take
    k x k to 1 x 1 and back (empty: our mirrored net, :attr:`paddings`). ``"floored"`` variance
    (ours) floors the log-variance (else an exact reconstruction has unbounded likelihood)."""

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
        if self.variance not in VARIANCES:
            raise ValueError(f"variance={self.variance!r}: use one of {', '.join(VARIANCES)}")
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
        """Our mirrored VAE with the authors' latent sizes and widths."""
        small = kernel_size in (3, 7)
        arch = dict(latent_dim=2, hidden=32) if small else dict(latent_dim=4, hidden=64)
        return cls(kernel_size=kernel_size, **{**arch, **overrides})

    @classmethod
    def authors(cls, kernel_size: int, **overrides) -> KernelVAEConfig:
        """The authors' 7x7 or 5x5 kernel VAE, layer for layer: softplus variances, no floors."""
        if kernel_size not in AUTHORS_KERNEL_VAES:
            raise ValueError(
                f"the authors released kernel VAEs for 7x7 and 5x5 slices only, not {kernel_size}x"
                f"{kernel_size}; use KernelVAEConfig.for_kernel({kernel_size})"
            )
        arch = dict(AUTHORS_KERNEL_VAES[kernel_size], variance="softplus", z_var_floor=0.0)
        return cls(kernel_size=kernel_size, **{**arch, **overrides})

    @property
    def paddings(self) -> list[int]:
        """Padding of each 3x3 convolution of our encoder: 'same' (1) first, then the (k-1)/2
        'valid' (0) ones that reach 1 x 1 (5x5: 5 -> 5 -> 3 -> 1). The decoder mirrors it."""
        valid = (self.kernel_size - 1) // 2
        return [1] * (max(3, valid) - valid) + [0] * valid  # at least the authors' 3 layers

    @property
    def encoder_layers(self) -> list[LayerSpec]:
        if self.encoder:
            return [LayerSpec.parse(s) for s in self.encoder]
        return [LayerSpec("c", 3, p, self.hidden) for p in self.paddings]

    @property
    def decoder_layers(self) -> list[LayerSpec]:
        if self.decoder:
            return [LayerSpec.parse(s) for s in self.decoder]
        up = [LayerSpec("t", 3, p, self.hidden) for p in reversed(self.paddings)]
        return [LayerSpec("c", 1, 0, self.hidden), *up]

    def describe(self) -> str:
        """``encoder c3:32 c3:64 c3:64 | decoder t3:64 t3:64 t3:32, latent 2, softplus``."""
        enc = " ".join(self._text(s) for s in self.encoder_layers)
        dec = " ".join(self._text(s) for s in self.decoder_layers)
        return f"encoder {enc} | decoder {dec}, latent {self.latent_dim}, {self.variance} variances"


def build_stack(specs: list[LayerSpec], in_channels: int) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    for s in specs:
        layers += [s.module(in_channels), nn.ELU()]
        in_channels = s.channels
    return nn.Sequential(*layers), in_channels
