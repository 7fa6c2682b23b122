"""Each kernel bank's fingerprint and its distance to the released bank, checked against the
accuracy of the priors trained on the banks (``results/bank-fingerprint/``)."""
