"""Typed configuration: dataclasses loaded from YAML with ``key=value`` overrides.

Every command has one dataclass (nested dataclasses for sections). Loading validates every key against
the dataclass — an unknown key raises :class:`~ppkt.errors.ConfigError` listing the valid ones — and every
value against the field's type (``Literal`` fields list their choices). The resolved config is written to
every run directory with :func:`dump_config`.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from ppkt.errors import ConfigError

T = TypeVar("T")


def _fail(key: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"config key '{key}': {value!r} is not {expected}")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError:
                continue
        names = " or ".join("null" if a is type(None) else getattr(a, "__name__", str(a)) for a in args)
        raise _fail(key, value, f"a valid {names}")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise _fail(key, value, f"one of {list(choices)}")
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise _fail(key, value, "a mapping")
        return from_dict(tp, value, key)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise _fail(key, value, "a list")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise _fail(key, value, f"a list of {len(args)} values")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        elem = args[0] if args else Any
        items = [_coerce(v, elem, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _fail(key, value, "true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _fail(key, value, "an integer")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML (YAML 1.1) reads exponents without a dot, e.g. 1e-4, as strings
            try:
                return float(value)
            except ValueError:
                pass
        raise _fail(key, value, "a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise _fail(key, value, "a string")
    raise ConfigError(f"config key '{key}': unsupported field type {tp}")


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a (possibly partial) mapping; missing keys keep their defaults."""
    hints = get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    for k in data:
        if k not in valid:
            where = f"'{prefix}'" if prefix else "the top level"
            raise ConfigError(
                f"unknown config key '{prefix + '.' if prefix else ''}{k}'; valid keys of {where}: {valid}"
            )
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate(prefix)  # the section's own dotted key, so that messages name the key the user wrote
    return obj


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain YAML-able data (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        return v

    return plain(dataclasses.asdict(cfg))


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for i, p in enumerate(parts[:-1]):
        child = node.get(p)
        if not isinstance(child, dict):
            raise ConfigError(f"override '{dotted}': '{'.'.join(parts[: i + 1])}' is not a section")
        node = child
    node[parts[-1]] = value


def _merge(base: dict[str, Any], new: dict[str, Any], where: str) -> dict[str, Any]:
    out = dict(base)
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v, f"{where}.{k}" if where else k)
        else:
            out[k] = v
    return out


def parse_overrides(items: Sequence[str]) -> list[tuple[str, Any]]:
    """Parse ``key.sub=value`` strings; values are YAML scalars/lists (``0.05``, ``true``, ``[1, 2]``)."""
    out = []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: cannot parse value: {e}") from e
        out.append((key.strip(), value))
    return out


def load_config(cls: type[T], file: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Defaults of ``cls``, then the YAML ``file`` (if any), then the ``key=value`` overrides; then what the
    config asks of this machine (its ``check_machine``, when it has one)."""
    tree = to_dict(cls())
    if file is not None:
        path = Path(file)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as e:
            raise ConfigError(f"{path}: cannot read config file: {e.strerror}") from e
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: not a text (UTF-8) YAML file: {e.reason} at byte {e.start}") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from e
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a config file must hold a mapping at the top level")
        from_dict(cls, loaded)  # reject unknown keys with the file's own structure first
        tree = _merge(tree, loaded, "")
    for key, value in parse_overrides(overrides):
        _set_path(tree, key, value)
    cfg = from_dict(cls, tree)
    # what the config asks of this machine (a GPU, device indices): checked when a config is loaded to run,
    # not in ``validate``, which also runs when a checkpoint's stored config is rebuilt on another machine
    check_machine = getattr(cfg, "check_machine", None)
    if callable(check_machine):
        check_machine()
    return cfg


def dump_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
