"""One shape for every pluggable kind a config names (KD losses, combine modes, augmentations, objectives).

Like the model registry (:mod:`kdasr.models`) and ESPnet's ``ClassChoices``:
each kind is a class registered under the name a config uses; the class
declares what it needs (teachers, reference transcripts, config keys), and
callers look it up here instead of comparing names, so adding a kind is one
class in one place.
"""
from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from kdasr.config import ConfigError

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    """``name -> class`` for one kind; :meth:`get` names the config key and the closest valid name."""

    def __init__(self, kind: str, key: str) -> None:
        self.kind = kind
        self.key = key
        self._classes: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator: make the class selectable as ``<key>: name`` (sets its ``name``)."""

        def deco(cls: T) -> T:
            if name in self._classes and self._classes[name] is not cls:
                raise ValueError(f"{self.kind} {name!r} is already registered by {self._classes[name].__name__}")
            cls.name = name
            self._classes[name] = cls
            return cls

        return deco

    def names(self) -> tuple[str, ...]:
        """Registered names in registration order (the order the docs list them in)."""
        return tuple(self._classes)

    def get(self, name: object) -> T:
        cls = self._classes.get(name) if isinstance(name, str) else None
        if cls is None:
            close = difflib.get_close_matches(str(name), self._classes, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{self.key} must be one of {', '.join(sorted(self._classes))}, got {name!r}{hint}")
        return cls

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)
