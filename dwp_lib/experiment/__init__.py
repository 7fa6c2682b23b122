"""The whole experiment: source nets -> kernel bank -> kernel VAEs -> init experiment -> priors.

This is the pipeline of ``book/05_experiment.md`` and of ``python -m dwp_lib reproduce``. One
:class:`ExperimentConfig` (presets ``tiny``/``book``/``paper``) holds every stage's config:

- ``source``: :class:`~dwp_lib.source_nets.SourceNetsConfig` (the nets, and the bank's pruning);
- ``vae``:    :class:`KernelVAEStageConfig`, one kernel VAE per layer (architecture, training);
- ``init``:   :class:`InitExperimentConfig`, a plain CNN on MNIST from four initialisations;
- ``bayes``:  :class:`~dwp_lib.bayes.BayesConfig`, the Bayesian CNN (steps, lr, log sigma^2...);
- ``grid``:   :class:`GridConfig`, the prior comparison (sizes, priors and inits, split seeds).

``executor`` (:class:`~dwp_lib.executor.ExecutorConfig`) says where the independent units (source
nets, grid cells) run: this machine's processes or a Ray cluster; it changes no result.

Any field can be overridden by a dotted path (:func:`apply_overrides`), from the command line
(``--set bayes.steps=2000 --set source.prune_norms=[0.3,0.1]``) or from a JSON/TOML file
(:func:`load_config_file`), so ablations run through the CLI and are recorded in provenance.

:class:`Experiment` runs the stages, each cached and resumable:

>>> exp = Experiment(ExperimentConfig.preset("tiny"))   # doctest: +SKIP
>>> bank = exp.kernel_bank()       # trains the source nets, or loads them (and says which)
>>> vaes = exp.kernel_vaes()       # {"conv1": KernelVAE, "conv2": KernelVAE}, cached
>>> curves = exp.init_experiment() # rows: init, seed, step, accuracy
>>> rows = exp.prior_grid()        # rows: prior, init, n, seed, accuracies, loss terms...
>>> exp.write_figures(); exp.write_provenance()

Outputs in the run folder: ``results.csv`` (one row per grid cell and split seed, appended as
each finishes, so an interrupted run resumes), ``init_curves.csv``, ``init_costs.json``,
``figures/*.png``, ``config.json`` and ``provenance.json``.

The package, one concept a module (data flows down the list):

- :mod:`~dwp_lib.experiment.names`: methods (``"prior:init"``), priors, inits, labels, the
  paper's table, :class:`ExperimentError`;
- :mod:`~dwp_lib.experiment.config`: the stage configs, presets and the config key;
- :mod:`~dwp_lib.experiment.overrides`: ``--set path=value`` and config files;
- :mod:`~dwp_lib.experiment.methods`: a method's priors and initialisation as objects;
- :mod:`~dwp_lib.experiment.results`: results files, summaries, paired differences, tables;
- :mod:`~dwp_lib.experiment.stages`: the stages' pieces as functions, costs, time estimates;
- :mod:`~dwp_lib.experiment.cells`: one grid cell (here, in a worker process, or on Ray);
- :mod:`~dwp_lib.experiment.folder`: a run folder's checks (settings, config keys, artifacts)
  and its one-writer lock;
- :mod:`~dwp_lib.experiment.figures`: the run's figures (initialisation curves, accuracy vs n);
- :mod:`~dwp_lib.experiment.report`: the run's figures and provenance record;
- :mod:`~dwp_lib.experiment.committed`: where the committed runs are (a checkout, or the copy
  installed with the package);
- :mod:`~dwp_lib.experiment.runner`: :class:`Experiment`, the cached, resumable stages;
- :mod:`~dwp_lib.experiment.command`: ``python -m dwp_lib reproduce``.

Everything is importable from ``dwp_lib.experiment`` itself.
"""

from __future__ import annotations

from .cells import (
    CellContext,
    cell_model_path,
    load_cell_model,
    run_grid_cell,
)
from .command import (
    cli,
    wall_from_saved_estimate,
    wall_table,
)
from .committed import results_dir
from .config import (
    ADDED_AT_DEFAULT,
    EXTENDABLE,
    VAE_BANKS,
    ExperimentConfig,
    GridConfig,
    InitExperimentConfig,
    KernelVAEStageConfig,
    LayerVAEConfig,
    at_default,
    config_differences,
    config_summary,
    drop_paths,
    key_of,
    with_added_fields,
)
from .figures import plot_accuracy_vs_n, plot_init_curves
from .methods import (
    make_init,
    make_priors,
)
from .names import (
    INIT_LABELS,
    INITS,
    LAYER_PRIORS,
    PAPER_RESULTS,
    PIPELINE_INITS,
    PRIOR_LABELS,
    PRIORS,
    RELEASED,
    ExperimentError,
    method_label,
    parse_method,
    vae_sources,
)
from .overrides import (
    apply_overrides,
    config_from,
    load_config_file,
    parse_value,
    set_field,
    with_notmnist,
)
from .results import (
    CURVE_COLUMNS,
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
from .runner import (
    Experiment,
)
from .stages import (
    DEVICE_COUNTS,
    SOURCE_IMAGES,
    estimate_cost,
    init_costs,
    mean_log_var,
    test_subset,
    train_plain_cnn_curve,
    wall_on_devices,
)

__all__ = [
    "ADDED_AT_DEFAULT",
    "CURVE_COLUMNS",
    "CellContext",
    "DEVICE_COUNTS",
    "EXTENDABLE",
    "Experiment",
    "ExperimentConfig",
    "ExperimentError",
    "GridConfig",
    "INITS",
    "INIT_LABELS",
    "InitExperimentConfig",
    "KernelVAEStageConfig",
    "LAYER_PRIORS",
    "LayerVAEConfig",
    "PAPER_RESULTS",
    "PIPELINE_INITS",
    "PRIORS",
    "PRIOR_LABELS",
    "RELEASED",
    "RESULT_COLUMNS",
    "SOURCE_IMAGES",
    "VAE_BANKS",
    "append_row",
    "apply_overrides",
    "at_default",
    "cli",
    "config_differences",
    "config_from",
    "config_summary",
    "costs_table",
    "describe_run",
    "drop_paths",
    "estimate_cost",
    "find_results",
    "init_costs",
    "init_table",
    "key_of",
    "load_config_file",
    "load_results",
    "make_init",
    "make_priors",
    "mean_log_var",
    "method_label",
    "paired_difference",
    "plot_accuracy_vs_n",
    "plot_init_curves",
    "parse_method",
    "parse_value",
    "read_rows",
    "results_dir",
    "results_table",
    "run_grid_cell",
    "cell_model_path",
    "load_cell_model",
    "set_field",
    "summarise",
    "test_subset",
    "train_plain_cnn_curve",
    "vae_sources",
    "wall_from_saved_estimate",
    "wall_on_devices",
    "wall_table",
    "with_added_fields",
    "with_notmnist",
]
