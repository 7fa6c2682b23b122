"""From a method's names to objects: the priors and the initialisation of a grid cell."""

from __future__ import annotations

from collections.abc import Mapping

from ..bayes import BayesConfig
from ..inits import DWPInit, FiltersInit, TorchDefaultInit, XavierInit
from ..kernel_bank import KernelBank
from ..kernel_vae import KernelVAE
from ..nets import LAYERS
from ..priors import DeepWeightPrior, LogUniform, StandardNormal
from .names import INITS, RELEASED, ExperimentError


def _dwp_vaes(name: str, vaes, released, what: str) -> Mapping[str, KernelVAE]:
    """The kernel VAEs of ``dwp`` (the pipeline's) or ``dwp@released`` (the authors')."""
    chosen, kind = (vaes, "kernel") if name == "dwp" else (released, "released kernel")
    if chosen is None:
        raise ExperimentError(f"the {what} needs the {kind} VAEs")
    return chosen


def make_init(
    name: str,
    bank: KernelBank | None,
    vaes: Mapping[str, KernelVAE] | None,
    released: Mapping[str, KernelVAE] | None = None,
):
    """The initialisation object of ``name`` (``vaes``: the pipeline's, ``released``: theirs)."""
    if name == "default":
        return TorchDefaultInit()
    if name == "xavier":
        return XavierInit()
    if name == "filters":
        if bank is None:
            raise ExperimentError("the filters init needs the kernel bank")
        return FiltersInit(bank)
    if name in ("dwp", RELEASED):
        return DWPInit(_dwp_vaes(name, vaes, released, f"{name} init"))
    raise ExperimentError(f"unknown init {name!r}; valid inits are {', '.join(INITS)}")


def make_priors(
    prior: str,
    vaes: Mapping[str, KernelVAE] | None,
    cfg: BayesConfig,
    released: Mapping[str, KernelVAE] | None = None,
):
    """The priors of a Bayesian CNN for ``prior`` (not ``det``), one per layer."""

    def one(name: str, layer: str):
        if name == "normal":
            return StandardNormal()
        if name == "log-uniform":
            return LogUniform()
        if name in ("dwp", RELEASED):
            what = "DWP prior" if name == "dwp" else f"{name} prior"
            chosen = _dwp_vaes(name, vaes, released, what)
            return DeepWeightPrior(chosen[layer], cfg.dwp_slices_per_step, cfg.dwp_train_reverse)
        raise ExperimentError(f"unknown prior {name!r}")

    names = prior.split("/")
    if len(names) == 1:
        names = names * len(LAYERS)
    return {layer: one(n, layer) for layer, n in zip(LAYERS, names, strict=True)}
