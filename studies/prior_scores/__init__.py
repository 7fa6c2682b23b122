"""Score the released prior and ours as densities over kernels (ELBO, IW log p(w))."""
