"""The whole experiment: source nets -> kernel bank -> kernel VAEs -> init experiment -> priors.

The pipeline of ``book/05_experiment.md`` and of ``python -m dwp_lib reproduce``. One
:class:`ExperimentConfig` (presets ``tiny``/``book``/``paper``) holds every stage's config; any
field can be overridden by a dotted path (``--set bayes.steps=2000``, :func:`apply_overrides`)
or a JSON/TOML file. :class:`Experiment` runs the stages, each cached and resumable, into a run
folder (``results.csv``, ``init_curves.csv``, ``figures/``, ``config.json``,
``provenance.json``). One concept a module, data flowing down: ``names``, ``config``,
``overrides``, ``methods``, ``results``, ``stages``, ``cells``, ``folder``, ``figures``,
``report``, ``committed``, ``runner``, ``command``.
"""

from __future__ import annotations

from .cells import cell_model_path, load_cell_model
from .command import cli, wall_from_saved_estimate
from .committed import results_dir
from .config import ExperimentConfig, GridConfig, config_summary, drop_paths, key_of
from .figures import plot_accuracy_vs_n, plot_init_curves
from .methods import make_init
from .names import PAPER_RESULTS, PIPELINE_INITS, ExperimentError, method_label, parse_method
from .overrides import apply_overrides, config_from, with_notmnist
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
    results_table,
    summarise,
)
from .runner import Experiment
from .stages import estimate_cost, test_subset

__all__ = [
    "PAPER_RESULTS",
    "PIPELINE_INITS",
    "RESULT_COLUMNS",
    "Experiment",
    "ExperimentConfig",
    "ExperimentError",
    "GridConfig",
    "append_row",
    "apply_overrides",
    "cell_model_path",
    "cli",
    "config_from",
    "config_summary",
    "costs_table",
    "describe_run",
    "drop_paths",
    "estimate_cost",
    "find_results",
    "init_table",
    "key_of",
    "load_cell_model",
    "load_results",
    "make_init",
    "method_label",
    "paired_difference",
    "parse_method",
    "plot_accuracy_vs_n",
    "plot_init_curves",
    "read_rows",
    "results_dir",
    "results_table",
    "summarise",
    "test_subset",
    "wall_from_saved_estimate",
    "with_notmnist",
]
