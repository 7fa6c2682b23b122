"""The authors' FConv, the CNN of the source nets and the target, and its helpers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .slices import xavier_std

#: The conv layers whose kernels make the bank, and their kernel sizes.
LAYERS: dict[str, int] = {"conv1": 7, "conv2": 5}


class FConv(nn.Module):
    """The authors' CNN for 28x28 greyscale images (no batch norm), ``x (B, 1, 28, 28)`` ->
    ``conv1`` 1->c1, 7x7 -> LeakyReLU -> max-pool 2 (11x11) -> ``conv2`` c1->c2, 5x5 -> LeakyReLU
    -> max-pool 2 (3x3) -> flatten -> ``fc`` c2*3*3 -> 10; subclasses may replace the layers."""

    def __init__(
        self, c1: int = 32, c2: int = 64, n_classes: int = 10, negative_slope: float = 0.01
    ) -> None:
        super().__init__()
        self.widths = (c1, c2)
        self.negative_slope = negative_slope
        self.conv1 = nn.Conv2d(1, c1, LAYERS["conv1"])
        self.conv2 = nn.Conv2d(c1, c2, LAYERS["conv2"])
        self.fc = nn.Linear(c2 * 3 * 3, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The flattened conv features ``(B, c2 * 9)``."""
        return self.features_after_conv1(self.conv1(x))

    def features_after_conv1(self, h: torch.Tensor) -> torch.Tensor:
        """:meth:`features` from ``conv1``'s pre-activations ``h`` on."""
        x = max_pool2(F.leaky_relu(h, self.negative_slope))
        x = max_pool2(F.leaky_relu(self.conv2(x), self.negative_slope))
        return torch.flatten(x, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, n_classes)``."""
        return self.fc(self.features(x))

    def conv_layers(self) -> dict[str, nn.Module]:
        """``{"conv1": ..., "conv2": ...}``: the layers whose kernels go into the bank."""
        return {"conv1": self.conv1, "conv2": self.conv2}

    def kernels(self) -> dict[str, torch.Tensor]:
        """Each conv weight, detached: ``conv1`` ``(c1, 1, 7, 7)``, ``conv2`` ``(c2, c1, 5, 5)``."""
        return {name: layer.weight.detach() for name, layer in self.conv_layers().items()}


def max_pool2(x: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(x, 2)``; on a CPU without a gradient in the channels-last layout, which
    oneDNN pools several times faster, to the same bits (``benchmarks/book_cell.py``)."""
    fast = x.device.type == "cpu" and x.dim() == 4 and x.is_contiguous()
    if fast and not (torch.is_grad_enabled() and x.requires_grad):
        return F.max_pool2d(x.contiguous(memory_format=torch.channels_last), 2).contiguous()
    return F.max_pool2d(x, 2)


def xavier_normal_init(module: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """``w ~ N(0, 2 / (fan_in + fan_out))`` for every conv and linear weight, zero biases: the
    authors' "Xavier" (PyTorch's default for ``Conv2d`` is a Kaiming-uniform)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.xavier_normal_(m.weight, generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def xavier_slice_norm(layer: str, widths: Sequence[int]) -> float:
    """Typical L2 norm of one k x k slice at Xavier-normal init: ``std * k`` (a yardstick)."""
    c1, c2 = widths
    k = LAYERS[layer]
    c_in, c_out = (1, c1) if layer == "conv1" else (c1, c2)
    return xavier_std(c_in, c_out, k) * k


def fconv_macs(widths: Sequence[int], n_classes: int = 10) -> int:
    """Multiply-accumulates of one forward pass of ``FConv(*widths)`` on one image (convs and the
    linear layer): ratios of it compare the cost of source stages."""
    c1, c2 = widths
    side1 = 28 - LAYERS["conv1"] + 1  # 22
    side2 = side1 // 2 - LAYERS["conv2"] + 1  # 11 -> 7
    conv1 = side1 * side1 * c1 * LAYERS["conv1"] ** 2
    conv2 = side2 * side2 * c2 * c1 * LAYERS["conv2"] ** 2
    return conv1 + conv2 + c2 * 3 * 3 * n_classes


def conv_l2(net: FConv) -> torch.Tensor:
    """Sum of squares of the conv layers' parameters (weights and biases)."""
    return sum(p.pow(2).sum() for layer in net.conv_layers().values() for p in layer.parameters())


@torch.no_grad()
def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Share of ``x`` that ``net`` classifies as ``y`` (on the net's device)."""
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    correct = 0
    for i in range(0, len(y), batch_size):
        logits = net(x[i : i + batch_size].to(device))
        correct += (logits.argmax(1).cpu() == y[i : i + batch_size]).sum().item()
    net.train(was_training)
    return correct / max(len(y), 1)
