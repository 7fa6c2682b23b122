"""Where tensors live: CUDA when present, else the CPU."""

from __future__ import annotations

import random

import numpy as np
import torch


def default_device() -> torch.device:
    """``cuda`` if a GPU is visible, else ``cpu``. Every training function takes a device too."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % (2**32))  # noqa: NPY002 (seeds code that uses the legacy API)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
