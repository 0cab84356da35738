"""Experiment configs: YAML files with base-file inheritance, command-line overrides and strict keys.

- ``_base_: other.yaml`` (or a list) merges the named files first, paths relative to the file
  that names them; the file's own keys then override, recursively per mapping.
- Overrides ``a.b=value`` (value parsed as YAML) apply last.
- The merged mapping is checked against a schema of dataclasses: an unknown or missing key, or a
  value of the wrong type, raises ConfigError naming the key, and for unknown keys the valid ones.
  ``Literal[...]`` fields are closed sets of strings; ``Annotated[T, Bounds(...)]`` and
  ``Annotated[list[T], Length(...)]`` bound numbers and list lengths.
- YAML as read here: a key twice in one mapping is an error (PyYAML silently keeps the last one);
  ``1e-3`` is a float (YAML 1.2; PyYAML's YAML 1.1 reads it as a string); syntax errors name the file
  and line.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing

import yaml

BASE_KEY = "_base_"


class ConfigError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class Bounds:
    """The interval a number (or every number of a list) must lie in; None: unbounded on that side."""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, value) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f"> {self.low:g}" if self.low_open else f">= {self.low:g}"
        if self.low is None:
            return f"< {self.high:g}" if self.high_open else f"<= {self.high:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


@dataclasses.dataclass(frozen=True)
class Length:
    """How many entries a list must have: exactly ``exactly``, or at least ``at_least``."""
    exactly: int | None = None
    at_least: int = 0

    def contains(self, length: int) -> bool:
        return length == self.exactly if self.exactly is not None else length >= self.at_least

    def __str__(self) -> str:
        count = self.exactly if self.exactly is not None else self.at_least
        return f"{'exactly' if self.exactly is not None else 'at least'} {count} entr{'y' if count == 1 else 'ies'}"


PositiveInt = typing.Annotated[int, Bounds(1)]
NonNegativeInt = typing.Annotated[int, Bounds(0)]
PositiveFloat = typing.Annotated[float, Bounds(0, low_open=True)]
NonNegativeFloat = typing.Annotated[float, Bounds(0)]
Probability = typing.Annotated[float, Bounds(0, 1)]


# YAML 1.2 floats with an exponent and no dot (1e-3, 5E+2), which YAML 1.1 (PyYAML) reads as strings.
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$")


class _DuplicateKey(yaml.MarkedYAMLError):
    pass


class ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses a key given twice in one mapping and reads 1e-3 as a float."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first_line: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # '<<: *anchor' merges may be overridden by explicit keys, as YAML intends
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = first_line.get(key)
                except TypeError:
                    continue  # an unhashable key; the base constructor reports it
                line = key_node.start_mark.line + 1
                if seen is not None:
                    raise _DuplicateKey(problem=f"duplicate key {key!r} (first at line {seen})",
                                        problem_mark=key_node.start_mark)
                first_line[key] = line
        return super().construct_mapping(node, deep)


ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+.0123456789"))


def _yaml_error(where: str, error: yaml.YAMLError) -> ConfigError:
    """One line: where, line and column, and the problem."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    context = getattr(error, "context", None)
    position = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
    detail = f"{problem} ({context})" if context and context not in problem else problem
    return ConfigError(f"{where}{position}: invalid YAML: {detail}")


def parse_yaml(text: str, where: str):
    """The data of one YAML document and the composed node (for line numbers), as ConfigLoader reads it."""
    try:
        loader = ConfigLoader(text)
        try:
            node = loader.get_single_node()
            return (loader.construct_document(node) if node is not None else None), node
        finally:
            loader.dispose()
    except yaml.YAMLError as error:
        raise _yaml_error(where, error) from None


def _key_lines(node) -> dict:
    """Line (1-based) of each top-level scalar key of a mapping node."""
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {key.value: key.start_mark.line + 1 for key, _ in node.value if isinstance(key, yaml.ScalarNode)}


