"""Named parts configured as data (big_vision style): ``{"type": <name>, <its own fields>}``.

A part is a frozen dataclass whose fields are its settings (a default and one comment each); a
:class:`Registry` maps names to such classes. ``registry.build(cfg)`` checks the config against the
dataclass, so an unknown ``type`` or a field that belongs to another part is a :class:`ConfigError`
that lists the valid ones (nothing is silently ignored), and ``registry.to_config(part)`` gives the
config back (``build(to_config(p)) == p``).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, TypeVar

from sentjax.errors import ConfigError

__all__ = ["ConfigError", "Registry"]

T = TypeVar("T")


class Registry:
    """``name -> dataclass`` for one kind of part (``kind`` names it in errors, e.g. "evaluator")."""

    def __init__(self, kind: str):
        self.kind = kind
        self._classes: dict[str, type] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator: ``@REGISTRY.register("sts")`` on a frozen dataclass."""
        def add(cls: type[T]) -> type[T]:
            if not dataclasses.is_dataclass(cls):
                raise TypeError(f"{cls.__name__}: a registered {self.kind} must be a dataclass.")
            if name in self._classes:
                raise ValueError(f"{self.kind} {name!r} is registered twice.")
            self._classes[name] = cls
            return cls
        return add

    def names(self) -> list[str]:
        return sorted(self._classes)

    def __contains__(self, name: str) -> bool:
        return name in self._classes

    def __getitem__(self, name: str) -> type:
        if name not in self._classes:
            raise ConfigError(f"Unknown {self.kind} type {name!r}; choose one of {self.names()}.")
        return self._classes[name]

    def fields(self, name: str) -> list[str]:
        """The config keys of part ``name``: ``type`` and its dataclass fields."""
        return ["type"] + [f.name for f in dataclasses.fields(self[name])]

    def build(self, cfg: Mapping[str, Any], where: str = "") -> Any:
        """The part ``cfg["type"]`` with the other keys as its fields. ``where`` (e.g.
        ``"evals.sts_dev"``) prefixes the error messages."""
        at = f"{where}: " if where else ""
        cfg = dict(cfg)
        if "type" not in cfg:
            raise ConfigError(f"{at}a {self.kind} config needs a 'type', one of {self.names()}.")
        name = cfg.pop("type")
        try:
            cls = self[name]
        except ConfigError as e:
            raise ConfigError(f"{at}{e}") from None
        valid = {f.name: f for f in dataclasses.fields(cls)}
        foreign = sorted(set(cfg) - set(valid))
        if foreign:
            raise ConfigError(f"{at}{foreign[0]!r} is not a field of {self.kind} {name!r}; its fields are "
                              f"{', '.join(self.fields(name))}.")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{at}{self.kind} {name!r}: {e}") from None

    def to_config(self, part: Any) -> dict[str, Any]:
        """``{"type": name, **fields}`` of a built part."""
        for name, cls in self._classes.items():
            if type(part) is cls:
                return {"type": name, **{f.name: getattr(part, f.name) for f in dataclasses.fields(part)}}
        raise ConfigError(f"{type(part).__name__} is not a registered {self.kind}.")

    def default_config(self, name: str, **fields: Any) -> dict[str, Any]:
        """Every key of part ``name`` with its defaults, ``fields`` applied (validated). Config files
        put this in the config so that each field can be overridden from the command line."""
        return self.to_config(self.build({"type": name, **fields}))
