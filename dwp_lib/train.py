"""The one optimisation loop (:func:`fit`), its schedule and checks: a diverged run stops."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from .progress import progress


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
    """Raise a ValueError naming ``what`` unless ``x`` is finite float images, ``y`` class ids."""
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
    if bad := (~torch.isfinite(x)).sum().item():
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


def linear_decay(step: int, total_steps: int, exact_ratio: bool = False) -> float:
    """``1 - step / total``, the rate factor of step ``step`` (0-based): the last step still
    learns. ``exact_ratio`` computes ``(total - step) / total``, which rounds differently; the
    kernel VAEs were trained with it, so their committed files stay bit for bit."""
    if not 0 <= step < total_steps:
        raise ValueError(f"step {step} outside 0..{total_steps - 1}")
    if exact_ratio:
        return (total_steps - step) / total_steps
    return 1.0 - step / total_steps


def take_step(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One optimiser step on ``loss``: zero the gradients, backpropagate, update."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


@dataclass
class History:
    """Per step: the loss, the first group's rate and named terms (``record(nll=...)``, read as
    ``history.nll``); with the wall time, the settings and the seed."""

    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    terms: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    config: dict = field(default_factory=dict)
    seed: int = 0

    def record(self, **values: float) -> None:
        for name, value in values.items():
            self.terms.setdefault(name, []).append(value)

    def __getattr__(self, name: str) -> list[float]:
        terms = self.__dict__.get("terms", {})
        if name in terms:
            return terms[name]
        raise AttributeError(f"this history has no {name!r} (it records {sorted(terms)})")

    @property
    def steps(self) -> int:
        return len(self.loss)


def fit(
    params: Iterable[torch.Tensor] | Iterable[dict],
    loss_at: Callable[[int], torch.Tensor],
    steps: int,
    lr: float,
    what: str,
    schedule: Callable[[int], float] | None = None,
    after_step: Callable[[int, float], None] | None = None,
    postfix: str | None = None,
    first_step: int = 0,
) -> History:
    """Minimise ``loss_at(step)`` over ``params`` (tensors or Adam groups) with Adam, each group's
    rate times ``schedule(t)``; ``after_step(step, loss)`` runs after each update; ``postfix``
    formats the loss in the bar every 50 steps (``".2f"``)."""
    opt = torch.optim.Adam(params, lr=lr)
    base = [group["lr"] for group in opt.param_groups]
    log = History()
    bar = progress(range(first_step, first_step + steps), total=steps, desc=what)
    start = time.perf_counter()
    for step in bar:
        if schedule is not None:
            factor = schedule(step - first_step)
            for group, rate in zip(opt.param_groups, base, strict=True):
                group["lr"] = rate * factor
        loss = loss_at(step)
        log.lr.append(opt.param_groups[0]["lr"])
        take_step(opt, loss)
        log.loss.append(check_finite(loss.item(), what, step))
        if after_step is not None:
            after_step(step, log.loss[-1])
        if postfix is not None and len(log.loss) % 50 == 0:
            bar.set_postfix(loss=f"{log.loss[-1]:{postfix}}")
    log.seconds = time.perf_counter() - start
    return log
