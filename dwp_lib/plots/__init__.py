"""The figures of the book, one function per figure, each returning a matplotlib Figure.

Functions take plain tensors or result records (never train anything), so the HTML book, the
CLI and the tests draw the same pictures. One module per chapter, and what they share:

- :mod:`~dwp_lib.plots.common`          tensors to arrays, tiled slices, contact sheets
- :mod:`~dwp_lib.plots.vi`              chapter 1, variational inference
- :mod:`~dwp_lib.plots.reparam`         chapter 2, the reparametrisation trick
- :mod:`~dwp_lib.plots.vae`             chapter 3, the VAE and the kernel VAE
- :mod:`~dwp_lib.plots.implicit_prior`  chapter 4, the kernel bank and the implicit prior
- :mod:`~dwp_lib.plots.experiment`      chapter 5, the kernel VAEs' samples and latent space (the
  pipeline's own figures are in :mod:`dwp_lib.experiment.figures`)

Everything is importable from ``dwp_lib.plots`` itself.
"""

from __future__ import annotations

from .common import contact_sheet, dataset_title, slice_grid, to_numpy
from .experiment import (
    plot_kernel_examples,
    plot_latent_space,
    plot_paired_effects,
    real_and_sampled,
    slice_panel,
)
from .implicit_prior import (
    KIND_COLOURS,
    plot_bank_slices,
    plot_bound_and_gap,
    plot_iw_curves,
    plot_penalty_sweep,
    plot_posterior_vs_reverse,
    plot_slice_kinds,
    plot_slice_norms,
    plot_source_accuracy,
)
from .reparam import (
    plot_estimator_histograms,
    plot_estimator_variance,
    plot_gradient_variance_vs_batch,
    plot_pixel_posterior,
    plot_vi_history,
)
from .vae import (
    plot_image_samples,
    plot_iw_bounds,
    plot_kernel_vae_samples,
    plot_latent_manifold,
    plot_reconstructions,
    plot_vae_latent_space,
    plot_vae_training,
)
from .vi import (
    gaussian_ellipse,
    plot_blr_grid,
    plot_blr_posterior,
    plot_mean_field_failure,
    plot_q_vs_posterior,
    plot_vlb_traces,
)

__all__ = [
    # shared
    "contact_sheet",
    "dataset_title",
    "slice_grid",
    "to_numpy",
    # chapter 1
    "gaussian_ellipse",
    "plot_blr_grid",
    "plot_blr_posterior",
    "plot_mean_field_failure",
    "plot_q_vs_posterior",
    "plot_vlb_traces",
    # chapter 2
    "plot_estimator_histograms",
    "plot_estimator_variance",
    "plot_gradient_variance_vs_batch",
    "plot_pixel_posterior",
    "plot_vi_history",
    # chapter 3
    "plot_image_samples",
    "plot_iw_bounds",
    "plot_kernel_vae_samples",
    "plot_latent_manifold",
    "plot_reconstructions",
    "plot_vae_latent_space",
    "plot_vae_training",
    # chapter 4
    "KIND_COLOURS",
    "plot_bank_slices",
    "plot_bound_and_gap",
    "plot_iw_curves",
    "plot_penalty_sweep",
    "plot_posterior_vs_reverse",
    "plot_slice_kinds",
    "plot_slice_norms",
    "plot_source_accuracy",
    # chapter 5
    "plot_kernel_examples",
    "plot_paired_effects",
    "real_and_sampled",
    "slice_panel",
    "plot_latent_space",
]
