"""Studies that question single findings: each folder holds its code, figures, findings note and
tests, reads the committed runs under ``results/`` and runs from the repository's root
(``python -m studies.<name>``). Not installed with ``dwp_lib``."""

from pathlib import Path

#: The committed runs every study reads (``results/`` of the repository).
RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
