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
