"""Kernel statistics of our banks beside the released ones (table and figure)."""
