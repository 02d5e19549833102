"""Typed, checked configs of the baselines: the one way settings enter training.

Input: a dict of settings (``--config FILE``, a recipe, the CLI's flags) or a run's saved
``config.json``. Output: a frozen dataclass whose every field was type- and range-checked.

Two ways in:

- ``Config.from_dict(data, strict=True)`` for settings a person wrote: an unknown key, a value
  of the wrong type (``"steps": "10"``, ``"hidden": [0]``) or out of range (``steps: -5``,
  ``gamma: nan``) is a ``ConfigError`` that names the key and says what is allowed.
- ``Config.from_dict(data)`` (lenient) for a run's own ``config.json``, which also holds run
  facts (``algo``, ``env_id``, ``n_agents`` …): keys that are not fields are ignored.

Ranges are declared next to each field with ``bounded(default, low, high)``; ``__post_init__``
checks them on every construction, so a bad value fails before any data is read.

Example::

    @dataclass(frozen=True)
    class MyConfig(JsonConfig):
        steps: int = bounded(1000, low=1)
        gamma: float = bounded(0.99, low=0.0, high=1.0, open_low=True)

    MyConfig.from_dict({"steps": 5, "gama": 0.9}, strict=True)   # ConfigError: unknown key 'gama' …
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, Literal, Self, TypeVar, Union

from llmca_data.errors import LlmcaError

log = logging.getLogger(__name__)

T = TypeVar("T")


class ConfigError(LlmcaError, ValueError):
    """A config key that is unknown, of the wrong type or out of range; the message names it."""


def bounded(default: T, low: float | None = None, high: float | None = None, *, open_low: bool = False) -> T:
    """A dataclass field with ``default`` whose value (or each element of a tuple value) must lie in
    ``[low, high]`` (``(low, high]`` with ``open_low``); None leaves that side open."""
    out: T = field(default=default, metadata={"bounds": (low, high, open_low)})
    return out


def _allowed(low: float | None, high: float | None, open_low: bool) -> str:
    left = "-inf" if low is None else f"{low:g}"
    right = "inf" if high is None else f"{high:g}"
    return f"{'(' if open_low or low is None else '['}{left}, {right}{')' if high is None else ']'}"


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _coerce(owner: str, name: str, value: Any, hint: Any) -> Any:
    """``value`` checked against the type ``hint`` (JSON lists become tuples, JSON objects nested
    configs); ConfigError naming ``name`` (the dotted key) otherwise."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    bad = ConfigError(f"{owner}: config key {name!r} must be {_type_name(hint)}, got {value!r}")
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(owner, name, value, arg)
            except ConfigError:
                continue
        raise bad
    if origin is Literal:
        if value not in args:
            allowed = ", ".join(map(repr, args))
            raise ConfigError(f"{owner}: config key {name!r} must be one of {allowed}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise bad
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(owner, f"{name}[{i}]", v, args[0]) for i, v in enumerate(value))
        if len(value) != len(args):
            raise bad
        return tuple(_coerce(owner, f"{name}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise bad
        return dict(value)
    if isinstance(hint, type) and issubclass(hint, JsonConfig):
        if not isinstance(value, dict):
            raise ConfigError(f"{owner}: config key {name!r} must be a table (JSON object) of fields, got {value!r}")
        return hint.from_dict(value, strict=True, owner=owner, prefix=f"{name}.")
    simple: tuple[type, ...] | None = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}.get(hint)
    if simple is None:
        raise AssertionError(f"{owner}.{name}: unsupported config type {hint!r}")  # a field type no check covers
    if not isinstance(value, simple) or (hint is not bool and isinstance(value, bool)):
        raise bad
    return float(typing.cast(float, value)) if hint is float else value


def _check_values(cls: type, values: dict[str, Any], owner: str, prefix: str) -> None:
    """Finite floats everywhere, and every ``bounded`` field within its bounds; ConfigError otherwise."""
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value = values[f.name]
        items = value if isinstance(value, tuple) else (value,)
        key = prefix + f.name
        for v in items:
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{owner}: config key {key!r} must be finite, got {v!r}")
        if "bounds" not in f.metadata:
            continue
        low, high, open_low = f.metadata["bounds"]
        if isinstance(value, tuple) and not value:
            raise ConfigError(f"{owner}: config key {key!r} needs at least one value")
        for v in items:
            if v is None or isinstance(v, str):
                continue
            if (low is not None and (v <= low if open_low else v < low)) or (high is not None and v > high):
                raise ConfigError(
                    f"{owner}: config key {key!r} must be in {_allowed(low, high, open_low)}, got {value!r}"
                )


class JsonConfig:
    """``to_dict``/``from_dict`` and range checks for the frozen dataclass configs saved in ``config.json``."""

    def __post_init__(self) -> None:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        _check_values(type(self), values, type(self).__name__, "")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples such as ``hidden`` as lists)."""
        out: dict[str, Any] = dataclasses.asdict(self)  # type: ignore[call-overload]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, data: dict[str, Any], strict: bool = False, owner: str | None = None, prefix: str = "") -> Self:
        """Rebuild from settings: ``strict`` refuses unknown keys and wrong types (user input);
        lenient (a run's ``config.json``) ignores keys that are not fields. ``owner`` and
        ``prefix`` name where the settings came from in error messages (a file, ``train.``).

        Raises:
            ConfigError: an unknown key (strict), a wrong type (strict) or an out-of-range value.
        """
        owner = owner or cls.__name__
        names = cls.field_names()
        if strict and (unknown := sorted(k for k in data if k not in names)):
            keys = ", ".join(repr(prefix + k) for k in unknown)
            raise ConfigError(
                f"{owner}: unknown config key{'s' if len(unknown) > 1 else ''} {keys}; allowed: {', '.join(names)}"
            )
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key not in names:
                continue
            if strict:
                kwargs[key] = _coerce(owner, prefix + key, value, hints[key])
            elif isinstance(value, dict) and isinstance(hints[key], type) and issubclass(hints[key], JsonConfig):
                kwargs[key] = hints[key].from_dict(value, owner=owner, prefix=f"{prefix}{key}.")
            else:
                kwargs[key] = tuple(value) if isinstance(value, list) else value
        _check_values(cls, kwargs, owner, prefix)
        return cls(**kwargs)


def load_settings(path: Path | None) -> dict[str, Any]:
    """A JSON object of config fields (a command's ``--config FILE``), or {} for None.

    Raises:
        ConfigError: the file is missing, not JSON or not one JSON object.
    """
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{path} is not JSON ({exc}); a config file holds one JSON object of config fields") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file holds one JSON object of config fields, got {type(data).__name__}")
    return data


def merge_settings(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``overrides``; nested tables (dicts) merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_settings(out[key], value)
        else:
            out[key] = value
    return out


def cap_workers(requested: int) -> int:
    """``requested`` worker processes, at most one per CPU this process may use (more only add
    memory and start-up time); a larger request is capped with a logged warning."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    if requested > cpus:
        log.warning("--workers %d capped at %d, the number of CPUs available", requested, cpus)
        return cpus
    return max(1, requested)
