"""The course's data: real MNIST, and notMNIST (real, or a notMNIST-style synthetic set).

>>> from dwp_lib.data import load_mnist, load_notmnist, balanced_subset
>>> mnist = load_mnist("train")                           # 60,000 real digits      # doctest: +SKIP
>>> letters = load_notmnist("train", variant="synthetic")  # letters A-J from fonts  # doctest: +SKIP
>>> few = balanced_subset(mnist, n=50, seed=0)            # 5 per class             # doctest: +SKIP

Each loader returns an :class:`ImageSet` (uint8 images, int64 labels, a ``provenance`` record)
and tries its sources in order, each verified, caching the result as a tensor file under
``$DWP_CACHE/data`` (default ``~/.cache/dwp_lib/data``). ``python -m dwp_lib data prepare``
fetches and builds everything ahead of time.

Modules: :mod:`.imageset` (the container, balanced subsets), :mod:`.sources` (downloads, errors,
the cache), :mod:`.mnist`, :mod:`.notmnist` (the real tarballs), :mod:`.notmnist_sample` (10,000
real images in idx files, pinned by commit and SHA-256), :mod:`.fonts` (Debian font packages) and
:mod:`.synthetic` (the notMNIST-style renderer).
"""

from __future__ import annotations

from .imageset import DIGITS, LETTERS, ImageSet, balanced_subset
from .mnist import load_mnist
from .sources import SPLITS, Attempt, DataUnavailableError

__all__ = [
    "DIGITS",
    "LETTERS",
    "SPLITS",
    "VARIANTS",
    "Attempt",
    "DataUnavailableError",
    "ImageSet",
    "balanced_subset",
    "load_mnist",
    "load_notmnist",
]

VARIANTS: tuple[str, ...] = ("small", "large", "synthetic", "sample")


def load_notmnist(split: str = "train", variant: str = "synthetic", config=None) -> ImageSet:
    """notMNIST letters A-J, 28x28: ``variant`` ``"small"`` / ``"large"`` (the real tarballs,
    needs internet once), ``"synthetic"`` (notMNIST-style, rendered from Debian fonts) or
    ``"sample"`` (10,000 real images of notMNIST_small, pinned idx files: :mod:`.notmnist_sample`).

    ``config`` (synthetic only) is a :class:`~dwp_lib.data.synthetic.SyntheticConfig`; by default
    the preset named by ``DWP_PRESET`` (``book`` when unset). Train and test never share a font,
    except in ``"sample"``, which records no font: it is split by letter (and says so).
    """
    from .sources import check_split

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
