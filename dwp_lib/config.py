"""Presets that size every stage (``tiny``: seconds, for tests; ``book``: minutes on a 2-core CPU;
``paper``: the authors', for a GPU), and the checks of a config's field values."""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import types
import typing
from collections.abc import Mapping
from typing import TypeVar

PRESETS: tuple[str, ...] = ("tiny", "book", "paper")
ENV_VAR = "DWP_PRESET"

T = TypeVar("T")


class ConfigValueError(ValueError):
    """A config field holds a value of the wrong type or out of range (names the field)."""


def check_preset(name: str) -> str:
    """``name`` if it is a known preset, else a :class:`ConfigValueError` listing them."""
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
    """``cls`` from its ``tiny()``/``book()``/``paper()`` classmethod, with field overrides."""
    check_preset(name)
    factory = getattr(cls, name, None)
    if factory is None:
        raise ValueError(f"{cls.__name__} has no {name!r} preset")
    cfg = factory()
    return dataclasses.replace(cfg, **overrides) if overrides else cfg


class Presets:
    """Mixin of every stage config: ``Cls.preset(name, **overrides)``; ``book()``: ``cls()``."""

    @classmethod
    def preset(cls, name: str, **overrides):
        return preset_of(cls, name, **overrides)

    @classmethod
    def book(cls):
        return cls()


def to_dict(cfg) -> dict:
    """A JSON-ready dict of a (possibly nested) config dataclass, for provenance records."""
    return dataclasses.asdict(cfg)


#: integer fields that may be 0 (seeds, process counts); every other integer must be >= 1
NON_NEGATIVE_INTS = frozenset({"seed", "seeds", "split_seeds", "test_seed", "workers", "num_gpus"})
#: number fields that must be > 0 / >= 0; every number must be finite
POSITIVE_NUMBERS = frozenset(
    {"lr", "grid_radius", "reverse_lr", "prior_var", "noise_var", "cpus_per_task"}
    | {"connect_timeout"}
)
NON_NEGATIVE_NUMBERS = frozenset(
    {"l2", "kl_weight", "det_weight_decay", "z_var_floor", "w_var_floor", "prune_norms"}
    | {"gpus_per_net", "gpus_per_cell"}
)
#: number fields in the open interval (0, 1)
FRACTIONS = frozenset({"test_fraction"})
#: the largest seed: torch's generators take 64-bit seeds; [0, 2**63 - 1] fits every consumer
MAX_SEED = 2**63 - 1


def _check_value(name: str, path: str, value, hint) -> None:
    """A :class:`ConfigValueError` if ``value`` breaks ``hint`` or the range rules of ``name``."""
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
        items = list(args)
        if len(args) == 2 and args[1] is Ellipsis:
            items = [args[0]] * len(value)
        elif len(value) != len(args):
            raise ConfigValueError(f"{path}={value!r}: expected {len(args)} values")
        for i, (v, h) in enumerate(zip(value, items, strict=True)):
            _check_value(name, f"{path}[{i}]", v, h)
        return
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigValueError(f"{path}={value!r}: expected a mapping")
        for k, v in value.items():
            _check_value(name, f"{path}.{k}", v, args[1] if args else typing.Any)
        return
    if hint is bool and not isinstance(value, bool):
        raise ConfigValueError(f"{path}={value!r}: expected true or false")
    elif hint is int:
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            raise ConfigValueError(f"{path}={value!r}: expected an integer")
        low = 0 if name in NON_NEGATIVE_INTS else 1
        if value < low:
            raise ConfigValueError(f"{path}={value!r}: must be >= {low}")
        if name.endswith(("seed", "seeds")) and value > MAX_SEED:
            raise ConfigValueError(
                f"{path}={value!r}: a seed must be at most 2**63 - 1 = {MAX_SEED} (torch's "
                "64-bit seed range); choose a smaller one"
            )
    elif hint is float:
        real = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if not real or not math.isfinite(value):
            raise ConfigValueError(f"{path}={value!r}: expected a finite number")
        if name in POSITIVE_NUMBERS and not value > 0:
            raise ConfigValueError(f"{path}={value!r}: must be > 0")
        if name in NON_NEGATIVE_NUMBERS and value < 0:
            raise ConfigValueError(f"{path}={value!r}: must be >= 0")
        if name in FRACTIONS and not 0 < value < 1:
            raise ConfigValueError(f"{path}={value!r}: must be between 0 and 1")
    elif hint is str and not isinstance(value, str):
        raise ConfigValueError(f"{path}={value!r}: expected text")


def check_fields(cfg, prefix: str = "") -> None:
    """Check each field of ``cfg`` (nested: dotted paths) against its type and range rules."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        path = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            check_fields(value, path + ".")
        else:
            _check_value(f.name, path, value, hints.get(f.name, typing.Any))
