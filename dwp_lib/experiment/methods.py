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

# ------------------------------------------------------------------------------------------------
# Methods: "prior:init" -> priors and an initialisation
# ------------------------------------------------------------------------------------------------


def make_init(
    name: str,
    bank: KernelBank | None,
    vaes: Mapping[str, KernelVAE] | None,
    released: Mapping[str, KernelVAE] | None = None,
):
    """The initialisation object of ``name`` (``default``, ``xavier``, ``filters``, ``dwp``,
    ``dwp@released``): ``vaes`` are the pipeline's kernel VAEs, ``released`` the authors'."""
    if name == "default":
        return TorchDefaultInit()
    if name == "xavier":
        return XavierInit()
    if name == "filters":
        if bank is None:
            raise ExperimentError("the filters init needs the kernel bank")
        return FiltersInit(bank)
    if name == "dwp":
        if vaes is None:
            raise ExperimentError("the dwp init needs the kernel VAEs")
        return DWPInit(vaes)
    if name == RELEASED:
        if released is None:
            raise ExperimentError("the dwp@released init needs the released kernel VAEs")
        return DWPInit(released)
    raise ExperimentError(f"unknown init {name!r}; valid inits are {', '.join(INITS)}")


def make_priors(
    prior: str,
    vaes: Mapping[str, KernelVAE] | None,
    cfg: BayesConfig,
    released: Mapping[str, KernelVAE] | None = None,
):
    """The prior(s) of a Bayesian CNN for ``prior`` (not ``det``): one object or one per layer.
    ``vaes`` are the pipeline's kernel VAEs (``dwp``), ``released`` the authors' (``dwp@released``)."""

    def one(name: str, layer: str):
        if name == "normal":
            return StandardNormal()
        if name == "log-uniform":
            return LogUniform()
        if name == "dwp":
            if vaes is None:
                raise ExperimentError("the DWP prior needs the kernel VAEs")
            return DeepWeightPrior(vaes[layer], cfg.dwp_slices_per_step, cfg.dwp_train_reverse)
        if name == RELEASED:
            if released is None:
                raise ExperimentError("the dwp@released prior needs the released kernel VAEs")
            return DeepWeightPrior(released[layer], cfg.dwp_slices_per_step, cfg.dwp_train_reverse)
        raise ExperimentError(f"unknown prior {name!r}")

    names = prior.split("/")
    if len(names) == 1:
        names = names * len(LAYERS)
    return {layer: one(n, layer) for layer, n in zip(LAYERS, names, strict=True)}
