"""Plays Colab: the committed notebooks run in a fresh environment whose only set-up is their
own first cell.

Run with ``make colab-test`` (sets ``DWP_COLAB_TEST=1``; a few minutes, most of it installing
PyTorch). A new virtual environment gets Python, pip and a Jupyter kernel (``ipykernel``, which
a Colab runtime has) and nothing else: no torch, numpy, matplotlib or ``dwp_lib``. Each
``book/0N_x.ipynb`` is executed in it, as committed, at the tiny preset, with
``DWP_LIB_SOURCE`` pointing the install cell at this checkout instead of the public
repository. Before each notebook ``dwp_lib`` is uninstalled, so every notebook's install cell
really installs it (its dependencies stay installed after the first, as they would in Colab,
which ships them). The install cell must print nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import make_notebooks  # noqa: E402

pytestmark = pytest.mark.skipif(
    os.environ.get("DWP_COLAB_TEST") != "1",
    reason="installs PyTorch into a fresh venv (minutes): run `make colab-test`",
)

KERNEL = "dwp-colab-sim"
CELL_TIMEOUT = 900


def _run(*cmd, **kwargs):
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def fresh_kernel(tmp_path_factory):
    """A kernelspec whose Python is a brand-new venv with only pip and ipykernel."""
    tmp = tmp_path_factory.mktemp("colab")
    venv = tmp / "venv"
    content = tmp / "content"  # the working folder, like Colab's /content: not the checkout,
    content.mkdir()  # whose ./dwp_lib would otherwise be importable without installing
    base = getattr(sys, "_base_executable", sys.executable)
    _run(base, "-m", "venv", str(venv))
    python = venv / "bin" / "python"
    probe = subprocess.run([python, "-c", "import dwp_lib"], capture_output=True, cwd=content)
    assert probe.returncode != 0, "the fresh venv already sees dwp_lib"
    _run(python, "-m", "pip", "install", "-q", "ipykernel")
    for absent in ("torch", "numpy", "matplotlib", "dwp_lib"):
        probe = subprocess.run([python, "-c", f"import {absent}"], capture_output=True, cwd=content)
        assert probe.returncode != 0, f"the fresh venv should not have {absent} yet"
    spec = tmp / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec.joinpath("kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "Colab-like", "language": "python"})
    )
    return python, tmp / "jupyter", content


PLACEHOLDERS = ("has none", "No committed", "are not installed with this copy")


@pytest.mark.parametrize(
    "md", [*make_notebooks.chapters(), ROOT / "book" / "conclusion.md"], ids=lambda p: p.stem
)
def test_notebook_runs_from_its_install_cell(md, fresh_kernel, monkeypatch):
    python, jupyter_path, content = fresh_kernel
    _run(python, "-m", "pip", "uninstall", "-y", "-q", "dwp_lib", cwd=content)
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_path))
    monkeypatch.setenv("DWP_LIB_SOURCE", str(ROOT))
    monkeypatch.setenv("DWP_PRESET", "tiny")
    monkeypatch.setenv("DWP_PROGRESS", "0")
    for leak in ("PYTHONPATH", "VIRTUAL_ENV", "MPLBACKEND"):
        monkeypatch.delenv(leak, raising=False)

    path = make_notebooks.notebook_path(md)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, kernel_name=KERNEL, timeout=CELL_TIMEOUT, resources={"metadata": {"path": str(content)}}
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    print(f"{path.name}: {time.perf_counter() - start:.0f} s")

    install = nb.cells[0]
    assert make_notebooks.INSTALL_TAG in install.metadata["tags"]
    assert install.outputs == [], f"the install cell printed {install.outputs}"
    # the committed runs came with the install (dwp_results): no cell says it has none
    texts = [
        str(o.get("text", "")) + json.dumps(o.get("data", {}).get("text/markdown", ""))
        for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
    ]  # fmt: skip
    shown = [p for p in PLACEHOLDERS for t in texts if p in t]
    assert not shown, f"{path.name} shows placeholders instead of committed runs: {shown}"
    where = _run(python, "-c", "import dwp_lib; print(dwp_lib.__file__)", cwd=content).strip()
    assert Path(where).is_relative_to(python.parent.parent), f"dwp_lib imported from {where}"
