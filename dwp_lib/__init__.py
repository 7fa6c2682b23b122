"""dwp_lib: the deep weight prior (Atanov et al., ICLR 2019), hands-on.

One module per concept, in the order the book teaches them; data flows downwards (a module
imports only modules above it or beside it, ``tests/test_layout.py``):

- :mod:`dwp_lib.config`         presets (``tiny`` / ``book`` / ``paper``, one mechanism) and ``DWP_PRESET``
- :mod:`dwp_lib.artifacts`      the cache: hashes, provenance, atomic writes
- :mod:`dwp_lib.data`           MNIST and notMNIST (real or notMNIST-style synthetic)
- :mod:`dwp_lib.gaussian`       the diagonal Gaussian: log-densities, samples, entropies, KLs
- :mod:`dwp_lib.train`          the one optimisation loop, its schedule, its checks
- :mod:`dwp_lib.vi`             chapter 1: variational families, the bound, Bayesian linear regression
- :mod:`dwp_lib.reparam`        chapter 2: gradient estimators, local reparametrisation, mini-batch VI
- :mod:`dwp_lib.vae`            chapter 3: the VAE, the MNIST VAE, VAE training
- :mod:`dwp_lib.kernel_layers`  the kernel VAE's layer lists (ours and the authors')
- :mod:`dwp_lib.kernel_vae`     the kernel VAE: the deep weight prior's generative model
- :mod:`dwp_lib.nets`           FConv, its Xavier init, conv L2, accuracy
- :mod:`dwp_lib.source_nets`    the source CNNs trained on notMNIST
- :mod:`dwp_lib.kernel_bank`    their kernels cut into slices, pruned, split
- :mod:`dwp_lib.priors`         N(0, 1), log-uniform and the deep weight prior, one interface
- :mod:`dwp_lib.bayes`          Bayesian conv layers, the Bayesian CNN, its ELBO and training
- :mod:`dwp_lib.inits`          default, Xavier, filters and dwp initialisations
- :mod:`dwp_lib.implicit_prior` chapter 4's measurements of the auxiliary bound
- :mod:`dwp_lib.release`        the authors' released kernel VAEs and banks (GPL-3.0)
- :mod:`dwp_lib.experiment`     the full pipeline (``python -m dwp_lib reproduce``)
- :mod:`dwp_lib.plots`          the figures of the book, one module per chapter
- :mod:`dwp_lib.prior_scores`, :mod:`dwp_lib.bank_stats`, :mod:`dwp_lib.conclusions`,
  :mod:`dwp_lib.ablation` (+ ``ablation_tables``), :mod:`dwp_lib.own_prior` (+
  ``source_curve``): measurements the book reads;
  :mod:`dwp_lib.executor` (local processes or Ray) and :mod:`dwp_lib.cli` (the command line)
"""

__version__ = "0.1.0"
