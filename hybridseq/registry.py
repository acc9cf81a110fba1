"""Name → object tables for blocks, solvers, datasets and tasks, filled by plugins through the hooks.

A leaf: this module imports nothing of the package but its errors, and never what fills the tables.
The plugin loader (`hybridseq.plugins.load`) is injected with `set_loader`; a table runs it the first
time it is read, so a name is found whatever was imported before. Lookups of unknown names fail with
the closest registered name and the full list.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

from .errors import ConfigError


@dataclass
class Entry:
    name: str
    obj: Any
    owner: str                       # the plugin that registered it


_loader: list[Callable[[], None]] = []     # at most one: fills every table once (idempotent)


def set_loader(load: Callable[[], None]) -> None:
    """Install the function that fills the tables before they are first read."""
    _loader[:] = [load]


class Registry:
    def __init__(self, kind: str):
        self.kind = kind             # "block", "solver", "dataset", "task", "config section"
        self._entries: dict[str, Entry] = {}

    def _loaded(self) -> dict[str, Entry]:
        for load in _loader:
            load()
        return self._entries

    def add(self, name: str, obj: Any, owner: str) -> None:
        """Add ``name``; raises ``KeyError`` when another plugin already owns it."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if name in self._entries:
            raise KeyError(f"{self.kind} '{name}' is already registered by plugin '{self._entries[name].owner}'")
        self._entries[name] = Entry(name, obj, owner)

    def remove_owner(self, owner: str) -> None:
        for name in [n for n, e in self._entries.items() if e.owner == owner]:
            del self._entries[name]

    def entry(self, name: str, path: str = "") -> Entry:
        """The entry for ``name``, or a `ConfigError` at ``path`` listing the registered names."""
        entries = self._loaded()
        if name not in entries:
            raise ConfigError(path, f"unknown {self.kind} '{name}'", choices=entries, got=name)
        return entries[name]

    def get(self, name: str, path: str = "") -> Any:
        return self.entry(name, path).obj

    def names(self) -> list[str]:
        return sorted(self._loaded())

    def owned_by(self, owner: str) -> list[str]:
        return sorted(n for n, e in self._loaded().items() if e.owner == owner)

    def __contains__(self, name: object) -> bool:
        return name in self._loaded()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._loaded())


blocks = Registry("block")
solvers = Registry("solver")
datasets = Registry("dataset")
tasks = Registry("task")
sections = Registry("config section")
loggers = Registry("logger")
KINDS = {"blocks": blocks, "solvers": solvers, "datasets": datasets, "tasks": tasks, "sections": sections,
         "loggers": loggers}
