"""Experiment configs: YAML files with base-file inheritance, command-line overrides and strict keys.

- ``_base_: other.yaml`` (or a list) merges the named files first, paths relative to the file
  that names them; the file's own keys then override, recursively per mapping.
- Overrides ``a.b=value`` (value parsed as YAML) apply last.
- The merged mapping is checked against a schema of dataclasses: an unknown or missing key, or a
  value of the wrong type, raises ConfigError naming the key, and for unknown keys the valid ones.
"""
from __future__ import annotations

import dataclasses
import os
import types
import typing

import yaml

BASE_KEY = "_base_"


class ConfigError(ValueError):
    pass


def read_yaml_with_bases(path: str, _seen: tuple = ()) -> dict:
    """The mapping of ``path`` with its ``_base_`` files merged underneath."""
    path = os.path.abspath(path)
    if path in _seen:
        raise ConfigError(f"{path}: base files form a cycle: {' -> '.join(_seen + (path,))}")
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    bases = data.pop(BASE_KEY, [])
    merged: dict = {}
    for base in [bases] if isinstance(bases, str) else bases:
        merged = deep_merge(merged, read_yaml_with_bases(os.path.join(os.path.dirname(path), base), _seen + (path,)))
    return deep_merge(merged, data)


def deep_merge(base: dict, override: dict) -> dict:
    result = dict(base)
    for key, value in override.items():
        result[key] = deep_merge(result[key], value) if isinstance(value, dict) and isinstance(result.get(key), dict) \
            else value
    return result


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b=value`` strings (value parsed as YAML) to a nested mapping."""
    data = deep_merge({}, data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form a.b=value")
        dotted, raw = item.split("=", 1)
        keys = dotted.strip().split(".")
        node = data
        for key in keys[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[keys[-1]] = yaml.safe_load(raw)
    return data


def from_dict(schema, data, where: str = ""):
    """Build dataclass ``schema`` from a mapping, strictly (see the module docstring)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping for {schema.__name__}, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(schema)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(_join(where, k) for k in unknown)}; "
                          f"valid keys{' of ' + where if where else ''}: {sorted(fields)}")
    hints = typing.get_type_hints(schema)
    values = {}
    for name, spec in fields.items():
        key = _join(where, name)
        if name not in data:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                raise ConfigError(f"missing key {key}")
            continue
        values[name] = _convert(hints[name], data[name], key)
    return schema(**values)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _convert(hint, value, key: str):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if isinstance(hint, type) and hasattr(hint, "schema_for") and isinstance(value, dict):
        # A base config whose mapping names the dataclass to build (dataset.type → that type's options).
        try:
            return from_dict(hint.schema_for(value), value, key)
        except ConfigError:
            raise
        except ValueError as error:
            raise ConfigError(str(error)) from None
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options:
            try:
                return _convert(option, value, key)
            except ConfigError:
                if len(options) == 1:
                    raise  # X | None: the error of X itself says what is wrong
                continue
        raise ConfigError(f"{key}: {value!r} fits none of {hint}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        item = args[0] if args else typing.Any
        converted = [_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return converted if origin is list else tuple(converted)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {k: _convert(args[1], v, f"{key}.{k}") for k, v in value.items()} if args else dict(value)
    if hint is typing.Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and (not isinstance(value, hint) or (hint is int and isinstance(value, bool))):
        raise ConfigError(f"{key}: expected {hint.__name__}, got {value!r}")
    return value


def load_config(schema, path: str, overrides: list[str] = ()):
    """Read ``path`` (with its bases), apply overrides, build ``schema`` strictly."""
    return from_dict(schema, apply_overrides(read_yaml_with_bases(path), list(overrides)))


def to_dict(config) -> dict:
    """The plain nested mapping of a config (for writing the resolved config of a run)."""
    return dataclasses.asdict(config)
