"""A tiny name → factory registry, so user code can add losses, optimizers or cells.

Usage::

    LOSSES = Registry("loss")

    @LOSSES.register("my-loss")          # as a decorator
    def my_loss(scores, row_mask, *, log_q=None): ...

    LOSSES.register("alias", my_loss)    # as a call
    fn = LOSSES.get("my-loss")           # unknown names raise UnknownNameError, listing known ones
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar, overload

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """Raised by `Registry.get` for a name that was never registered.

    Subclasses both KeyError (mapping semantics) and ValueError (bad config value), so callers
    may catch either.
    """

    def __str__(self) -> str:
        # KeyError.__str__ would repr() the message and wrap it in quotes.
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Maps names to factories (or any objects) of one kind, e.g. ``Registry("optimizer")``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    @overload
    def register(
        self, name: str, obj: None = None, *, overwrite: bool = False
    ) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T, *, overwrite: bool = False) -> T: ...

    def register(self, name: str, obj: T | None = None, *, overwrite: bool = False):
        """Registers ``obj`` under ``name``; without ``obj``, returns a decorator that does so.

        Raises:
          ValueError: ``name`` is already registered and ``overwrite`` is False.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")

        def add(entry: T) -> T:
            if name in self._entries and not overwrite:
                raise ValueError(
                    f"{self.kind} {name!r} is already registered; pass overwrite=True to replace it"
                )
            self._entries[name] = entry
            return entry

        return add if obj is None else add(obj)

    def get(self, name: str) -> T:
        """Returns the entry for ``name``; raises `UnknownNameError` listing the known names."""
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(repr(n) for n in self.names()) or "none"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> tuple[str, ...]:
        """Registered names, sorted."""
        return tuple(sorted(self._entries))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={list(self.names())})"
