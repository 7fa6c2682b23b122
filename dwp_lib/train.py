"""What every training loop of the library shares.

:func:`check_finite` stops a run at the first non-finite loss: a NaN in the inputs or a learning
rate that diverges must not end in an accuracy reported as a result.
"""

from __future__ import annotations

import math


class NonFiniteLossError(FloatingPointError):
    """A training loss became NaN or infinite; the message says where and what to check."""


def check_finite(value: float, what: str, step: int) -> float:
    """Return ``value`` if it is finite, else raise :class:`NonFiniteLossError`."""
    if not math.isfinite(value):
        raise NonFiniteLossError(
            f"{what}: the loss is {value} at step {step}, so training stopped (nothing was saved "
            "or reported). Check the data for NaN or infinite values, and try a smaller "
            "learning rate (lr)."
        )
    return value


def check_images_and_labels(x, y, what: str, num_classes: int | None = None) -> None:
    """Raise a ValueError naming ``what`` unless ``x`` is a float tensor of images (N, ...) with
    finite pixels and ``y`` an integer tensor (N,) of class indices in ``range(num_classes)``."""
    import torch

    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(
            f"{what}: images and labels must be tensors, got "
            f"{type(x).__name__} and {type(y).__name__}"
        )
    if not x.is_floating_point():
        raise ValueError(
            f"{what}: images must be floats in [0, 1], got {x.dtype}; an ImageSet gives them "
            "with ds.float_images()"
        )
    if y.dim() != 1 or y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(
            f"{what}: labels must be a 1-d integer tensor, got {y.dtype} {tuple(y.shape)}"
        )
    if len(x) != len(y):
        raise ValueError(f"{what}: {len(x)} images but {len(y)} labels; give one label per image")
    if len(x) == 0:
        raise ValueError(f"{what}: no images to train on")
    bad = (~torch.isfinite(x)).sum().item()
    if bad:
        raise ValueError(
            f"{what}: {bad} pixel(s) are NaN or infinite (first in image "
            f"{int((~torch.isfinite(x)).flatten(1).any(1).nonzero()[0])}); clean the data first"
        )
    low, high = int(y.min()), int(y.max())
    if low < 0 or (num_classes is not None and high >= num_classes):
        raise ValueError(
            f"{what}: labels run from {low} to {high}, outside 0..{(num_classes or 1) - 1}; "
            "labels must be class indices"
        )
