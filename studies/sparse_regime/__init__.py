"""How long a source net must train with the authors' recipe to reach their banks' sparse regime:
live fractions and norms of one net's kernel slices against Adam steps (a resumable curve)."""
