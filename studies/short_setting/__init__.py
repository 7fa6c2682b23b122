"""A short training that ranks priors like the authors' 10,000 steps: the search and its
validation table (``results/short-setting-search/``)."""
