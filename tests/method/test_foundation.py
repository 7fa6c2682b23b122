"""The foundation: presets, the cache, the notebook harness."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import dwp_lib
from dwp_lib import artifacts, config

ROOT = Path(__file__).resolve().parents[2]


def test_version():
    assert isinstance(dwp_lib.__version__, str) and dwp_lib.__version__.count(".") == 2


def test_current_preset(monkeypatch):
    monkeypatch.delenv("DWP_PRESET", raising=False)
    assert config.current_preset() == "book"
    monkeypatch.setenv("DWP_PRESET", "tiny")
    assert config.current_preset() == "tiny"
    monkeypatch.setenv("DWP_PRESET", "huge")
    with pytest.raises(ValueError, match="tiny, book, paper"):
        config.current_preset()


def test_preset_of_overrides():
    @dataclasses.dataclass
    class C:
        steps: int = 1

        @classmethod
        def tiny(cls):
            return cls(steps=2)

    assert config.preset_of(C, "tiny").steps == 2
    assert config.preset_of(C, "tiny", steps=5).steps == 5
    with pytest.raises(ValueError, match="no 'paper' preset"):
        config.preset_of(C, "paper")


def test_every_stage_config_has_the_one_preset_mechanism():
    """Every class of the library with tiny/book/paper presets builds them through
    config.Presets (``Cls.preset(name, **overrides)``); each of its three presets builds."""
    import importlib
    import inspect
    import pkgutil

    import dwp_lib

    found = {}
    for info in pkgutil.walk_packages(dwp_lib.__path__, "dwp_lib."):
        if info.name.endswith("__main__"):  # importing it runs the command line
            continue
        module = importlib.import_module(info.name)
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and all(
                isinstance(inspect.getattr_static(cls, p, None), classmethod)
                for p in ("tiny", "book", "paper")
            ):
                found[f"{module.__name__}.{name}"] = cls
    assert len(found) >= 12, sorted(found)
    for name, cls in found.items():
        if name.endswith(".ExperimentConfig"):  # preset(name, overrides): the --set language
            assert cls.preset("tiny").from_preset == "tiny"
            continue
        assert issubclass(cls, config.Presets), name
        for preset in config.PRESETS:
            assert isinstance(cls.preset(preset), cls), (name, preset)


def test_artifact_roundtrip_and_corruption(tmp_path, monkeypatch):
    monkeypatch.setenv("DWP_CACHE", str(tmp_path / "cache"))
    path = artifacts.cache_dir("x") / "a.pt"
    digest = artifacts.save_artifact(path, {"w": torch.arange(5.0)}, {"seed": 3})
    obj, record = artifacts.load_artifact(path)
    assert torch.equal(obj["w"], torch.arange(5.0))
    assert record["sha256"] == digest and record["provenance"] == {"seed": 3}
    assert record["environment"]["dwp_lib"] == dwp_lib.__version__
    assert re.fullmatch(r".+ \(.+\)", record["environment"]["cpu"])  # model (instruction set)
    # truncate the file: detected, with the file named and the fix
    path.write_bytes(path.read_bytes()[:-10])
    assert not artifacts.is_valid_artifact(path)
    with pytest.raises(artifacts.CorruptArtifactError, match="a.pt is corrupted.*rerun"):
        artifacts.load_artifact(path)


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with artifacts.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


CHAPTER = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---
# A chapter

```{{code-cell}} ipython3
x = 1 + 1
```

```{{code-cell}} ipython3
{body}
```
"""


@pytest.mark.parametrize("body,ok", [("assert x == 2", True), ("raise ValueError('boom')", False)])
def test_notebook_harness_fails_on_a_raising_cell(tmp_path, body, ok):
    chapter = tmp_path / "chapter.md"
    chapter.write_text(CHAPTER.format(body=body))
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "run_chapters.py"),
            "--out",
            str(tmp_path / "nb"),
            str(chapter),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (proc.returncode == 0) == ok, proc.stdout[-2000:] + proc.stderr[-2000:]
    if not ok:
        assert "boom" in proc.stdout


def test_cli_help():
    proc = subprocess.run(
        [sys.executable, "-m", "dwp_lib", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0
    for command in ("data", "source-nets", "reproduce"):
        assert command in proc.stdout
