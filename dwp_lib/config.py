"""Presets: one switch that sizes every stage.

Every stage of the pipeline has a config dataclass with three presets built by the same code:

- ``tiny``: seconds; used by the tests and by ``DWP_PRESET=tiny`` when the chapters run under nbval;
- ``book``: minutes on a 2-core laptop CPU; the default for the book build;
- ``paper``: faithful to the authors (Atanov et al. 2019); meant for a GPU.

Chapters call :func:`current_preset` once and never branch on it: they pass the name to
``SomeConfig.preset(name)`` (every stage config inherits :class:`Presets`).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import types
import typing
from collections.abc import Mapping
from typing import Literal, TypeVar

PresetName = Literal["tiny", "book", "paper"]
PRESETS: tuple[str, ...] = ("tiny", "book", "paper")
ENV_VAR = "DWP_PRESET"

T = TypeVar("T")


class ConfigValueError(ValueError):
    """A config field holds a value of the wrong type or out of range (names the field)."""


def check_preset(name: str) -> str:
    """Return ``name`` if it is a known preset, else raise a :class:`ConfigValueError` (a
    ValueError) listing the valid ones."""
    if name not in PRESETS:
        raise ConfigValueError(f"unknown preset {name!r}; valid presets are {', '.join(PRESETS)}")
    return name


def current_preset(default: str = "book") -> str:
    """The preset named by the ``DWP_PRESET`` environment variable (``book`` when unset)."""
    name = os.environ.get(ENV_VAR, "").strip() or default
    if name not in PRESETS:
        raise ConfigValueError(
            f"{ENV_VAR}={name!r} is not a preset: set it to one of {', '.join(PRESETS)}, or "
            f"unset it (then {default})"
        )
    return name


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


class Presets:
    """Mixin of every stage config: ``Cls.preset(name, **overrides)`` builds the ``tiny``,
    ``book`` or ``paper`` preset from the class's classmethod of that name (:func:`preset_of`).

    The one preset mechanism of the library: each stage's three sizes live in its own class, next
    to the fields they set; the experiment's preset is the stages' presets put together.
    """

    @classmethod
    def preset(cls, name: str, **overrides):
        return preset_of(cls, name, **overrides)


def to_dict(cfg) -> dict:
    """A JSON-ready dict of a (possibly nested) config dataclass, for provenance records."""
    return dataclasses.asdict(cfg)


# ------------------------------------------------------------------------------------------------
# Checking a config's values against its fields' types, when it is built
# ------------------------------------------------------------------------------------------------

#: integer fields that may be 0 (seeds, process counts); every other integer must be >= 1
NON_NEGATIVE_INTS = frozenset({"seed", "seeds", "split_seeds", "test_seed", "workers", "num_gpus"})
#: number fields that must be > 0 / >= 0; every number must be finite
POSITIVE_NUMBERS = frozenset(
    {"lr", "grid_radius", "reverse_lr", "prior_var", "noise_var", "cpus_per_task"}
)
NON_NEGATIVE_NUMBERS = frozenset(
    {"l2", "kl_weight", "det_weight_decay", "z_var_floor", "w_var_floor", "prune_norms"}
    | {"gpus_per_net", "gpus_per_cell"}
)
#: number fields in the open interval (0, 1)
FRACTIONS = frozenset({"test_fraction"})
#: the largest seed: torch's generators take 64-bit seeds; [0, 2**63 - 1] fits every consumer
MAX_SEED = 2**63 - 1


def is_seed(name: str) -> bool:
    """Whether a field called ``name`` holds seeds (``seed``, ``seeds``, ``split_seeds``, ...)."""
    return name.endswith(("seed", "seeds"))


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _check_value(name: str, path: str, value, hint) -> None:
    """Raise :class:`ConfigValueError` if ``value`` does not fit the annotation ``hint`` and the
    range rules for a field called ``name``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            try:
                return _check_value(name, path, value, rest[0])
            except ConfigValueError as err:
                raise ConfigValueError(f"{err} (or None)") from None
        return
    if origin is typing.Literal:
        if value not in args:
            raise ConfigValueError(f"{path}={value!r}: use one of {', '.join(map(repr, args))}")
        return
    if origin is tuple:
        if not isinstance(value, tuple | list):
            raise ConfigValueError(f"{path}={value!r}: expected a list")
        if len(args) == 2 and args[1] is Ellipsis:
            items = [args[0]] * len(value)
        else:
            if len(value) != len(args):
                raise ConfigValueError(f"{path}={value!r}: expected {len(args)} values")
            items = list(args)
        for i, (v, h) in enumerate(zip(value, items, strict=True)):
            _check_value(name, f"{path}[{i}]", v, h)
        return
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigValueError(f"{path}={value!r}: expected a mapping")
        for k, v in value.items():
            _check_value(name, f"{path}.{k}", v, args[1] if args else typing.Any)
        return
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigValueError(f"{path}={value!r}: expected true or false")
    elif hint is int:
        if not _is_int(value):
            raise ConfigValueError(f"{path}={value!r}: expected an integer")
        low = 0 if name in NON_NEGATIVE_INTS else 1
        if value < low:
            raise ConfigValueError(f"{path}={value!r}: must be >= {low}")
        if is_seed(name) and value > MAX_SEED:
            raise ConfigValueError(
                f"{path}={value!r}: a seed must be at most 2**63 - 1 = {MAX_SEED} (torch's "
                "64-bit seed range); choose a smaller one"
            )
    elif hint is float:
        if not _is_number(value) or not math.isfinite(value):
            raise ConfigValueError(f"{path}={value!r}: expected a finite number")
        if name in POSITIVE_NUMBERS and not value > 0:
            raise ConfigValueError(f"{path}={value!r}: must be > 0")
        if name in NON_NEGATIVE_NUMBERS and value < 0:
            raise ConfigValueError(f"{path}={value!r}: must be >= 0")
        if name in FRACTIONS and not 0 < value < 1:
            raise ConfigValueError(f"{path}={value!r}: must be between 0 and 1")
    elif hint is str:
        if not isinstance(value, str):
            raise ConfigValueError(f"{path}={value!r}: expected text")


def check_fields(cfg, prefix: str = "") -> None:
    """Check every field of the config dataclass ``cfg`` against its annotation: integers are
    integers (not 2.5, not true) and >= 1 (seeds and worker counts >= 0; seeds at most
    2**63 - 1), numbers are finite (learning rates > 0, weights >= 0), text is text, lists hold
    such values; nested configs are checked with their dotted path. Raises :class:`ConfigValueError` naming the field."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        path = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            check_fields(value, path + ".")
        else:
            _check_value(f.name, path, value, hints.get(f.name, typing.Any))
