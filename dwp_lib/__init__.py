"""dwp_lib: the deep weight prior (Atanov et al., ICLR 2019), hands-on.

One module per concept, in the order the book teaches them:

- :mod:`dwp_lib.config`      presets (``tiny`` / ``book`` / ``paper``) and the ``DWP_PRESET`` switch
- :mod:`dwp_lib.artifacts`   the cache: hashes, provenance, atomic writes
- :mod:`dwp_lib.data`        MNIST and notMNIST (real or notMNIST-style synthetic)
- :mod:`dwp_lib.vi`          variational inference: mean-field Gaussians, KL, ELBO, estimators
- :mod:`dwp_lib.vae`         the VAE and the kernel VAEs (the deep weight prior's generative model)
- :mod:`dwp_lib.source_nets` the source CNNs and the kernel bank (``slices``)
- :mod:`dwp_lib.bayes`       Bayesian conv layers, the priors, the auxiliary bound
- :mod:`dwp_lib.experiment`  the full pipeline (``python -m dwp_lib reproduce``)
- :mod:`dwp_lib.plots`       the figures of the book
"""

__version__ = "0.1.0"
