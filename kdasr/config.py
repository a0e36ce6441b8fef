"""YAML configs with ``key.sub=value`` overrides; every run saves what it resolved.

A config is a plain nested dict: stages read the keys they need and nothing
else, so one file can hold data, model and training sections.
"""
from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import yaml

from kdasr.utils.io import Pathlike, atomic_write_text


class ConfigError(ValueError):
    """A config file or override that cannot be used."""


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-3`` as a string; every speech config writes learning rates so."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value``; the value is parsed as YAML (``1e-3`` -> float, ``[1,2]`` -> list)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key.sub=value")
    key, raw = item.split("=", 1)
    keys = [k for k in key.strip().split(".") if k]
    if not keys:
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml_load(raw) if raw.strip() != "" else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: value is not valid YAML: {e}") from e
    return keys, value


def set_dotted(cfg: dict, keys: list[str], value: Any) -> None:
    node = cfg
    for k in keys[:-1]:
        child = node.get(k)
        if child is None:
            child = node[k] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {'.'.join(keys)}: {k!r} is not a section")
        node = child
    node[keys[-1]] = value


def get_dotted(cfg: Mapping, key: str, default: Any = None) -> Any:
    node: Any = cfg
    for k in key.split("."):
        if not isinstance(node, Mapping) or k not in node:
            return default
        node = node[k]
    return node


def deep_merge(base: dict, extra: Mapping) -> dict:
    """Return ``base`` updated recursively with ``extra`` (neither is modified)."""
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_config(
    paths: Union[Pathlike, Sequence[Pathlike], None] = None,
    overrides: Iterable[str] = (),
    defaults: Optional[Mapping] = None,
) -> dict:
    """Load one or more YAML files (later ones win) over ``defaults``, then apply ``overrides``.

    Several files let a recipe combine a training config with a model config
    (``train.yaml model_cnn.yaml``) instead of copying either. A file may also
    name a parent with ``base: other.yaml`` (relative to itself).
    """
    cfg: dict = copy.deepcopy(dict(defaults or {}))
    if paths is None:
        paths = []
    elif isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    for path in paths:
        cfg = deep_merge(cfg, _load_with_base(Path(path), seen=()))
    for item in overrides:
        keys, value = parse_override(item)
        set_dotted(cfg, keys, value)
    return cfg


def _load_with_base(path: Path, seen: tuple) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    if path.resolve() in seen:
        raise ConfigError(f"config {path} includes itself through 'base'")
    try:
        data = yaml_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must hold a mapping at the top level")
    base = data.pop("base", None)
    if base is None:
        return data
    parent = _load_with_base((path.parent / base), seen + (path.resolve(),))
    return deep_merge(parent, data)


def save_config(cfg: Mapping, path: Pathlike) -> None:
    """Write the resolved config (atomically) next to a run's outputs."""
    atomic_write_text(path, yaml.safe_dump(dict(cfg), sort_keys=False))
