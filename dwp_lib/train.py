"""The one optimisation loop of the library, its learning-rate schedule and its checks.

Every model of the course is trained by :func:`fit`: Adam over given parameters, for a number of
steps, each one :func:`take_step` (zero the gradients, backpropagate, update) on the loss that a
stage-specific ``loss_at(step)`` returns - the stage decides the data (a mini-batch, the full
batch, Monte-Carlo samples), the loop owns the optimiser, the schedule (:func:`linear_decay` or
constant), the progress bar, the record of losses and rates, and :func:`check_finite`, which stops
a run at the first non-finite loss: a NaN in the inputs or a learning rate that diverges must not
end in an accuracy reported as a result. The source nets keep a pass-over-the-data loop of their
own (per-epoch accounting) built from the same :func:`take_step` and :func:`linear_decay`.
"""

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


def linear_decay(step: int, total_steps: int, exact_ratio: bool = False) -> float:
    """Learning-rate factor of step ``step`` (0-based) of ``total_steps``: ``1 - step / total``.

    The first step uses the full rate, the last one ``1 / total_steps`` of it: the rate is never
    0 on a step that is taken (a known pitfall of public code is a last epoch at rate 0).
    ``exact_ratio=True`` computes the same factor as ``(total - step) / total``, which rounds
    differently in the last bit for about 40% of steps: the kernel VAEs have always been trained
    with it, and keeping it keeps their committed files reproducible bit for bit.
    """
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
    """What a training run recorded, one entry per step: the loss minimised, the learning rate
    (of the first parameter group) and named terms of the loss (``record(nll=..., kl=...)``,
    read back as ``history.nll``); with the loop's wall time, the settings and the seed."""

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


Schedule = Callable[[int], float]


def fit(
    params: Iterable[torch.Tensor] | Iterable[dict],
    loss_at: Callable[[int], torch.Tensor],
    steps: int,
    lr: float,
    what: str,
    schedule: Schedule | None = None,
    after_step: Callable[[int, float], None] | None = None,
    postfix: Callable[[History], dict] | None = None,
    first_step: int = 0,
    bar_kwargs: dict | None = None,
) -> History:
    """Minimise ``loss_at(step)`` over ``params`` with Adam for ``steps`` steps.

    ``params`` are tensors or Adam parameter groups (a group may carry its own ``lr``). Before
    step ``t`` every group's rate is its base rate times ``schedule(t)`` (``None``: constant).
    ``after_step(step, loss)`` runs after each update (evaluations, records); ``postfix(log)``
    gives the progress bar's fields every 50 steps. ``first_step`` numbers the steps (for the
    messages and ``after_step``) from 1 instead of 0 where a stage counts that way. A
    non-finite loss raises :class:`NonFiniteLossError` naming ``what`` and the step.
    """
    opt = torch.optim.Adam(params, lr=lr)
    base = [group["lr"] for group in opt.param_groups]
    log = History()
    kwargs = {"desc": what, **(bar_kwargs or {})}
    bar = progress(range(first_step, first_step + steps), total=steps, **kwargs)
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
            bar.set_postfix(**postfix(log))
    log.seconds = time.perf_counter() - start
    return log
