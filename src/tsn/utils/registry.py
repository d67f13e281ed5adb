"""One small registry class for every extension point of the package.

In the manner of timm's ``@register_model`` and detectron2's ``Registry``: an entry is added once under a name,
by a call or as a decorator, and looked up by that name; a name already taken is refused in one line
(:class:`~tsn.errors.TsnError`), so a plugin cannot silently replace what another module registered, and an
unknown name is refused in one line that lists the known ones. Every extension point (tasks, datasets, output
kinds, losses, architectures, backbone adapters, training callbacks...; ``tests/test_registries.py`` lists them)
is one :class:`Registry`, so all of them refuse with the same two sentences::

    loss 'depth_l1' is already registered (tsn.training.losses.depth_l1); choose another name
    unknown task 'colour'; known: semseg, human_parts, ... (register one with tsn.register_task in a plugin: ...)

A :class:`Registry` is a ``dict`` of canonical name -> entry, so reading code (``name in LOSSES``,
``LOSSES[name]``, ``", ".join(LOSSES)``) stays plain; :meth:`Registry.register` is the one way that adds. Where
users type names (tasks, datasets, kinds), a registry can also accept other spellings: ``normalize`` turns what
is typed into the form names are registered in (``" NYU-v2"`` -> ``"nyu_v2"``), and an entry may bring aliases
(``seg`` for ``semseg``), which :meth:`Registry.lookup` resolves and :meth:`Registry.register` refuses to reuse
like names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import TypeVar, overload

from tsn.errors import TsnError

__all__ = ["Registry"]

_T = TypeVar("_T")


def _exact(name: str) -> str:
    return name


class Registry(dict[str, _T]):
    """Entries of one extension point by canonical name.

    ``what`` names an entry in messages (``"loss"``); ``hint`` ends the message for an unknown name (how a user's
    entry gets registered, e.g. ``"register one with tsn.register_loss"``). ``normalize`` maps a typed name to the
    form names are registered in (default: names are matched exactly); :attr:`aliases` maps each alias, so
    normalised, to the canonical name it stands for. A name is a Python identifier, or, with ``name_pattern``,
    whatever that regular expression matches whole (``r"[a-z][a-z0-9_-]*"`` for names with hyphens).
    """

    def __init__(
        self, what: str, hint: str = "", *, normalize: Callable[[str], str] = _exact, name_pattern: str | None = None
    ) -> None:
        super().__init__()
        self.what, self.hint, self.normalize, self.name_pattern = what, hint, normalize, name_pattern
        self.aliases: dict[str, str] = {}

    @overload
    def register(self, name: str, entry: _T, *, aliases: Iterable[str] = ()) -> _T: ...

    @overload
    def register(self, name: str, entry: None = None, *, aliases: Iterable[str] = ()) -> Callable[[_T], _T]: ...

    def register(
        self, name: str, entry: _T | None = None, *, aliases: Iterable[str] = ()
    ) -> _T | Callable[[_T], _T]:
        """Add ``entry`` under ``name`` (and ``aliases``) and return it; without ``entry``, a decorator that does so.

        Nothing is added when any of the names is refused: one that is not an identifier in normal form, or one
        that is taken (by a name or an alias of another entry).
        """
        aliases = tuple(aliases)
        if entry is None:
            return lambda decorated: self.register(name, decorated, aliases=aliases)
        article = "an" if self.what[:1] in "aeiou" else "a"
        if self.name_pattern is None and not (isinstance(name, str) and name.isidentifier()):
            raise TsnError(f"{article} {self.what} name must be a Python identifier such as "
                           f"'my_{self.what.replace(' ', '_')}', got {name!r}")
        if self.name_pattern is not None and not (isinstance(name, str) and re.fullmatch(self.name_pattern, name)):
            raise TsnError(f"{article} {self.what} name must match {self.name_pattern}, got {name!r}")
        if self.normalize(name) != name:
            raise TsnError(f"{article} {self.what} name must be written as it is looked up, "
                           f"{self.normalize(name)!r}, got {name!r}")
        if any(not isinstance(alias, str) or not self.normalize(alias) for alias in aliases):
            raise TsnError(f"{self.what} {name!r}: every alias must be a non-empty name, got {aliases!r}")
        for given in (name, *aliases):
            owner = self._owner(self.normalize(given))
            if owner is not None:
                origin = _describe(self[owner]) if self.normalize(given) == owner else f"an alias of {owner!r}"
                raise TsnError(f"{self.what} {given!r} is already registered ({origin}); choose another name")
        self[name] = entry
        self.aliases.update((key, name) for key in map(self.normalize, aliases) if key != name)
        return entry

    def canonical(self, name: str) -> str:
        """The canonical name ``name`` stands for (itself, another spelling or an alias), or a one-line
        :class:`TsnError` listing the known names."""
        owner = self._owner(self.normalize(name)) if isinstance(name, str) else None
        if owner is not None:
            return owner
        known = ", ".join(self) or "none"
        raise TsnError(f"unknown {self.what} {name!r}; known: {known}" + (f" ({self.hint})" if self.hint else ""))

    def lookup(self, name: str) -> _T:
        """The entry called ``name`` (:meth:`canonical` accepts it), or a one-line :class:`TsnError` listing the
        known names."""
        return self[self.canonical(name)]

    def unregister(self, name: str) -> _T:
        """Remove and return the entry called ``name``, with its aliases (for tests and interactive sessions)."""
        canonical = self.canonical(name)
        for alias in [alias for alias, owner in self.aliases.items() if owner == canonical]:
            del self.aliases[alias]
        return self.pop(canonical)

    def _owner(self, key: str) -> str | None:
        """The canonical name of the entry that the normalised name ``key`` means, None when it is free. An alias
        whose entry was removed by plain ``dict`` means (``del``, ``clear``) is free."""
        if key in self:
            return key
        owner = self.aliases.get(key)
        return owner if owner in self else None


def _describe(entry: object) -> str:
    """Where an entry comes from, for the duplicate message: ``module.qualname`` of a function or class (of the
    ``build`` or ``loader`` a spec names, as written when it is a ``"module:attr"``), else the spec's title."""
    target = getattr(entry, "build", None) or getattr(entry, "loader", None) or entry
    if isinstance(target, str):
        return target
    if callable(target) and hasattr(target, "__qualname__"):
        module = getattr(target, "__module__", None)
        return f"{module}.{target.__qualname__}" if module else target.__qualname__
    title = getattr(entry, "title", None)
    if isinstance(title, str) and title:
        return title
    return f"{type(entry).__module__}.{type(entry).__qualname__}"
