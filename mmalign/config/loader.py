"""Load a YAML config onto a dataclass schema and validate it before any heavy work.

A config file may name base files with ``include: base.yaml`` (or a list); includes are merged
first, in order, then the file itself, then command-line ``key=value`` overrides. OmegaConf
interpolation (``${run.name}``) works across all of them. Every problem becomes a
:class:`~mmalign.errors.ConfigError` whose single line names the file and line, or the key.

An error names where the *final* value was set: the top file over its includes, an override
(``override 'key=value'``) over both; a list or scalar that replaces a mapping or list drops the
origins of what it replaced. YAML anchors and aliases are allowed, but a file whose aliases expand
past :data:`MAX_CONFIG_NODES` values ("billion laughs") or refer to themselves is refused before it
is expanded.

Environment interpolations (``${oc.env:NAME}``) are secrets (:mod:`mmalign.utils.secrets`): the run
uses their values, :func:`to_yaml` writes them unresolved, and ``run.name`` / ``run.output_dir``
may not take one, since a path is written to disk and into logs in clear.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import (
    ConfigKeyError,
    InterpolationResolutionError,
    MissingMandatoryValue,
    OmegaConfBaseException,
    ValidationError,
)

from mmalign.errors import ConfigError
from mmalign.utils import secrets

T = TypeVar("T")

INCLUDE_KEY = "include"
MAX_CONFIG_NODES = 100_000  # values in one config file once its aliases are expanded
PATH_KEYS = ("run.name", "run.output_dir")  # become directories: never from the environment
UNRESOLVED_ATTR = "_mmalign_unresolved"  # on a loaded config: {dotted key: unresolved text} for to_yaml
_ENV_NAME = re.compile(r"oc\.env:\s*([A-Za-z_][A-Za-z0-9_]*)")
_REFERENCE = re.compile(r"\$\{\s*([A-Za-z_][\w.]*)\s*\}")


class _Origins:
    """Maps a dotted key to the ``file:line`` it was last set at."""

    def __init__(self) -> None:
        self.where: dict[str, str] = {}

    def forget_below(self, key: str) -> None:
        """Drop the origins of everything under ``key`` (its value was replaced as a whole)."""
        for k in [k for k in self.where if k.startswith(key + ".")]:
            del self.where[k]

    def set(self, key: str, where: str, replaces: bool) -> None:
        if replaces:
            self.forget_below(key)
        self.where[key] = where

    def record(self, path: Path, node: yaml.Node, prefix: str = "") -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
                self.set(key, f"{path}:{key_node.start_mark.line + 1}", not isinstance(value_node, yaml.MappingNode))
                self.record(path, value_node, key)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                key = f"{prefix}.{i}"
                self.set(key, f"{path}:{item.start_mark.line + 1}", not isinstance(item, yaml.MappingNode))
                self.record(path, item, key)

    def record_override(self, key: str, value: Any, label: str | None = None) -> None:
        """``key`` (and everything in a list or mapping it sets) comes from ``override 'key'``."""
        label = label or f"override '{key}'"
        self.set(key, label, not isinstance(value, dict))
        children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for k, item in children:
            self.record_override(f"{key}.{k}", item, label)

    def locate(self, key: str) -> str | None:
        while key:
            if key in self.where:
                return self.where[key]
            key = key.rpartition(".")[0]
        return None


def _expanded_size(node: yaml.Node, path: Path, memo: dict[int, int], active: set[int]) -> int:
    """How many values ``node`` holds once aliases are expanded (aliases share node objects, so
    this is linear in the file even when the expansion is exponential)."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in active:
        raise ConfigError(f"{path}:{node.start_mark.line + 1}: invalid YAML: an alias refers to itself")
    active.add(key)
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, path, memo, active) + _expanded_size(v, path, memo, active)
                       for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(item, path, memo, active) for item in node.value)
    else:
        size = 1
    active.discard(key)
    memo[key] = size
    return size


