"""YAML configs with ``key.sub=value`` overrides; every run saves what it resolved.

A config is a plain nested dict: stages read the keys they need and nothing
else, so one file can hold data, model and training sections.
"""
from __future__ import annotations

import copy
import difflib
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import yaml

from kdasr.errors import KdasrError
from kdasr.utils.io import Pathlike, atomic_write_text


class ConfigError(KdasrError, ValueError):
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


# What a default's type lets a user set, and how a message names it.
_KINDS: list[tuple[type, tuple[type, ...], str]] = [
    (bool, (bool,), "true or false"),
    (int, (int,), "an integer"),
    (float, (int, float), "a number"),
    (str, (str,), "a string"),
    (list, (list, tuple), "a list"),
    (tuple, (list, tuple), "a list"),
]


def _kind(t: type) -> tuple[tuple[type, ...], str]:
    for base, accepted, name in _KINDS:
        if issubclass(t, base):
            return accepted, name
    return (t,), t.__name__


def _type_problem(key: str, value: Any, expected: type) -> Optional[str]:
    accepted, name = _kind(expected)
    # bool is an int to Python, but `epochs: true` is a mistake, not 1 epoch
    ok = isinstance(value, accepted) and not (isinstance(value, bool) and bool not in accepted)
    if ok:
        return None
    shown = f"{value!r} ({type(value).__name__})" if isinstance(value, str) else yaml.safe_dump(value).strip()
    shown = shown.removesuffix("\n...").strip()
    return f"{key}: expected {name}, got {shown}"


def _unknown_key(path: list[str], key: str, rest: list[str], valid: Sequence[str], schema: Mapping) -> str:
    dotted = ".".join(path + [key] + rest)
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if not close:
        return f"unknown key {dotted!r} (valid: {', '.join(sorted(valid))})"
    guess, node = path + close, schema.get(close[0])
    for k in rest:  # carry the rest of the path over when the guessed section has it
        if not isinstance(node, Mapping) or k not in node:
            break
        guess, node = guess + [k], node[k]
    return f"unknown key {dotted!r} (did you mean {'.'.join(guess)!r}?)"


def _walk(cfg: Mapping, schema: Mapping, path: list[str], types: Mapping[str, type], out: list[str]) -> None:
    for key, value in cfg.items():
        dotted = ".".join(path + [str(key)])
        if key not in schema:
            rest = []
            while isinstance(value, Mapping) and len(value) == 1:  # show the whole key a --set typed
                k, value = next(iter(value.items()))
                rest.append(str(k))
            out.append(_unknown_key(path, str(key), rest, [str(k) for k in schema], schema))
            continue
        default = schema[key]
        if isinstance(default, Mapping):
            if not isinstance(value, Mapping):
                out.append(f"{dotted}: expected a section (key: value lines), got {value!r}")
            else:
                _walk(value, default, path + [str(key)], types, out)
        elif value is None and (default is None or dotted in types):
            continue
        elif default is not None or dotted in types:
            problem = _type_problem(dotted, value, types.get(dotted, type(default)))
            if problem:
                out.append(problem)


def check_config(
    cfg: Mapping, schema: Mapping, types: Mapping[str, type] = {}, required: Sequence[str] = ()
) -> None:
    """Refuse keys ``schema`` does not have, values of another type than its default, missing ``required``.

    ``schema`` is a nested dict of defaults: a section is a dict, a leaf's
    default gives its type (an int is also a number). A leaf whose default is
    None takes anything (a section a later stage checks, like ``model`` or
    ``kd``) unless ``types`` names its type by dotted key. Every problem is
    reported at once, on one line, so a typo never trains with the defaults.
    """
    problems: list[str] = []
    _walk(cfg, schema, [], types, problems)
    problems += [f"missing required key {key}" for key in required if get_dotted(cfg, key) is None]
    if problems:
        raise ConfigError("; ".join(problems))
