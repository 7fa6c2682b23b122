"""The course's data: real MNIST, and notMNIST (real, or a notMNIST-style synthetic set).
Each loader returns an :class:`ImageSet`, trying its sources in order, each verified, cached under
``$DWP_CACHE/data``; ``python -m dwp_lib data prepare`` fetches everything ahead."""

from __future__ import annotations

from .imageset import DIGITS, LETTERS, ImageSet, balanced_subset
from .mnist import load_mnist
from .sources import SPLITS, Attempt, DataUnavailableError, check_split

__all__ = ["DIGITS", "LETTERS", "SPLITS", "VARIANTS", "Attempt", "DataUnavailableError"]
__all__ += ["ImageSet", "balanced_subset", "load_mnist", "load_notmnist"]

VARIANTS: tuple[str, ...] = ("small", "large", "synthetic", "sample")


def load_notmnist(split: str = "train", variant: str = "synthetic", config=None) -> ImageSet:
    """notMNIST A-J, 28x28: ``"small"``/``"large"`` (real tarballs), ``"synthetic"`` (Debian fonts;
    ``config``: a ``SyntheticConfig``, else ``DWP_PRESET``'s) or ``"sample"`` (10,000 real)."""
    check_split(split)
    if variant not in VARIANTS:
        raise ValueError(
            f"unknown notMNIST variant {variant!r}; valid variants are {', '.join(VARIANTS)}"
        )
    if variant == "synthetic":
        from .synthetic import load_synthetic

        return load_synthetic(split, config)
    if config is not None:
        raise ValueError("config applies to the synthetic variant only")
    if variant == "sample":
        from .notmnist_sample import load_sample

        return load_sample(split)
    from .notmnist import load_real_notmnist

    return load_real_notmnist(split, variant)
