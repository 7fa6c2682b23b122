"""Helpers shared by the tests of several rooms (``pythonpath`` in pyproject puts this folder on
the import path)."""

from __future__ import annotations

import torch

from dwp_lib.experiment import ExperimentConfig, apply_overrides
from dwp_lib.source_nets import SourceData, SourceNetsConfig

#: The micro size of the pipeline: every stage in seconds (methods chosen by each test).
MICRO = [
    "source.widths=[4,8]",
    "vae.conv1.arch.hidden=4",
    "vae.conv2.arch.hidden=4",
    "vae.conv1.train.steps=3",
    "vae.conv2.train.steps=3",
    "vae.conv1.eval_samples=2",
    "vae.conv2.eval_samples=2",
    "init.channels=[4,8]",
    "init.steps=4",
    "init.eval_every=2",
    "init.batch_size=8",
    "init.test_images=50",
    "init.draw_repeats=1",
    "bayes.channels=[4,8]",
    "bayes.steps=3",
    "bayes.eval_samples=2",
    "grid.sizes=[10]",
    "grid.split_seeds=[0,1]",
    "grid.test_images=40",
]


def micro_config(**extra) -> ExperimentConfig:
    overrides = [
        *MICRO,
        "grid.methods=dwp:dwp,normal:xavier,log-uniform:xavier,det:xavier,dwp/normal:filters",
    ]
    return apply_overrides(
        ExperimentConfig.tiny(), overrides + [f"{k}={v}" for k, v in extra.items()]
    )


def fake_data(n_train: int = 600, n_test: int = 200, seed: int = 0) -> SourceData:
    """Ten random smooth prototypes plus noise: a task a small CNN learns in one epoch."""
    g = torch.Generator().manual_seed(seed)
    blur = torch.nn.functional.avg_pool2d(torch.rand(10, 1, 28, 28, generator=g), 5, 1, 2)
    protos = (blur > blur.flatten(1).median(1).values.view(10, 1, 1, 1)).float()

    def draw(n):
        y = torch.randint(0, 10, (n,), generator=g)
        x = (protos[y] + 0.3 * torch.randn(n, 1, 28, 28, generator=g)).clamp(0, 1)
        return x, y

    (xtr, ytr), (xte, yte) = draw(n_train), draw(n_test)
    return SourceData(xtr, ytr, xte, yte, {"label": "random prototypes (test data)"})


def tiny(**overrides) -> SourceNetsConfig:
    """The tiny preset without pruning (the random task's kernels are small)."""
    return SourceNetsConfig.preset("tiny", **{"prune_norms": (0.0, 0.0), **overrides})


class StandInVAE(torch.nn.Module):
    """What the figures use of a kernel VAE: ``encode``, ``sample``, ``latent_dim``."""

    def __init__(self, k: int, latent_dim: int = 3):
        super().__init__()
        self.k, self.latent_dim = k, latent_dim
        self.enc = torch.nn.Linear(k * k, latent_dim)

    def encode(self, w):
        mu = self.enc(w.flatten(1))
        return mu, torch.zeros_like(mu)

    def sample(self, n, generator=None):
        return torch.randn(n, self.k, self.k, generator=generator)
