"""The table of every prior tried against the released one (authors' setting, n = 50)."""
