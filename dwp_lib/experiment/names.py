"""The names of the experiment: methods (``"prior:init"``), priors and inits, their labels,
the paper's table, and :class:`ExperimentError`.
"""

from __future__ import annotations

from ..nets import LAYERS


class ExperimentError(RuntimeError):
    """A run folder, a config or an override that the experiment cannot use (says why and what
    to do)."""


#: The paper's Table (MNIST, test accuracy of a 10-sample ensemble, mean over 10 class-balanced
#: subsets; Atanov et al. 2019, {cite}`atanov2019dwp`). Typed from the paper: a reference to
#: compare with, never a result of this library.
PAPER_RESULTS: dict[str, dict[int, float]] = {
    "dwp": {50: 0.800, 100: 0.867, 200: 0.915, 500: 0.945, 1000: 0.961},
    "log-uniform": {50: 0.766, 100: 0.839, 200: 0.894, 500: 0.938, 1000: 0.958},
    "normal": {50: 0.717, 100: 0.816, 200: 0.890, 500: 0.938, 1000: 0.959},
    "det": {50: 0.751, 100: 0.827, 200: 0.879, 500: 0.926, 1000: 0.954},
}
#: the paper's DWP rows used the kernel VAEs its authors released (dwp_lib.release)
PAPER_RESULTS["dwp@released"] = PAPER_RESULTS["dwp"]
#: ``dwp`` uses the kernel VAEs this pipeline trains; ``dwp@released`` the paper authors'
#: released ones (:mod:`dwp_lib.release`, GPL-3.0), as a prior or as an initialisation.
RELEASED = "dwp@released"
PRIOR_LABELS = {
    "dwp": "DWP",
    RELEASED: "DWP, released prior",
    "log-uniform": "log-uniform",
    "normal": "N(0, 1)",
    "det": "det. CNN",
}
PRIORS = ("dwp", RELEASED, "normal", "log-uniform", "det")
PIPELINE_INITS = (
    "default",
    "xavier",
    "filters",
    "dwp",
)  # what the pipeline itself provides
INITS = (*PIPELINE_INITS, RELEASED)
LAYER_PRIORS = ("dwp", RELEASED, "normal")  # the priors a per-layer spec may name
INIT_LABELS = {RELEASED: "released-VAE"}


def parse_method(method: str) -> tuple[str, str]:
    """``"dwp:dwp"`` -> ``("dwp", "dwp")``; checks both names (see :class:`~dwp_lib.experiment.config.GridConfig`)."""
    if method.count(":") != 1:
        raise ValueError(f"method {method!r} must be 'prior:init', e.g. 'dwp:dwp', 'normal:xavier'")
    prior, init = method.split(":")
    parts = prior.split("/")
    if len(parts) == 1:
        ok = prior in PRIORS
    else:
        ok = len(parts) == len(LAYERS) and all(p in LAYER_PRIORS for p in parts)
    if not ok:
        raise ValueError(
            f"method {method!r}: unknown prior {prior!r}; use one of {', '.join(PRIORS)}, or "
            f"'conv1/conv2' per layer from {', '.join(LAYER_PRIORS)} (e.g. 'dwp/normal')"
        )
    if init not in INITS:
        raise ValueError(f"method {method!r}: unknown init {init!r}; use one of {', '.join(INITS)}")
    return prior, init


def vae_sources(method: str) -> set[str]:
    """Which kernel VAEs a method needs: ``{"trained"}``, ``{"released"}``, both or neither."""
    prior, init = parse_method(method)
    names = prior.split("/") + [init]
    return {"released" if n == RELEASED else "trained" for n in names if n in ("dwp", RELEASED)}


def method_label(method: str) -> str:
    """``"dwp:dwp"`` -> ``"DWP (dwp init)"``."""
    prior, init = parse_method(method)
    return f"{PRIOR_LABELS.get(prior, prior)} ({INIT_LABELS.get(init, init)} init)"