def _read_yaml(path: Path) -> tuple[dict[str, Any], yaml.Node | None]:
    """The file's mapping and its YAML node tree (for origins), refusing an oversized expansion."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None:
            size = _expanded_size(node, path, {}, set())
            if size > MAX_CONFIG_NODES:
                raise ConfigError(f"{path}: its YAML aliases expand to {size:,} values, above the limit of "
                                  f"{MAX_CONFIG_NODES:,} (mmalign.config.loader.MAX_CONFIG_NODES)")
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: invalid YAML: {exc.problem or exc.context}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML: nested too deeply") from None
    if data is None:
        return {}, None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: a config file must be a mapping of keys to values")
    return data, node


def load_yaml_tree(path: str | Path, _origins: _Origins | None = None, _stack: tuple = ()) -> tuple[DictConfig, _Origins]:
    """Read ``path`` and its includes (recursively) into one merged DictConfig."""
    origins = _origins or _Origins()
    path = Path(path)
    resolved = path.resolve()
    if resolved in _stack:
        raise ConfigError(f"{path}: include cycle through {' -> '.join(str(p) for p in _stack)}")
    data, node = _read_yaml(path)
    own = _Origins()  # this file's own lines: recorded after its includes', which it overrides
    if node is not None:
        own.record(path, node)
    includes = data.pop(INCLUDE_KEY, [])
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise ConfigError(f"{own.locate(INCLUDE_KEY) or path}: '{INCLUDE_KEY}' must be a file name or a list of them")
    merged = OmegaConf.create()
    for inc in includes:
        inc_path = (path.parent / inc) if not Path(inc).is_absolute() else Path(inc)
        if not inc_path.is_file():
            raise ConfigError(f"{own.locate(INCLUDE_KEY) or path}: included file not found: {inc}")
        base, _ = load_yaml_tree(inc_path, origins, _stack + (resolved,))
        merged = OmegaConf.merge(merged, base)
    if node is not None:
        origins.record(path, node)
    try:
        merged = OmegaConf.merge(merged, OmegaConf.create(data))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{path}: {exc.msg if hasattr(exc, 'msg') else exc}") from None
    return merged, origins


def parse_overrides(overrides: Sequence[str]) -> DictConfig:
    """Parse ``key=value`` strings (values are YAML: ``3``, ``true``, ``[1,2]``, ``null``)."""
    cfg = OmegaConf.create()
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(c.isspace() for c in key) or key.startswith(".") or key.endswith(".") or ".." in key:
            raise ConfigError(f"bad override '{item}': expected key=value, e.g. train.lr=1e-5")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            raise ConfigError(f"bad override '{item}': the value is not valid YAML") from None
        OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


def _schema_fields(schema: Any) -> dict[str, dataclasses.Field] | None:
    if dataclasses.is_dataclass(schema):
        return {f.name: f for f in dataclasses.fields(schema)}
    return None


def _field_type(schema: type, name: str) -> Any:
    hints = typing.get_type_hints(schema)
    return hints.get(name)


def _unwrap_optional(tp: Any) -> Any:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", None)) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0] if len(rest) == 1 else tp
    return tp


def _check_keys(node: Any, schema: type, prefix: str, origins: _Origins, source: str) -> None:
    """Reject keys the schema does not know, with a did-you-mean suggestion."""
    fields = _schema_fields(schema)
    if fields is None or not isinstance(node, DictConfig):
        return
    for key in node.keys():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(sorted(fields))})"
            where = origins.locate(full) or source
            raise ConfigError(f"{where}: unknown key '{full}'{hint}")
        tp = _unwrap_optional(_field_type(schema, key))
        child = node._get_node(key)
        if dataclasses.is_dataclass(tp):
            _check_keys(child, tp, full, origins, source)
        elif typing.get_origin(tp) in (list, Sequence) and isinstance(child, ListConfig):
            (item_tp,) = typing.get_args(tp) or (None,)
            if dataclasses.is_dataclass(item_tp):
                for i, item in enumerate(child):
                    _check_keys(item, item_tp, f"{full}.{i}", origins, source)
        elif typing.get_origin(tp) is dict and isinstance(child, DictConfig):
            args = typing.get_args(tp)
            if len(args) == 2 and dataclasses.is_dataclass(args[1]):
                for k in child.keys():
                    _check_keys(child._get_node(k), args[1], f"{full}.{k}", origins, source)


def _omegaconf_message(exc: OmegaConfBaseException) -> str:
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return msg.rstrip(".")


def _validate_ranges(obj: Any, prefix: str, origins: _Origins, source: str) -> None:
    """Check ``metadata`` constraints on dataclass fields, then the dataclass's ``validate()``."""
    if not dataclasses.is_dataclass(obj):
        if isinstance(obj, list):
            for i, item in enumerate(obj):
                _validate_ranges(item, f"{prefix}.{i}", origins, source)
        elif isinstance(obj, dict):
            for k, item in obj.items():
                _validate_ranges(item, f"{prefix}.{k}", origins, source)
        return

    def fail(key: str, message: str) -> None:
        full = f"{prefix}.{key}" if prefix else key
        where = origins.locate(full)
        raise ConfigError(f"{where + ': ' if where else ''}{full}: {message}")

    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        meta = f.metadata
        if value is not None and meta:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if isinstance(value, float) and math.isnan(value):
                    fail(f.name, "must be a number, got nan")
                if "ge" in meta and value < meta["ge"]:
                    fail(f.name, f"must be >= {meta['ge']}, got {value}")
                if "gt" in meta and value <= meta["gt"]:
                    fail(f.name, f"must be > {meta['gt']}, got {value}")
                if "le" in meta and value > meta["le"]:
                    fail(f.name, f"must be <= {meta['le']}, got {value}")
                if "lt" in meta and value >= meta["lt"]:
                    fail(f.name, f"must be < {meta['lt']}, got {value}")
            if "choices" in meta and value not in meta["choices"]:
                close = difflib.get_close_matches(str(value), [str(c) for c in meta["choices"]], n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                fail(f.name, f"must be one of {', '.join(map(str, meta['choices']))}; got '{value}'{hint}")
            if meta.get("path") in ("file", "dir", "exists") and value != "":
                p = Path(str(value)).expanduser()
                kind = meta["path"]
                ok = p.is_file() if kind == "file" else p.is_dir() if kind == "dir" else p.exists()
                if not ok:
                    fail(f.name, f"{'file' if kind == 'file' else 'directory' if kind == 'dir' else 'path'} not found: {value}")
            if meta.get("nonempty") and not value:
                fail(f.name, "must not be empty")
        _validate_ranges(value, f"{prefix}.{f.name}" if prefix else f.name, origins, source)
    check = getattr(obj, "validate", None)
    if callable(check):
        try:
            check()
        except ConfigError as exc:
            if exc.key is None:
                raise
            full = f"{prefix}.{exc.key}" if prefix else exc.key
            where = origins.locate(full)
            raise ConfigError(f"{where + ': ' if where else ''}{full}: {exc.problem}") from None


def load_config(path: str | Path | None, schema: type[T], overrides: Sequence[str] = ()) -> T:
    """Load, merge, override, resolve and validate a config; return the schema instance.

    ``path`` may be None to start from the schema defaults. Raises ConfigError with one line.
    """
    origins = _Origins()
    source = str(path) if path is not None else "<defaults>"
    if path is not None:
        tree, origins = load_yaml_tree(path)
    else:
        tree = OmegaConf.create()
    over = parse_overrides(overrides)
    for item in overrides:  # as written: `run.seed=4` sets run.seed, not all of run
        key, _, raw = item.partition("=")
        origins.record_override(key.strip(), yaml.safe_load(raw) if raw.strip() else "")
    tree = OmegaConf.merge(tree, over)
    _check_keys(tree, schema, "", origins, source)
    try:
        structured = OmegaConf.merge(OmegaConf.structured(schema), tree)
        from_env = _environment_keys(structured)
        for key in PATH_KEYS:
            if key in from_env:
                raise ConfigError(f"{origins.locate(key) or source}: {key}: takes a value from the environment "
                                  f"({from_env[key]}), but a run path is written to disk and into logs in clear; "
                                  f"give it in the config or as an override ({key}=...)")
        OmegaConf.resolve(structured)
        obj = OmegaConf.to_object(structured)
    except MissingMandatoryValue as exc:
        key = exc.full_key or "?"
        raise ConfigError(f"{source}: missing required value '{key}'") from None
    except InterpolationResolutionError as exc:
        key = exc.full_key or "?"
        raise ConfigError(f"{origins.locate(key) or source}: {key}: {_omegaconf_message(exc)}") from None
    except (ValidationError, ConfigKeyError, OmegaConfBaseException) as exc:
        key = getattr(exc, "full_key", None) or "?"
        raise ConfigError(f"{origins.locate(key) or source}: {key}: {_omegaconf_message(exc)}") from None
    _validate_ranges(obj, "", origins, source)
    if from_env and dataclasses.is_dataclass(obj):
        setattr(obj, UNRESOLVED_ATTR, from_env)
    return obj


def _interpolations(node: Any, prefix: str, out: dict[str, str]) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            _interpolations(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _interpolations(v, f"{prefix}.{i}", out)
    elif isinstance(node, str) and "${" in node:
        out[prefix] = node


def _environment_keys(cfg: DictConfig) -> dict[str, str]:
    """``{dotted key: unresolved text}`` of every value taken from the environment, directly or
    through another key; registers the environment values as secrets."""
    raw: dict[str, str] = {}
    _interpolations(OmegaConf.to_container(cfg, resolve=False), "", raw)
    found = {k: v for k, v in raw.items() if _ENV_NAME.search(v)}

    def refers(text: str) -> bool:
        return any(ref == k or k.startswith(ref + ".") or ref.startswith(k + ".")
                   for ref in _REFERENCE.findall(text) for k in found)

    while True:
        more = {k: v for k, v in raw.items() if k not in found and refers(v)}
        if not more:
            break
        found.update(more)
    for text in found.values():
        for name in _ENV_NAME.findall(text):
            if name in os.environ:
                secrets.register(name, os.environ[name])
    return found


def to_yaml(obj: Any) -> str:
    """Render a schema instance (or any config) as YAML; values a loaded config took from the
    environment are written unresolved (``${oc.env:NAME}``), never their values."""
    if not dataclasses.is_dataclass(obj):
        return OmegaConf.to_yaml(obj)
    unresolved: dict[str, str] = getattr(obj, UNRESOLVED_ATTR, {})
    if not unresolved:
        return OmegaConf.to_yaml(OmegaConf.structured(obj))
    plain = OmegaConf.create(OmegaConf.to_container(OmegaConf.structured(obj)))
    for key, text in unresolved.items():
        OmegaConf.update(plain, key, text, force_add=True)
    return OmegaConf.to_yaml(plain)
