"""Configs: ``get_config()`` files plus overrides, the one path every config takes.

A config file is a Python file (``sentjax/configs/*.py``, ``experiments/*.py``) defining
``get_config(arg: str | None = None)`` that returns an ``ml_collections.ConfigDict``; ``path.py:arg``
passes ``arg`` (big_vision style). Overrides, from the command line (``--config.a.b=value``, see
``parse_config_args``) or from Python (``apply_overrides(cfg, {"a.b": value})``: the experiment
runner, the tests), are validated against the ConfigDict: an unknown or mistyped key is an error
that lists the valid keys (and the closest match), so a typo never silently trains the wrong model,
and no key can be added. Values are coerced to the existing field's type (``--config.lr=1e-4`` on a
float field, ``--config.datasets=nli,sts`` on a tuple field; command-line text is parsed as a Python
literal first). The config returned is locked: code that runs later cannot add keys either.
"""
from __future__ import annotations

import ast
import difflib
import importlib.util
import os
from typing import Any, Mapping, Sequence

import ml_collections


from sentjax.errors import ConfigError

__all__ = ["ConfigError", "UnknownKeyError", "load_config_file", "valid_keys", "set_key", "apply_overrides",
           "parse_config_args", "objective_config", "set_objective"]


class UnknownKeyError(ConfigError, KeyError):
    """A key that the config does not have (configs are locked: overrides cannot add keys)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """Runs ``get_config`` of a config file; ``spec`` is ``path.py`` or ``path.py:arg``."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise ConfigError(f"Config file {path!r} does not exist; pass e.g. "
                          "--config experiments/simcse_unsup.py.")
    mod_spec = importlib.util.spec_from_file_location(
        f"sentjax_config_{abs(hash(os.path.abspath(path)))}", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{path} defines no get_config() function returning a ConfigDict.")
    cfg = module.get_config(arg) if arg else module.get_config()
    if not isinstance(cfg, ml_collections.ConfigDict):
        raise ConfigError(f"{path}: get_config() returned {type(cfg).__name__}, not a ConfigDict.")
    return cfg


def valid_keys(cfg: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """All dotted leaf keys of a ConfigDict, sorted."""
    keys = []
    for k, v in cfg.items():
        name = f"{prefix}{k}"
        if isinstance(v, ml_collections.ConfigDict):
            keys.extend(valid_keys(v, name + "."))
        else:
            keys.append(name)
    return sorted(keys)


def _coerce(value: Any, old: Any, key: str, text: str | None = None) -> Any:
    """``value`` in the type of the field's current value ``old``; ``text``: the command-line text
    ``value`` was parsed from (a bare string or a comma-separated list there needs no quotes)."""
    shown = f"--config.{key}={text!r}" if text is not None else f"{key}={value!r}"
    if old is None or value is None:
        return value
    if isinstance(old, bool):
        if text is not None and isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise ConfigError(f"{shown}: expects true/false.")
        return value
    if isinstance(old, (tuple, list)):
        if isinstance(value, str) and text is not None:
            value = tuple(v for v in value.split(",") if v)
        if not isinstance(value, (tuple, list)):
            value = (value,)
        return type(old)(value)
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(old, int) and isinstance(value, float) and value.is_integer():
        return int(value)
    if type(value) is not type(old):
        if isinstance(old, str) and text is not None:
            return text
        raise ConfigError(f"{shown}: expected a {type(old).__name__} (current value {old!r}).")
    return value


def _parse(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # bare strings need no quotes on a command line


def set_key(cfg: ml_collections.ConfigDict, key: str, value: Any, text: str | None = None) -> None:
    """Sets the existing dotted ``key`` to ``value`` (coerced to its type); unknown keys raise
    ConfigError listing the valid ones. ``text``: the command-line text of ``value``, if any.
    ``objective.name`` replaces the objective block by that objective's defaults (``set_objective``)."""
    node = cfg
    parts = key.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            if parts[0] == "objective" and i == 1 and len(parts) == 2 and "name" in node:
                raise UnknownKeyError(
                    f"Unknown config key {key!r}: objective {node.name!r} has no field {part!r}; its fields are "
                    f"{[k for k in node if k != 'name']} (--config.objective.name=<other> switches the objective "
                    "and resets this block to its defaults).")
            keys = valid_keys(cfg)
            close = difflib.get_close_matches(key, keys, n=1)
            where = f" (the config has no section {'.'.join(parts[:i + 1])!r})" if i < len(parts) - 1 else ""
            hint = f" Did you mean --config.{close[0]}?" if close else ""
            raise UnknownKeyError(f"Unknown config key {key!r}{where}.{hint} Valid keys: {', '.join(keys)}.")
        if i == len(parts) - 1:
            old = node[part]
            if isinstance(old, ml_collections.ConfigDict):
                raise ConfigError(f"{key!r} is a group, not a value; set one of its fields: "
                                  f"{', '.join(valid_keys(old, key + '.'))}.")
            value = _coerce(value, old, key, text)
            if key == "objective.name":
                set_objective(cfg, value)
                return
            with node.ignore_type():
                node[part] = value
        else:
            node = node[part]


def set_objective(cfg: ml_collections.ConfigDict, name: str) -> None:
    """``objective.name = name``; another objective's block is replaced by the defaults of ``name``
    (each objective has its own fields: ``sentjax.losses.<name>.Config``)."""
    from sentjax.losses import registry
    if cfg.objective.get("name") != name:
        cfg.objective = ml_collections.ConfigDict(registry.defaults(name))


def objective_config(name: str, **fields: Any) -> ml_collections.ConfigDict:
    """An objective block for an experiment config: ``name``'s defaults with ``fields`` changed,
    checked against ``sentjax.losses.<name>.Config`` (a foreign field is an error)."""
    from sentjax.losses import registry
    registry.hparams_from(name, fields)
    return ml_collections.ConfigDict({**registry.defaults(name), **fields})


def objective_first(overrides: Sequence[tuple]) -> list[tuple]:
    """``objective.name`` before the other keys, so ``--config.objective.temperature=...`` given
    before ``--config.objective.name=infonce`` lands in the new block."""
    return sorted(overrides, key=lambda kv: kv[0] != "objective.name")


def apply_overrides(cfg: ml_collections.ConfigDict,
                    overrides: Sequence[str] | Mapping[str, Any]) -> ml_collections.ConfigDict:
    """A locked copy of ``cfg`` with ``overrides`` applied: command-line strings ``--config.k=v``
    (also ``config.k=v``, ``k=v``) or a mapping ``{"k": python value}``."""
    cfg = ml_collections.ConfigDict(cfg.to_dict())
    if isinstance(overrides, Mapping):
        items = [(key, value, None) for key, value in overrides.items()]
    else:
        items = []
        for item in overrides:
            body = item[2:] if item.startswith("--") else item
            if body.startswith("config."):
                body = body[len("config."):]
            if "=" not in body:
                raise ConfigError(f"Override {item!r} must look like --config.key=value.")
            key, text = body.split("=", 1)
            items.append((key, _parse(text), text))
    for key, value, text in objective_first(items):
        set_key(cfg, key, value, text)
    cfg.lock()
    return cfg


def parse_config_args(argv: Sequence[str]) -> tuple[ml_collections.ConfigDict, list[str]]:
    """Splits ``--config FILE`` / ``--config=FILE`` and ``--config.k=v`` out of argv.

    Returns the resulting config and the remaining (non-config) arguments, in order.
    ``--config.k v`` (value as the next argument) is accepted too.
    """
    spec, overrides, rest = None, [], []
    argv = list(argv)
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--config":
            if i + 1 >= len(argv):
                raise ConfigError("--config needs a file: --config experiments/simcse_unsup.py.")
            spec, i = argv[i + 1], i + 2
            continue
        if a.startswith("--config="):
            spec = a.split("=", 1)[1]
        elif a.startswith("--config."):
            if "=" not in a:
                if i + 1 >= len(argv):
                    raise ConfigError(f"{a} needs a value: {a}=VALUE.")
                a = f"{a}={argv[i + 1]}"
                i += 1
            overrides.append(a)
        else:
            rest.append(a)
        i += 1
    if spec is None:
        raise ConfigError("No config given; pass --config experiments/<name>.py "
                          "(see experiments/ for the available ones).")
    return apply_overrides(load_config_file(spec), overrides), rest
