"""What the studies share (``studies/__init__.py``)."""

import shlex
from pathlib import Path

from studies import command_line


def test_command_line_names_the_study_and_runs_again_in_a_shell():
    line = command_line("studies.bank_stats", ["--also", "configs/a b.toml", "--out", "r"])
    assert line == "python -m studies.bank_stats --also 'configs/a b.toml' --out r"
    assert shlex.split(line)[3:] == ["--also", "configs/a b.toml", "--out", "r"]


def test_no_study_records_another_program_as_its_command():
    # a study runs as ``python -m studies.<name>``: a provenance that says ``python -m dwp_lib``
    # names a command that does not exist
    here = Path(__file__).parent
    wrong = [
        str(p.relative_to(here))
        for p in here.rglob("*.py")
        if not p.name.startswith("test_") and '"python -m dwp_lib "' in p.read_text()
    ]
    assert not wrong, wrong
