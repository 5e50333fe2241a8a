"""Typed YAML documents: reading a file with `extends:`, applying `--set key=value`, and
building nested dataclasses from the mappings with every value checked against its field's
type. Generic over the dataclasses; ga.config holds the project's sections."""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from typing import Any, Iterable, Literal

import yaml

from ga.errors import ConfigError


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last,
    so `training:` written twice would silently drop the first section)."""


def _unique_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:  # an unhashable key: construct_mapping says so
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} is given twice",
                                                    key_node.start_mark)
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)
_SECTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def read_yaml(path: str) -> dict:
    """A config file's mapping of sections (a key given twice, a non-mapping, or top-level
    keys that are no section names are errors that name the file, never its content)."""
    try:
        with open(path, encoding="utf-8") as fh:
            loader = _UniqueKeyLoader(fh)  # a SafeLoader: no Python tags
            try:
                doc = loader.get_single_data()
            finally:
                loader.dispose()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config path is a folder, not a file: {path}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file is not UTF-8 text: {path}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}{where}: {problem}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(doc).__name__}")
    if not all(isinstance(k, str) and _SECTION_NAME.match(k) for k in doc):
        # Not a config at all (a path given by mistake, or on purpose: `extends: /etc/shadow`):
        # name the file, never echo its content.
        raise ConfigError(f"{path} is not a ga config: its top level is not sections such as data:, model:, training:")
    return doc


def read_with_extends(path: str, seen: tuple = ()) -> dict:
    """A config file with the files its `extends:` names merged under it (parents first)."""
    real = os.path.realpath(path)
    if real in seen:
        raise ConfigError(f"extends: cycle through {path}")
    doc = read_yaml(path)
    return resolve_extends(doc, os.path.dirname(path), seen + (real,))


def resolve_extends(doc: dict, base_dir: str, seen: tuple = ()) -> dict:
    """`doc` merged over the file its `extends:` names (relative to `base_dir`)."""
    parent = doc.pop("extends", None)
    if parent is None:
        return doc
    if not isinstance(parent, str):
        raise ConfigError(f"extends: must be a file path, got {parent!r}")
    parent_path = parent if os.path.isabs(parent) else os.path.join(base_dir, parent)
    return deep_merge(read_with_extends(parent_path, seen), doc)


def deep_merge(base: dict, over: dict) -> dict:
    """`over` merged into a copy of `base`, mappings key by key."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def apply_override(raw: dict, item: str, root: type) -> None:
    """Apply one "section.key=value" to the raw mapping `raw` of the dataclass `root`, the value
    typed by its field; a misspelt key is reported, never added."""
    if not isinstance(item, str) or "=" not in item:
        raise ConfigError(f"expects section.key=value, got {item!r}", arg="overrides")
    dotted, text = item.split("=", 1)
    keys = dotted.strip().split(".")
    # Walk the dataclass tree first so that a misspelt key is reported, not silently added.
    cls = root
    for i, k in enumerate(keys):
        names = {f.name: f for f in dataclasses.fields(cls)}
        where = ".".join(keys[:i])
        if k not in names:
            raise ConfigError(unknown_key(k, where, names))
        ftype = typing.get_type_hints(cls)[k]
        if i < len(keys) - 1:
            if not dataclasses.is_dataclass(ftype):
                raise ConfigError(f"{dotted}: {'.'.join(keys[:i + 1])} is a value, not a section", arg="overrides")
            cls = ftype
    if dataclasses.is_dataclass(ftype):
        raise ConfigError(f"{dotted}: is a section; set one of its keys, e.g. {dotted}.{dataclasses.fields(ftype)[0].name}=...",
                          arg="overrides")
    value = _parse_cli_value(text, ftype)
    node = raw
    for k in keys[:-1]:
        nxt = node.get(k)
        if not isinstance(nxt, dict):
            nxt = {}
            node[k] = nxt
        node = nxt
    node[keys[-1]] = value


def _parse_cli_value(text, ftype):
    # A str field takes the text as written ("--set output.name=001" stays "001");
    # everything else is read as YAML and then typed by the field.
    if base_type(ftype) is str and text.strip().lower() not in ("null", "~"):
        return text
    try:
        return yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        return text


def flow_yaml(value: Any) -> str:
    """A value as one line of YAML: `auto`, `0.5`, `true`, `null`, `[224, 224]`, `''`."""
    return yaml.safe_dump(value, default_flow_style=True, width=1 << 20).strip().removesuffix("...").strip()


def base_type(tp: Any) -> Any:
    """X of Optional[X]; the type itself otherwise."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        return base_type(args[0])
    return tp


def unknown_key(key: str, where: str, names: Iterable[str]) -> str:
    """The message for a key that is no field here, with the closest valid one."""
    close = difflib.get_close_matches(key, list(names), n=1, cutoff=0.5)
    place = f"{where}." if where else ""
    hint = f"; did you mean {place}{close[0]}?" if close else f"; valid keys: {', '.join(sorted(names))}"
    section = f"in section '{where}'" if where else "at the top level"
    return f"unknown key '{place}{key}' {section}{hint}"


def build(cls: type, raw: Any, where: str) -> Any:
    """The dataclass `cls` from a raw mapping, every value typed by its field (nested
    dataclasses too); `where` is its dotted key, for messages."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping of keys, got {_describe(raw)}")
    hints = typing.get_type_hints(cls)
    names = {f.name: f for f in dataclasses.fields(cls)}
    for k in raw:
        if not isinstance(k, str) or k not in names:
            raise ConfigError(unknown_key(str(k), where, names))
    kwargs = {}
    for k, v in raw.items():
        key = f"{where}.{k}" if where else k
        kwargs[k] = _coerce(v, hints[k], key)
    return cls(**kwargs)


def _coerce_union(value, args, key):
    """Optional[X], a mapping or a value, or a value or a keyword (int or "auto"): the first
    type that fits."""
    if value is None and type(None) in args:
        return None
    inner = [a for a in args if a is not type(None)]
    mapping = [a for a in inner if typing.get_origin(a) is dict]
    if mapping and isinstance(value, dict):
        return _coerce(value, mapping[0], key)
    candidates = [a for a in inner if a not in mapping]
    for a in candidates[:-1]:
        try:
            return _coerce(value, a, key)
        except ConfigError:
            pass
    try:
        return _coerce(value, candidates[-1], key)
    except ConfigError:
        if len(candidates) == 1:
            raise
        raise ConfigError(f"{key} must be {' or '.join(_kind(a) for a in candidates)}, got {_describe(value)}"
                          ) from None


def _kind(tp):
    if typing.get_origin(tp) is Literal:
        return ", ".join(str(a) for a in typing.get_args(tp))
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _describe(v):
    return f"{type(v).__name__} {v!r}" if not isinstance(v, (dict, list)) else type(v).__name__


def _coerce(value, tp, key):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, args, key)
    if origin is Literal:
        if isinstance(value, bool) and all(isinstance(a, str) for a in args):
            # YAML reads `jit_compile: true` and `split_touching: off` as bools
            value = ("on" if value else "off") if "on" in args else ("true" if value else "false")
        if value not in args:
            choices = ", ".join(str(a) for a in args)
            close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{key} must be one of {choices}; got {value!r}{hint}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {_describe(value)}")
        return {str(k): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {_describe(value)}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {_describe(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key} must be an integer, got {_describe(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:  # YAML 1.1 reads "1e-4" (no dot) as a string
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number, got {_describe(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key} must be text, got {_describe(value)}")
    raise AssertionError(f"unsupported config type {tp} at {key}")
