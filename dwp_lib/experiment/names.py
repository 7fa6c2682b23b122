"""The experiment's names: methods (``"prior:init"``), priors, inits, labels, the paper's table."""

from __future__ import annotations

from ..nets import LAYERS


class ExperimentError(RuntimeError):
    """A run folder, config or override the experiment cannot use (says why and what to do)."""


#: The paper's table (MNIST, 10-sample ensemble accuracy, mean over 10 balanced subsets; Atanov
#: et al. 2019): a reference typed from the paper, never a result of this library.
PAPER_RESULTS: dict[str, dict[int, float]] = {
    "dwp": {50: 0.800, 100: 0.867, 200: 0.915, 500: 0.945, 1000: 0.961},
    "log-uniform": {50: 0.766, 100: 0.839, 200: 0.894, 500: 0.938, 1000: 0.958},
    "normal": {50: 0.717, 100: 0.816, 200: 0.890, 500: 0.938, 1000: 0.959},
    "det": {50: 0.751, 100: 0.827, 200: 0.879, 500: 0.926, 1000: 0.954},
}
PAPER_RESULTS["dwp@released"] = PAPER_RESULTS["dwp"]  # the paper used its released VAEs
#: the authors' released kernel VAEs (``dwp``: the ones this pipeline trains)
RELEASED = "dwp@released"
PRIOR_LABELS = {
    "dwp": "DWP",
    RELEASED: "DWP, released prior",
    "log-uniform": "log-uniform",
    "normal": "N(0, 1)",
    "det": "det. CNN",
}
PRIORS = ("dwp", RELEASED, "normal", "log-uniform", "det")
PIPELINE_INITS = ("default", "xavier", "filters", "dwp")  # what the pipeline itself provides
INITS = (*PIPELINE_INITS, RELEASED)
LAYER_PRIORS = ("dwp", RELEASED, "normal")  # the priors a per-layer spec may name
INIT_LABELS = {RELEASED: "released-VAE"}


def parse_method(method: str) -> tuple[str, str]:
    """``"dwp:dwp"`` -> ``("dwp", "dwp")``; checks both names."""
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


def uses_pipeline(method: str) -> bool:
    """Whether a method draws on this pipeline's kernel bank or VAEs (not only on the released
    files, N(0, 1) or Xavier): only such cells depend on the cached bank's bits."""
    return "trained" in vae_sources(method) or parse_method(method)[1] == "filters"


def method_label(method: str) -> str:
    """``"dwp:dwp"`` -> ``"DWP (dwp init)"``."""
    prior, init = parse_method(method)
    return f"{PRIOR_LABELS.get(prior, prior)} ({INIT_LABELS.get(init, init)} init)"
