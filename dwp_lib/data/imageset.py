"""``ImageSet``: labelled 28x28 uint8 images, provenance; ``ds[i]``: (float (1, 28, 28), label)."""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

DIGITS: tuple[str, ...] = tuple("0123456789")
LETTERS: tuple[str, ...] = tuple("ABCDEFGHIJ")


@dataclass(eq=False)
class ImageSet(Dataset):
    """Images, labels and where they came from."""

    images: torch.Tensor  # uint8 (N, 28, 28); 0 is background (black), 255 is ink (white)
    labels: torch.Tensor  # int64 (N,), indices into ``classes``
    provenance: dict = field(default_factory=dict)  # JSON-ready: dataset, split, source, ...
    classes: tuple[str, ...] = DIGITS
    groups: torch.Tensor | None = None  # int64 (N,): each image's font; never in both splits
    group_names: tuple[str, ...] = ()  # group_names[groups[i]] is image i's font

    def __post_init__(self) -> None:
        for t, name, dtype, dim, what in (
            (self.images, "images", torch.uint8, 3, "a uint8 tensor (N, H, W)"),
            (self.labels, "labels", torch.int64, 1, "an int64 tensor (N,)"),
        ):
            if t.dtype != dtype or t.dim() != dim:
                raise ValueError(f"{name} must be {what}; got {t.dtype} {tuple(t.shape)}")
        if len(self.labels) != len(self.images):
            raise ValueError(
                f"{len(self.images)} images but {len(self.labels)} labels: give one label per image"
            )
        self.classes = tuple(self.classes)
        if len(self.labels):
            low, high = int(self.labels.min()), int(self.labels.max())
            if low < 0 or high >= len(self.classes):
                raise ValueError(
                    f"labels run from {low} to {high}, but there are {len(self.classes)} classes "
                    f"({''.join(self.classes)}): a label is an index 0..{len(self.classes) - 1}"
                )
        if self.groups is not None and self.groups.shape != self.labels.shape:
            raise ValueError("groups must have one entry per image")
        self.group_names = tuple(self.group_names)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i].unsqueeze(0).float().div_(255.0), int(self.labels[i])

    def __repr__(self) -> str:
        p = self.provenance
        name = " ".join(str(p[k]) for k in ("dataset", "variant", "split") if p.get(k))
        return f"ImageSet({name or 'images'}: {len(self)} images, classes {''.join(self.classes)})"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def float_images(self) -> torch.Tensor:
        """All images as float32 ``(N, 1, 28, 28)`` in ``[0, 1]`` (pixel / 255)."""
        return self.images.unsqueeze(1).float().div_(255.0)

    def class_counts(self) -> torch.Tensor:
        """Number of images of each class, ``int64 (num_classes,)``."""
        return torch.bincount(self.labels, minlength=self.num_classes)

    def subset(self, indices, **note) -> ImageSet:
        """The images at ``indices``; ``note`` is added to the provenance under ``subset``."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        prov = dict(self.provenance, count=int(idx.numel()))
        if note:
            prov["subset"] = dict(note, of=len(self))
        return dataclasses.replace(
            self,
            images=self.images[idx],
            labels=self.labels[idx],
            provenance=prov,
            groups=None if self.groups is None else self.groups[idx],
        )

    def describe(self) -> str:
        """One line for a chapter to print: what, how many, from where, checksum."""
        p = self.provenance
        what = " ".join(str(p[k]) for k in ("dataset", "split") if p.get(k))
        parts = [f"{what}: {len(self):,} images, {self.num_classes} classes"]
        shown = (("variant", "variant {}"), ("source", "source: {}"), ("checksum", "checksum {}"))
        parts += [form.format(p[k]) for k, form in shown if p.get(k)]
        return "; ".join(parts)


def balanced_subset(dataset: ImageSet, n: int, seed: int = 0) -> ImageSet:
    """A class-balanced subset of ``n`` images, chosen by ``(seed, class)`` only: for one seed it
    grows with ``n`` (learning curves over ``n`` add data, not redraw it)."""
    c = dataset.num_classes
    for name, v in (("n", n), ("seed", seed)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"balanced_subset: {name} must be an integer, got {v!r}")
    if seed < 0:
        raise ValueError(f"balanced_subset: seed must be >= 0, got {seed}")
    if n <= 0 or n % c:
        raise ValueError(f"n must be a positive multiple of the number of classes ({c}); got {n}")
    k = n // c
    labels = dataset.labels.numpy()
    chosen = []
    for cls in range(c):
        idx = np.flatnonzero(labels == cls)
        if len(idx) < k:
            raise ValueError(
                f"class {dataset.classes[cls]!r} has {len(idx)} images; {k} needed for n={n}"
            )
        rng = np.random.default_rng([int(seed), cls])
        chosen.append(idx[rng.permutation(len(idx))[:k]])
    return dataset.subset(np.sort(np.concatenate(chosen)), n=n, seed=int(seed), per_class=k)
