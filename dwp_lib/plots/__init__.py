"""The book's figures, one function each returning a Figure, from tensors or records (no training);
one module per chapter (vi, reparam, vae, implicit_prior, experiment) and :mod:`.common`."""

from __future__ import annotations

from .common import contact_sheet, dataset_title, finish, slice_grid, to_numpy
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

__all__ = ["contact_sheet", "dataset_title", "finish", "slice_grid", "to_numpy", "gaussian_ellipse"]
__all__ += ["plot_blr_grid", "plot_blr_posterior", "plot_mean_field_failure", "plot_q_vs_posterior"]
__all__ += ["plot_vlb_traces", "plot_estimator_histograms", "plot_estimator_variance"]
__all__ += ["plot_gradient_variance_vs_batch", "plot_pixel_posterior", "plot_vi_history"]
__all__ += ["plot_image_samples", "plot_iw_bounds", "plot_kernel_vae_samples"]
__all__ += ["plot_latent_manifold", "plot_reconstructions", "plot_vae_latent_space"]
__all__ += ["plot_vae_training", "KIND_COLOURS", "plot_bank_slices", "plot_bound_and_gap"]
__all__ += ["plot_iw_curves", "plot_penalty_sweep", "plot_posterior_vs_reverse", "plot_slice_kinds"]
__all__ += ["plot_slice_norms", "plot_source_accuracy", "plot_kernel_examples"]
__all__ += ["plot_paired_effects", "real_and_sampled", "slice_panel", "plot_latent_space"]
