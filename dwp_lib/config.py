"""Presets: one switch that sizes every stage.

Every stage of the pipeline has a config dataclass with three presets built by the same code:

- ``tiny``: seconds; used by the tests and by ``DWP_PRESET=tiny`` when the chapters run under nbval;
- ``book``: minutes on a 2-core laptop CPU; the default for the book build;
- ``paper``: faithful to the authors (Atanov et al. 2019); meant for a GPU.

Chapters call :func:`current_preset` once and never branch on it: they pass the name to
``SomeConfig.preset(name)``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Literal, TypeVar

PresetName = Literal["tiny", "book", "paper"]
PRESETS: tuple[str, ...] = ("tiny", "book", "paper")
ENV_VAR = "DWP_PRESET"

T = TypeVar("T")


def check_preset(name: str) -> str:
    """Return ``name`` if it is a known preset, else raise a ValueError listing the valid ones."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets are {', '.join(PRESETS)}")
    return name


def current_preset(default: str = "book") -> str:
    """The preset named by the ``DWP_PRESET`` environment variable (``book`` when unset)."""
    name = os.environ.get(ENV_VAR, "").strip() or default
    try:
        return check_preset(name)
    except ValueError as err:
        raise ValueError(f"{ENV_VAR}={name!r}: {err}") from None


def preset_of(cls: type[T], name: str, **overrides) -> T:
    """Build ``cls`` from its ``tiny()``/``book()``/``paper()`` classmethod, with field overrides.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class C:
    ...     steps: int = 1
    ...     @classmethod
    ...     def tiny(cls): return cls(steps=2)
    >>> preset_of(C, "tiny", steps=3).steps
    3
    """
    check_preset(name)
    factory = getattr(cls, name, None)
    if factory is None:
        raise ValueError(f"{cls.__name__} has no {name!r} preset")
    cfg = factory()
    return dataclasses.replace(cfg, **overrides) if overrides else cfg


def to_dict(cfg) -> dict:
    """A JSON-ready dict of a (possibly nested) config dataclass, for provenance records."""
    return dataclasses.asdict(cfg)
