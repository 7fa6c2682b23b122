"""Dotted overrides of the config (``--set bayes.steps=2000``) and JSON/TOML config files, each
value coerced to its field's type (OmegaConf 2.3 lacks fixed-length tuples and ``Literal``)."""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config import ConfigValueError, check_preset
from .config import ExperimentConfig
from .names import ExperimentError


def parse_value(text: str) -> Any:
    """A command-line value: JSON if it parses, ``None`` for ``None``, else the text itself."""
    text = text.strip()
    if text in ("None", "none"):
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _coerce(value: Any, current: Any, path: str) -> Any:
    """``value`` as the type of the field's ``current`` value (error if it cannot be)."""
    if value is None or current is None:
        return value
    if dataclasses.is_dataclass(current):
        if not isinstance(value, Mapping):
            raise ExperimentError(f"{path} is a section; set its fields ({path}.FIELD=VALUE)")
        out = current
        for k, v in value.items():
            out = _set_path(out, str(k).split("."), v, f"{path}.{k}")
        return out
    if isinstance(current, bool):
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        if not isinstance(value, bool):
            raise ExperimentError(f"{path} is true/false, got {value!r}")
        return value
    if isinstance(current, int):
        bad = isinstance(value, bool) or not isinstance(value, int | float)
        if bad or (isinstance(value, float) and not value.is_integer()):
            raise ExperimentError(f"{path} is an integer, got {value!r}")
        return int(value)
    if isinstance(current, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ExperimentError(f"{path} is a number, got {value!r}")
        return float(value)
    if isinstance(current, str):
        return str(value)
    if isinstance(current, tuple | list):
        if isinstance(value, str):  # "a,b" or "[a,b]" (a list of words is not JSON)
            text = value.strip()
            text = text[1:-1] if text.startswith("[") and text.endswith("]") else text
            value = [parse_value(v) for v in text.split(",") if v.strip()]
        elif not isinstance(value, list | tuple):
            value = [value]
        like = current[0] if len(current) else None
        return tuple(_coerce(v, like, f"{path}[{i}]") for i, v in enumerate(value))
    if isinstance(current, dict):
        if not isinstance(value, Mapping):
            raise ExperimentError(f"{path} is a mapping, got {value!r}")
        return {str(k): v for k, v in value.items()}
    return value


def _example_of(hint: Any) -> Any:
    """A value of the (optional) type ``hint``, for coercing a setting whose field is None."""
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    kind = typing.get_origin(args[0]) or args[0]
    return {int: 0, float: 0.0, str: "", bool: False, tuple: (), dict: {}}.get(kind)


def _set_path(obj: Any, parts: list[str], value: Any, path: str) -> Any:
    """A copy of ``obj`` with the field at ``parts`` set to ``value`` (coerced)."""
    if not parts:
        return _coerce(value, obj, path)
    head, rest = parts[0], parts[1:]
    if dataclasses.is_dataclass(obj):
        names = [f.name for f in dataclasses.fields(obj)]
        if head not in names:
            near = difflib.get_close_matches(head, names, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ExperimentError(
                f"unknown setting {path!r}: {type(obj).__name__} has no field {head!r}{hint}; "
                f"its fields are {', '.join(names)}"
            )
        current = getattr(obj, head)
        if current is None and not rest:  # an optional field now unset: its type says how
            current = _example_of(typing.get_type_hints(type(obj)).get(head))
        new = _set_path(current, rest, value, path)
        try:
            return dataclasses.replace(obj, **{head: new})
        except ConfigValueError as err:  # names the field: add the sections above it
            above = path[: len(path) - len(".".join(parts))]
            raise ExperimentError(f"{above}{err}") from None
        except (ValueError, TypeError) as err:
            raise ExperimentError(f"{path}={value!r}: {err}") from None
    if isinstance(obj, dict):
        return {**obj, head: _set_path(obj.get(head), rest, value, path)}
    if isinstance(obj, tuple | list):
        try:
            i = int(head)
            items = list(obj)
            items[i] = _set_path(items[i], rest, value, path)
        except (ValueError, IndexError):
            raise ExperimentError(f"{path}: {head!r} is not an index of {obj!r}") from None
        return tuple(items)
    raise ExperimentError(f"{path}: cannot go into {type(obj).__name__} value {obj!r}")


def set_field(cfg: ExperimentConfig, path: str, value: Any) -> ExperimentConfig:
    """``cfg`` with the dotted ``path`` (``a.b.0`` indexes a tuple) set to ``value``, coerced."""
    parts = [p for p in path.replace("[", ".").replace("]", "").split(".") if p]
    if not parts:
        raise ExperimentError("empty setting name")
    return _set_path(cfg, parts, value, path)


def apply_overrides(cfg: ExperimentConfig, overrides: Iterable[str]) -> ExperimentConfig:
    """Apply ``"path=value"`` strings in order (see :func:`set_field`, :func:`parse_value`)."""
    for item in overrides:
        if "=" not in item:
            raise ExperimentError(
                f"override {item!r} is not PATH=VALUE (e.g. bayes.steps=2000, "
                "source.prune_norms=[0.3,0.1], grid.methods=dwp:dwp,normal:xavier)"
            )
        path, text = item.split("=", 1)
        cfg = set_field(cfg, path.strip(), parse_value(text))
    return cfg


#: the setting ``--notmnist`` stands for
NOTMNIST_SETTING = "source.data_variant"


def with_notmnist(variant: str | None, overrides: Sequence[str]) -> list[str]:
    """``overrides`` led by ``source.data_variant=VARIANT``, refusing a ``--set`` of another."""
    overrides = list(overrides)
    if variant is None:
        return overrides
    for item in overrides:
        path, _, text = item.partition("=")
        if path.strip() == NOTMNIST_SETTING and parse_value(text) != variant:
            raise ExperimentError(
                f"--notmnist {variant} and --set {item} name different notMNIST variants: "
                "give one of them"
            )
    return [f"{NOTMNIST_SETTING}={variant}", *overrides]


def _flatten(d: Mapping, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for k, v in d.items():
        path = f"{prefix}{k}"
        if isinstance(v, Mapping) and not path.endswith("steps_by_size"):
            out += _flatten(v, path + ".")
        else:
            out.append((path, v))
    return out


def load_config_file(path: str | os.PathLike) -> tuple[str | None, list[tuple[str, Any]]]:
    """``(preset or None, [(path, value), ...])`` of a JSON or TOML file, nested or dotted keys."""
    path = Path(path)
    if not path.exists():
        raise ExperimentError(f"config file {path} does not exist")
    if path.suffix not in (".toml", ".json"):
        suffix = path.suffix or "a file without a suffix"
        raise ExperimentError(
            f"config file {path}: only .toml and .json files are read, not {suffix}; write it "
            "as TOML (configs/*.toml are examples)"
        )
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except Exception as err:  # noqa: BLE001 (json and toml raise different errors)
        raise ExperimentError(f"config file {path} is not valid {path.suffix[1:]}: {err}") from None
    if not isinstance(data, Mapping):
        raise ExperimentError(f"config file {path} must hold a mapping of settings")
    data = dict(data)
    preset = data.pop("preset", None)
    if preset is not None:
        check_preset(preset)
    return preset, _flatten(data)


def config_from(
    preset: str | None = None,
    config_file: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    name: str | None = None,
) -> ExperimentConfig:
    """The config of a run: preset (else the file's, else ``book``), file, overrides, name."""
    file_preset, settings = (None, []) if config_file is None else load_config_file(config_file)
    cfg = ExperimentConfig.preset_config(preset or file_preset or "book")
    for path, value in settings:
        cfg = set_field(cfg, path, value)
    cfg = apply_overrides(cfg, overrides)
    if name:
        cfg = dataclasses.replace(cfg, name=name)
    return cfg


def rerun_config(
    folder: str | os.PathLike, preset: str, overrides: Sequence[str] = ()
) -> ExperimentConfig:
    """The setting a committed run recorded (its ``config.json``), with ``overrides``, to train
    some of its cells again. At the ``tiny`` preset: the tiny config with the run's methods, so
    that the tests run the same code in seconds."""
    path = Path(folder) / "config.json"
    if not path.exists():
        raise ExperimentError(f"{path} does not exist: {folder} is not a run folder")
    if preset != "tiny":
        return config_from(None, path, overrides)
    methods = json.loads(path.read_text())["grid"]["methods"]
    return apply_overrides(
        set_field(ExperimentConfig.preset_config("tiny"), "grid.methods", methods), overrides
    )
