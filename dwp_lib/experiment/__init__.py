"""The whole experiment: source nets -> kernel bank -> kernel VAEs -> init experiment -> priors, as
in ``book/05`` and ``python -m dwp_lib reproduce``: an :class:`ExperimentConfig` (presets, dotted
overrides) drives an :class:`Experiment`, whose stages are cached and resume in a run folder."""

from __future__ import annotations

from .cells import cell_model_path, load_cell_model
from .command import cli, wall_from_saved_estimate
from .config import ExperimentConfig, GridConfig, config_summary, drop_paths, key_of
from .figures import plot_accuracy_vs_n, plot_init_curves
from .methods import make_init
from .names import PAPER_RESULTS, PIPELINE_INITS, ExperimentError, method_label, parse_method
from .overrides import apply_overrides, config_from, rerun_config, with_notmnist
from .results import (
    RESULT_COLUMNS,
    append_row,
    costs_table,
    describe_run,
    find_results,
    init_table,
    load_results,
    paired_difference,
    read_rows,
    results_dir,
    results_table,
    summarise,
)
from .runner import Experiment
from .stages import estimate_cost, test_subset

__all__ = ["cell_model_path", "load_cell_model", "cli", "wall_from_saved_estimate", "results_dir"]
__all__ += ["ExperimentConfig", "GridConfig", "config_summary", "drop_paths", "key_of"]
__all__ += ["plot_accuracy_vs_n", "plot_init_curves", "make_init"]
__all__ += ["PAPER_RESULTS", "PIPELINE_INITS", "ExperimentError", "method_label", "parse_method"]
__all__ += ["apply_overrides", "config_from", "rerun_config", "with_notmnist"]
__all__ += ["RESULT_COLUMNS", "append_row", "costs_table", "describe_run", "find_results"]
__all__ += ["init_table", "load_results", "paired_difference", "read_rows", "results_table"]
__all__ += ["summarise", "Experiment", "estimate_cost", "test_subset"]
