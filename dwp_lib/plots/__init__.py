"""The book's figures, one function each returning a Figure, from tensors or records (no training);
one module per chapter (vi, reparam, vae, implicit_prior, experiment) and :mod:`.common`."""

from __future__ import annotations

from . import common, experiment, implicit_prior, reparam, vae, vi
from .common import *  # noqa: F403
from .experiment import *  # noqa: F403
from .implicit_prior import *  # noqa: F403
from .reparam import *  # noqa: F403
from .vae import *  # noqa: F403
from .vi import *  # noqa: F403

__all__ = [*common.__all__, *vi.__all__, *reparam.__all__, *vae.__all__]
__all__ += [*implicit_prior.__all__, *experiment.__all__]
