"""Frozen-dataclass configs: from JSON, with ``key=value`` overrides, checked.

Every stage has one frozen dataclass config whose fields hold plain JSON values in
documented units (nested dataclasses allowed). This module turns dicts into such configs
and back, refusing unknown keys and wrong types with an error that names the key, the
value and what was expected. Range checks (positive time constants, ...) belong in each
config's ``__post_init__`` and raise :class:`ConfigError` too.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, Iterable, TypeVar

from astro_rmaat.errors import ConfigError, RmaatError

C = TypeVar("C")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it in canonical form."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where} = {value!r}: expected {' or '.join(_type_name(a) for a in args)}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where} = {value!r}: expected one of {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where} = {value!r}: expected a table (JSON object) for {tp.__name__}")
        return from_dict(tp, value, where=where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} = {value!r}: expected a list")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where} = {value!r}: expected a list of {len(args)} items")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} = {value!r}: expected a table (JSON object)")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} = {value!r}: expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where} = {value!r}: expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} = {value!r}: expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} = {value!r}: expected a string")
        return value
    return value


@functools.cache
def _field_types(cls: type) -> tuple[dict[str, Any], frozenset[str]]:
    """Resolved annotations and init fields of a config class (resolving the string
    annotations compiles each one: done once per class, not once per config)."""
    hints = typing.get_type_hints(cls)
    return hints, frozenset(f.name for f in dataclasses.fields(cls) if f.init)


def from_dict(cls: type[C], data: dict[str, Any], *, where: str = "") -> C:
    """Build the dataclass ``cls`` from ``data``; unknown keys and wrong types are errors."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a table (JSON object), got {data!r}")
    hints, fields = _field_types(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(f"unknown parameter {key!r} for {cls.__name__}; "
                          f"expected one of: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        kwargs[name] = _coerce(value, hints[name], key)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a missing required field
        raise ConfigError(f"{cls.__name__}: {exc}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """JSON-ready dict of a (nested) dataclass config; tuples become lists."""
    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v
    return conv(cfg)


#: The one precedence rule of every ``rmaat`` verb (shown in ``rmaat --help``): an explicit
#: flag beats ``--set``, which beats ``--config``, which beats the built-in defaults.
PRECEDENCE = "explicit flag > --set KEY=VALUE > --config FILE > built-in defaults"


def flag_overrides(flags: dict[str, Any]) -> list[str]:
    """Command-line flags as ``KEY=VALUE`` items (dotted key -> value; ``None`` means the flag
    was not given). Apply them after the ``--set`` items so the flag wins (:data:`PRECEDENCE`)."""
    return [f"{key}={json.dumps(value)}" for key, value in flags.items() if value is not None]


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"a.b=3"`` -> (["a", "b"], 3). Values are JSON when they parse, else strings."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set protocol.n_cycles=20")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {item!r}: the key before '=' is empty")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``KEY=VALUE`` (dotted keys) applied."""
    out = json.loads(json.dumps(data))
    for item in overrides:
        path, value = parse_override(item)
        node = out
        for i, part in enumerate(path[:-1]):
            child = node.get(part) if isinstance(node, dict) else None
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(path[:i + 1])!r} is not a table of parameters")
            node = child
        if not isinstance(node, dict) or path[-1] not in node:
            raise ConfigError(f"--set {item!r}: unknown parameter {'.'.join(path)!r}; "
                              "see --show-defaults for the valid keys")
        node[path[-1]] = value
    return out


def read_json_file(path: str | os.PathLike, what: str = "config",
                   error: type[RmaatError] = ConfigError) -> dict[str, Any]:
    """A JSON object from ``path``; a missing file, bad JSON or another top-level type raise
    ``error`` naming the file."""
    p = Path(path)
    if not p.is_file():
        raise error(f"{what} file {str(p)!r} " + ("is not a regular file; expected a JSON file" if p.exists()
                                                else "does not exist"))
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise error(f"{what} file {str(p)!r} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise error(f"{what} file {str(p)!r}: expected a JSON object at the top level")
    return data


def load_config(cls: type[C], path: str | os.PathLike | None = None,
                overrides: Iterable[str] = ()) -> C:
    """Defaults of ``cls``, updated from a JSON file, then from ``KEY=VALUE`` overrides."""
    data = to_dict(cls())
    if path is not None:
        file_data = read_json_file(path)
        merged = deep_merge(data, file_data, cls.__name__)
        data = merged
    data = apply_overrides(data, overrides)
    return from_dict(cls, data)


def deep_merge(base: dict[str, Any], new: dict[str, Any], where: str) -> dict[str, Any]:
    """``base`` updated from ``new``, nested tables merged key by key (``where``: the table's
    name; keys ``base`` lacks are kept for :func:`from_dict` to refuse precisely)."""
    out = dict(base)
    for k, v in new.items():
        if k not in base:
            # Let from_dict produce the precise unknown-key error.
            out[k] = v
        elif isinstance(base[k], dict) and isinstance(v, dict):
            out[k] = deep_merge(base[k], v, f"{where}.{k}")
        else:
            out[k] = v
    return out


#: the largest seed: NumPy's legacy seeding (Brian2's ``seed``) takes 32-bit values, so every
#: verb takes the same range
SEED_MAX = 2**32 - 1


def require_seed(where: str, value: Any) -> None:
    """Range check of a seed: an integer from 0 to ``SEED_MAX``, the same for every verb."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEED_MAX:
        raise ConfigError(f"{where} = {value!r}: expected an integer from 0 to {SEED_MAX} (2^32 - 1)")


def require_positive(where: str, value: float, unit: str = "") -> None:
    """Range check for ``__post_init__``: time constants, lengths, counts."""
    if not (isinstance(value, (int, float)) and value > 0 and value == value and value != float("inf")):
        u = f" {unit}" if unit else ""
        raise ConfigError(f"{where} = {value!r}: expected a finite positive number{u}")
