"""The paper authors' released kernel VAEs as ``KernelVAE`` objects (files from :mod:`.release`)."""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor

from . import release as _release
from .kernel_layers import KernelVAEConfig
from .kernel_vae import KernelVAE
from .release import LAYER_KERNELS, Release, ReleaseUnavailableError, fetch_release, provenance

#: The authors' state_dict keys -> ours (regex, replacement), in order. Their encoder's variance
#: head is ``fc_var`` (7x7) or ``fc_sigma`` (5x5); the 5x5 decoder's heads are ``fc_mu.0``, ...
AUTHORS_KEY_MAP: tuple[tuple[str, str], ...] = (
    (r"^encoder\.features\.(\d+)\.", r"encoder.\1."),
    (r"^encoder\.fc_mu\.", "z_mean."),
    (r"^encoder\.fc_(?:var|sigma)\.", "z_var."),
    (r"^decoder\.decoder\.(\d+)\.", r"decoder.\1."),
    (r"^decoder\.fc_mu\.(?:0\.)?", "w_mean."),
    (r"^decoder\.fc_var\.(?:0\.)?", "w_var."),
)


def load_authors_state_dict(vae: KernelVAE, state_dict: Mapping[str, Tensor]) -> KernelVAE:
    """Load an authors' state_dict into ``vae`` strictly, keys renamed by ``AUTHORS_KEY_MAP``."""
    renamed, unknown = {}, []
    for key, value in state_dict.items():
        new = next((re.sub(p, r, key) for p, r in AUTHORS_KEY_MAP if re.match(p, key)), None)
        if new is None:
            unknown.append(key)
        else:
            renamed[new] = value
    own = vae.state_dict()
    missing = sorted(set(own) - set(renamed))
    extra = sorted(set(renamed) - set(own)) + unknown
    shapes = [
        f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in renamed.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if missing or extra or shapes:
        raise ValueError(
            "this state_dict does not fit a KernelVAE with "
            f"{vae.config.describe()}: missing {missing}, unexpected {extra}, "
            f"shape mismatches {shapes}; build the model with KernelVAEConfig.authors("
            f"{vae.kernel_size}) for the authors' {vae.kernel_size}x{vae.kernel_size} VAE"
        )
    vae.load_state_dict(renamed, strict=True)
    return vae


def load_released_vaes(
    device: torch.device | str = "cpu", release: Release | None = None
) -> dict[str, KernelVAE]:
    """``{"conv1": 7x7 KernelVAE, "conv2": 5x5}``: the authors' VAEs, each with a ``record``."""
    release = release or _release.AUTHORS_RELEASE  # read when called: tests place a fake one
    files = fetch_release(release.vaes.values(), release)
    out = {}
    for layer, path in release.vaes.items():
        k = LAYER_KERNELS[layer]
        try:
            state = torch.load(files[path], map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 (a file that passed its hash but does not load)
            raise ReleaseUnavailableError(
                f"{files[path]} does not load as a state_dict: {err}"
            ) from None
        vae = load_authors_state_dict(KernelVAE(KernelVAEConfig.authors(k)), state)
        vae.record = {
            "file": path,
            "sha256": release.files[path],
            "bytes": files[path].stat().st_size,
            **provenance(release),
        }
        out[layer] = vae.to(device).eval()
    return out
