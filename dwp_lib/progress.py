"""Progress bars for a terminal and a notebook (tqdm.auto); ``DWP_PROGRESS=0`` silences them."""

from __future__ import annotations

import os
from collections.abc import Iterable

from tqdm.auto import tqdm


def progress(iterable: Iterable | None = None, **kwargs) -> tqdm:
    """``tqdm.auto.tqdm`` with the course's defaults (disabled by ``DWP_PROGRESS=0``)."""
    kwargs.setdefault("disable", os.environ.get("DWP_PROGRESS", "1") in ("0", "false", "no"))
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", False)
    return tqdm(iterable, **kwargs)
