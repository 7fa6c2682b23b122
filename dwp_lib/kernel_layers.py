"""The kernel VAE's layer lists: ours and the authors' exact architectures (book/03, book/04).

A :class:`KernelVAEConfig` names the encoder's and the decoder's layers as short specs
(:class:`LayerSpec`: ``"c3:32"`` a 3x3 convolution to 32 channels, ``"t3:64"`` a transposed one,
``"c3p1:64"`` padded, ``"c1:128"`` a 1x1), the latent size and how variances are made positive.
``KernelVAEConfig.authors(k)`` is the paper authors' VAE for k x k slices, checked against their
released weights (:data:`AUTHORS_KERNEL_VAES`; their state_dicts load through
:data:`dwp_lib.authors_vaes.AUTHORS_KEY_MAP`). :func:`build_stack` turns a list of specs into modules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from .config import check_fields

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
    """Architecture of a :class:`~dwp_lib.kernel_vae.KernelVAE` for ``kernel_size`` x ``kernel_size`` slices.

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
        weights load into it, :func:`dwp_lib.authors_vaes.load_released_vaes`): softplus variances,
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


def build_stack(specs: list[LayerSpec], in_channels: int) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    for s in specs:
        layers += [s.module(in_channels), nn.ELU()]
        in_channels = s.channels
    return nn.Sequential(*layers), in_channels
