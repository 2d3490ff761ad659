"""Experiment configs: Python files with ``get_config()``, command-line overrides, locking.

An experiment is a file under ``configs/`` whose ``get_config()`` returns an
``ml_collections.ConfigDict``. :func:`load_config` imports it, applies
``--config.a.b=value`` overrides and returns the dict locked, so that a
misspelt key anywhere later is an error rather than a silently new field.

Overrides are typed by the field they replace: ``--config.rm.lr=2e-5`` must
parse as the field's type (int, float, bool, str, tuple/list; a section takes
a dict literal); ``None``-valued fields accept any Python literal (or fall back
to the raw string). The free-form sections ``*.options`` and ``*.overrides``
also accept new keys (``--config.model.overrides.vocab_size=512``). Any other
unknown key, or a value of the wrong type, raises :class:`ConfigError` naming
the key.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
from typing import Iterable, Sequence

import ml_collections


class ConfigError(ValueError):
    """A config file, key or override value that is not what the experiment expects."""


def load_config(path: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """Import ``path``, call its ``get_config()``, apply ``overrides``, return it locked.

    ``path`` may end in ``:ARG`` (``configs/rm/webgpt.py:bal``): then
    ``get_config(ARG)`` is called, which is how one file holds a base
    experiment and its variants.
    """
    argument = None
    if not os.path.isfile(path) and ":" in path:
        path, argument = path.rsplit(":", 1)
    config = _call_get_config(path, argument)
    for override in overrides:
        key, value = split_override(override)
        set_override(config, key, value)
    config.lock()
    return config


def _call_get_config(path: str, argument=None) -> ml_collections.ConfigDict:
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: no such config file")
    name = "rlhf_jax_config_" + os.path.splitext(os.path.basename(path))[0].replace("-", "_")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{path}: defines no get_config()")
    config = module.get_config() if argument is None else module.get_config(argument)
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"{path}: get_config() returned {type(config).__name__}, "
                          "expected an ml_collections.ConfigDict")
    return config


def split_override(text: str) -> tuple:
    """``"--config.rm.lr=2e-5"`` or ``"rm.lr=2e-5"`` → ``("rm.lr", "2e-5")``."""
    body = text[len("--config."):] if text.startswith("--config.") else text
    if "=" not in body:
        raise ConfigError(f"override {text!r}: expected --config.KEY=VALUE")
    key, value = body.split("=", 1)
    return key.strip(), value


OPEN_SECTIONS = ("options", "overrides")
"""Free-form sections (reader options, HF config overrides) whose keys the experiment cannot list."""


def set_override(config: ml_collections.ConfigDict, key: str, raw: str) -> None:
    """Set dotted ``key`` of ``config`` to ``raw`` parsed as the existing field's type."""
    *parents, leaf = key.split(".")
    node = config
    for depth, part in enumerate(parents):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            raise ConfigError(f"unknown config key {'.'.join(parents[:depth + 1])!r} "
                              f"(in override of {key!r})")
        node = node[part]
    open_section = bool(parents) and parents[-1] in OPEN_SECTIONS
    if isinstance(node, ml_collections.ConfigDict) and leaf not in node and open_section:
        node[leaf] = parse_value(key, None, raw)  # free-form sections accept new keys
        return
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
        known = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
        raise ConfigError(f"unknown config key {key!r}; known keys here: {known}")
    node[leaf] = parse_value(key, node[leaf], raw)


def parse_value(key: str, current, raw: str):
    """Parse ``raw`` as the type of ``current`` (the field's present value)."""
    if isinstance(current, bool):
        lowered = raw.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ConfigError(f"config key {key!r} is a bool; got {raw!r}")
    if isinstance(current, str):
        return raw
    if isinstance(current, (int, float)):
        try:
            value = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            value = None
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok or (isinstance(current, int) and not isinstance(value, int)):
            raise ConfigError(f"config key {key!r} is {type(current).__name__}; got {raw!r}")
        return float(value) if isinstance(current, float) else value
    try:
        value = ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError):
        if current is None:
            return raw
        raise ConfigError(f"config key {key!r} expects a {type(current).__name__} literal; "
                          f"got {raw!r}") from None
    if isinstance(current, ml_collections.ConfigDict):
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r} is a section; got {raw!r} (expected a dict literal)")
        return ml_collections.ConfigDict(value)
    if current is not None and isinstance(current, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r} is a sequence; got {raw!r}")
        return type(current)(value)
    if current is not None and not isinstance(value, type(current)):
        raise ConfigError(f"config key {key!r} is {type(current).__name__}; got {raw!r}")
    return value


def save_config(config: ml_collections.ConfigDict, path: str) -> None:
    """Write the resolved config as JSON (atomically) for the workdir's record."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(config.to_dict(), f, indent=2, sort_keys=True, default=repr)
    os.replace(tmp, path)


def overrides_from_argv(argv: Iterable[str]) -> tuple:
    """Split ``argv`` into (``--config.*`` overrides, the rest)."""
    overrides, rest = [], []
    for arg in argv:
        (overrides if arg.startswith("--config.") else rest).append(arg)
    return overrides, rest
