"""Where the committed runs are: ``results/`` of a checkout, else the copy installed with the
package (``dwp_results``, e.g. in Colab)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def results_dir() -> Path:
    """The folder of the committed runs, or a clear error when this copy has none."""
    checkout = Path(__file__).resolve().parents[2] / "results"
    if checkout.is_dir():
        return checkout
    spec = importlib.util.find_spec("dwp_results")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    raise FileNotFoundError(
        "the committed runs are not installed with this copy of dwp_lib: install it from the "
        "repository (pip install git+<repository>) or run from a checkout, whose results/ "
        "folder holds them"
    )
