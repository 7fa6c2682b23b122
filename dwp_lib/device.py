"""Where work runs (CUDA when present), seeds, and worker processes that end with their parent."""

from __future__ import annotations

import os
import random
import threading
import time

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


def exit_with_parent(parent: int | None = None, every: float = 0.5) -> threading.Thread:
    """End this pool worker when its parent is gone (an orphan works for nobody); call it first."""
    parent = os.getppid() if parent is None else parent

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(1)

    thread = threading.Thread(target=watch, name="exit-with-parent", daemon=True)
    thread.start()
    return thread
