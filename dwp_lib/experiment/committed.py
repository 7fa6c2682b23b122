"""Where the committed runs are: ``results/`` of a checkout of the repository, else the copy of
its tables, records and notes installed with the package (``dwp_results``), so that a chapter
run from a plain ``pip install`` (e.g. in Colab) reads the same runs as the HTML book."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def results_dir() -> Path:
    """The folder of the committed runs (each a subfolder with ``results.csv``, ``config.json``,
    ``provenance.json`` and a README), or a clear error when this copy of the library has none."""
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
