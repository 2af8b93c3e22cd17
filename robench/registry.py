"""Name -> thing registries (activations, models, datasets, attacks), filled where each thing is
defined, by ``robench.register_*`` calls, and by installed plugins; an unknown name is a
ValueError that lists the known ones.

Plugins are Python entry points in a registry's group (``robench.activations``, ...). Their names
are read from the installed packages' metadata on first use, but a plugin's code is imported only
when its name is asked for: a broken plugin that nobody uses costs nothing, and one that is used
costs one warning line (then the usual "unknown name" error), never a traceback.

A registry may also resolve ``package.module:attribute`` names (``--model mypkg.nets:tiny``): the
attribute is imported when that exact name is asked for, which is always the user's own choice
(a command-line option, a config, an API call), never a name read from a checkpoint.
"""

from __future__ import annotations

import contextvars
import importlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from typing import Any, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


def is_factory_spec(name: str) -> bool:
    """``package.module:attribute``: a thing imported by its dotted path, not a registered name."""
    return ":" in name


def file_name_part(name: str) -> str:
    """How a registered name appears in a file name (``pkg.mod:tiny`` -> ``pkg.mod.tiny``)."""
    return name.replace(":", ".").replace("/", ".")


_FROM_CWD = contextvars.ContextVar("robench_imports_from_cwd", default=True)


@contextmanager
def imports_outside_cwd() -> Iterator[None]:
    """Factories imported in the block never come from the working folder: what ``verify`` uses,
    since the folder it runs in may be a shared results folder whose files nobody vetted."""
    token = _FROM_CWD.set(False)
    try:
        yield
    finally:
        _FROM_CWD.reset(token)


@contextmanager
def _search_path() -> Iterator[None]:
    """The import path for a factory: with the working folder appended (a module beside the user's
    config is found, as ``python -m`` finds it, while an installed package of the same name still
    wins), or, inside imports_outside_cwd, with every entry naming the working folder taken out."""
    cwd = os.getcwd()
    if _FROM_CWD.get():
        if cwd not in sys.path:
            sys.path.append(cwd)
        yield
        return
    saved = list(sys.path)
    sys.path[:] = [p for p in saved if os.path.abspath(p or ".") != cwd]
    try:
        yield
    finally:
        sys.path[:] = saved


def import_spec(spec: str, kind: str) -> Any:
    """The object ``package.module:attribute`` names; a ConfigError that says why it cannot be had.
    See _search_path for where the module is looked for."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{kind} {spec!r}: write package.module:factory")
    try:
        with _search_path():
            obj: Any = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - user code can raise anything on import
        where = "" if _FROM_CWD.get() else " (the working folder is not searched here: put it on PYTHONPATH)"
        raise ConfigError(f"cannot import {kind} factory {spec}: {type(err).__name__}: {err}{where}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"cannot import {kind} factory {spec}: {module_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{kind} factory {spec} is a {type(obj).__name__}, not something to call")
    return obj


class Registry(Generic[T]):
    """``kind`` names what is registered (for messages); ``group`` is the entry-point group its
    plugins come from; ``check(name, obj)`` turns a loaded plugin object into an item (or raises);
    ``specs`` lets ``package.module:factory`` names resolve by import."""

    def __init__(self, kind: str, group: str | None = None, check: Callable[[str, Any], T] | None = None,
                 specs: bool = False) -> None:
        self.kind = kind
        self.group = group
        self.check = check
        self.specs = specs
        self._items: dict[str, T] = {}
        self._imported: dict[str, T] = {}  # package.module:factory names, resolved once, never listed
        self._pending: dict[str, metadata.EntryPoint] | None = None if group else {}
        self.external: set[str] = set()  # names that came from outside robench (plugins, specs, register_*)

    def add(self, name: str, item: T, external: bool = False) -> T:
        if not name or is_factory_spec(name):
            raise ValueError(f"{self.kind} name {name!r} must be non-empty and have no ':'")
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = item
        if external:
            self.external.add(name)
        if self._pending:
            self._pending.pop(name, None)  # registered in code: the entry point of that name is not needed
        return item

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of ``add``."""
        return lambda item: self.add(name, item)

    def _plugins(self) -> dict[str, metadata.EntryPoint]:
        """Entry points of this registry's group, by name, read once; names robench already has are
        skipped with a warning (a plugin cannot replace a built-in)."""
        if self._pending is None:
            self._pending = {}
            for ep in metadata.entry_points(group=self.group or ""):
                if ep.name in self._items or ep.name in self._pending:
                    warnings.warn(f"plugin {ep.value} registers {self.kind} {ep.name!r}, which is already taken; "
                                  "ignored", stacklevel=2)
                    continue
                self._pending[ep.name] = ep
        return self._pending

    def _load(self, name: str) -> None:
        ep = self._plugins().pop(name)
        try:
            obj = ep.load()
            item = self.check(name, obj) if self.check is not None else obj
        except Exception as err:  # noqa: BLE001 - a plugin can raise anything; it costs a warning, not a crash
            warnings.warn(f"plugin {ep.value} ({self.kind} {name!r}) failed to load: {type(err).__name__}: {err}",
                          stacklevel=3)
            return
        self.add(name, item, external=True)

    def loaded(self) -> list[T]:
        """The items registered so far, in registration order (plugins not yet asked for stay unloaded)."""
        return list(self._items.values())

    def names(self) -> list[str]:
        return sorted(set(self._items) | set(self._plugins()))

    def __contains__(self, name: str) -> bool:
        return name in self._items or name in self._plugins()

    def get(self, name: str) -> T:
        if name in self._items:
            return self._items[name]
        if name in self._imported:
            return self._imported[name]
        if name in self._plugins():
            self._load(name)
            if name in self._items:
                return self._items[name]
        elif self.specs and is_factory_spec(name):
            obj = import_spec(name, self.kind)
            item = self.check(name, obj) if self.check is not None else obj
            self._imported[name] = item
            self.external.add(name)
            return item
        raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}"
                         + ("; or package.module:factory" if self.specs else ""))