def read_yaml_with_bases(path: str, _seen: tuple = ()) -> dict:
    """The mapping of ``path`` with its ``_base_`` files merged underneath."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        raise ConfigError(f"config path is a directory, not a YAML file: {path}")
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not a UTF-8 text file ({error.reason} at byte {error.start})") from None
    data, node = parse_yaml(text, path)
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    if BASE_KEY not in data:
        return data
    at = f"{path}:{_key_lines(node).get(BASE_KEY, 1)}"
    bases = data.pop(BASE_KEY)
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(base, str) and base for base in bases):
        raise ConfigError(f"{at}: {BASE_KEY} must be a file name or a list of file names, got {bases!r}")
    merged: dict = {}
    for base in bases:
        base_path = os.path.abspath(os.path.join(os.path.dirname(path), os.path.expanduser(base)))
        if base_path in _seen + (path,):
            raise ConfigError(f"{at}: {BASE_KEY} {base!r} forms a cycle: {' -> '.join(_seen + (path, base_path))}")
        if not os.path.isfile(base_path):
            raise ConfigError(f"{at}: {BASE_KEY} names {base!r}, which is not a file ({base_path})")
        merged = deep_merge(merged, read_yaml_with_bases(base_path, _seen + (path,)))
    return deep_merge(merged, data)


def deep_merge(base: dict, override: dict) -> dict:
    result = dict(base)
    for key, value in override.items():
        result[key] = deep_merge(result[key], value) if isinstance(value, dict) and isinstance(result.get(key), dict) \
            else value
    return result


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b=value`` strings (value parsed as YAML, as in a config file) to a nested mapping."""
    data = deep_merge({}, data)
    for item in overrides:
        if not isinstance(item, str) or "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form a.b=value")
        dotted, raw = item.split("=", 1)
        keys = [key.strip() for key in dotted.split(".")]
        if not all(keys):
            raise ConfigError(f"override {item!r}: empty key name in {dotted.strip()!r}")
        value, _ = parse_yaml(raw, f"override {item!r}")
        node = data
        for depth, key in enumerate(keys[:-1]):
            if node.get(key) is None:
                node[key] = {}  # a section that is absent or null is created by its first key
            elif not isinstance(node[key], dict):
                raise ConfigError(f"override {item!r}: {'.'.join(keys[:depth + 1])} is {node[key]!r}, "
                                  f"not a mapping with keys")
            node = node[key]
        node[keys[-1]] = value
    return data


def from_dict(schema, data, where: str = ""):
    """Build dataclass ``schema`` from a mapping, strictly (see the module docstring)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping for {schema.__name__}, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(schema)}
    unknown = sorted((k for k in data if k not in fields), key=str)
    if unknown:
        guesses = [f"{_join(where, str(k))} -> {close[0]!r}" for k in unknown
                   if (close := difflib.get_close_matches(str(k), fields, 1))]
        names = ", ".join(_join(where, str(k)) for k in unknown)
        raise ConfigError(f"unknown key{'s' if len(unknown) > 1 else ''} {names}; "
                          f"valid keys{' of ' + where if where else ''}: {sorted(fields)}"
                          + (f" (did you mean {', '.join(guesses)}?)" if guesses else ""))
    hints = typing.get_type_hints(schema, include_extras=True)
    values = {}
    for name, spec in fields.items():
        key = _join(where, name)
        if name not in data:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                raise ConfigError(f"missing key {key}")
            continue
        values[name] = _convert(hints[name], data[name], key)
    try:
        return schema(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as error:  # a check of the schema's own __post_init__
        raise ConfigError(f"{where or 'config'}: {error}") from None


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
    if origin is typing.Annotated:
        converted = _convert(args[0], value, key)
        for constraint in args[1:]:
            _check_constraint(constraint, converted, key)
        return converted
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, key)
    if origin is typing.Literal:
        if not isinstance(value, str) or value not in args:
            close = difflib.get_close_matches(str(value), [str(a) for a in args], 1)
            raise ConfigError(f"{key} must be one of {list(args)}, got {value!r}"
                              + (f" (did you mean {close[0]!r}?)" if close else ""))
        return value
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
        if not args:
            return dict(value)
        return {_convert(args[0], k, f"{key} (key {k!r})"): _convert(args[1], v, f"{key}.{k}")
                for k, v in value.items()}
    if hint is typing.Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and (not isinstance(value, hint) or (hint is int and isinstance(value, bool))):
        quote = " (quote it to make it a string)" if hint is str and isinstance(value, (int, float, bool)) else ""
        raise ConfigError(f"{key}: expected {hint.__name__}, got {value!r}{quote}")
    if hint is float and not math.isfinite(value):
        raise ConfigError(f"{key}: expected a finite number, got {value!r}")
    return value


def _check_constraint(constraint, value, key: str) -> None:
    if isinstance(constraint, Bounds):
        for i, item in enumerate(value if isinstance(value, (list, tuple)) else [value]):
            if not constraint.contains(item):
                where = f"{key}[{i}]" if isinstance(value, (list, tuple)) else key
                raise ConfigError(f"{where}: must be {constraint}, got {item!r}")
    elif isinstance(constraint, Length) and not constraint.contains(len(value)):
        raise ConfigError(f"{key}: needs {constraint}, got {len(value)}: {value!r}")


def load_config(schema, path: str, overrides: list[str] = ()):
    """Read ``path`` (with its bases), apply overrides, build ``schema`` strictly."""
    return from_dict(schema, apply_overrides(read_yaml_with_bases(path), list(overrides)))


def to_dict(config) -> dict:
    """The plain nested mapping of a config (for writing the resolved config of a run)."""
    return dataclasses.asdict(config)
