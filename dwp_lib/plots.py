"""The figures of the book, one function per figure, each returning a matplotlib Figure.

Functions take plain tensors or result records (never train anything), so the HTML book, the
CLI and the tests draw the same pictures. Sections follow the chapters.
"""

from __future__ import annotations

import matplotlib.pyplot as plt  # noqa: F401  (used by the sections below)
import numpy as np  # noqa: F401
import torch  # noqa: F401

# --- data (contact sheets) -------------------------------------------------------------------

# --- chapter 1: variational inference --------------------------------------------------------

# --- chapter 2: the reparametrisation trick --------------------------------------------------

# --- chapter 3: the VAE and the kernel VAE ---------------------------------------------------

# --- source nets and the kernel bank ---------------------------------------------------------

# --- Bayesian CNN and priors -----------------------------------------------------------------

# --- chapters 4 and 5: the implicit prior and the experiment ---------------------------------
