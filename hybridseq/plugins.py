"""Plugin loading: one pluggy PluginManager for built-in and third-party plugins alike.

Built-in features are the modules in `DEFAULT_PLUGINS`; third-party packages declare an entry point in
the ``hybridseq`` group. This module is the one place that loads plugins: it installs `load` as the
registries' loader (`registry.set_loader`), so reading a table fills it. ``HYBRIDSEQ_LOAD_PLUGINS``
(comma list; empty = none) selects which entry-point plugins load. A plugin that fails to import,
implements an unknown hook, or registers a name that is taken is reported with a `PluginWarning` naming
it and skipped; the rest keeps working.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata as md
import os
import threading
import warnings
from dataclasses import dataclass, field

import pluggy

from . import hookspecs, registry
from ._version import __version__
from .errors import PluginWarning

ENV_VAR = "HYBRIDSEQ_LOAD_PLUGINS"
ENTRY_POINT_GROUP = "hybridseq"
DEFAULT_PLUGINS = (
    "hybridseq.blocks.encoders",
    "hybridseq.blocks.backbones",
    "hybridseq.blocks.heads",
    "hybridseq.blocks.tasks",
    "hybridseq.solvers.builtin",
    "hybridseq.data",
    "hybridseq.tasks",
    "hybridseq.sections",
    "hybridseq.loggers",
    "hybridseq.commands.core",
    "hybridseq.commands.completion",
    "hybridseq.commands.configs",
    "hybridseq.commands.train",
    "hybridseq.commands.ablate",
    "hybridseq.commands.analyze",
)
REGISTER_HOOKS = {"blocks": "hybridseq_register_blocks", "solvers": "hybridseq_register_solvers",
                  "datasets": "hybridseq_register_datasets", "tasks": "hybridseq_register_tasks",
                  "sections": "hybridseq_register_sections", "loggers": "hybridseq_register_loggers"}


@dataclass
class PluginInfo:
    name: str
    version: str | None
    builtin: bool
    hooks: list[str] = field(default_factory=list)
    registered: dict[str, list[str]] = field(default_factory=dict)   # kind -> names
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


pm = pluggy.PluginManager("hybridseq")
pm.add_hookspecs(hookspecs)
infos: dict[str, PluginInfo] = {}
_state = {"loaded": False}
_lock = threading.RLock()


def _warn(info: PluginInfo, message: str) -> None:
    info.errors.append(message)
    warnings.warn(f"hybridseq plugin '{info.name}': {message}", PluginWarning, stacklevel=3)


def _check_block(cls) -> None:
    from .blocks.base import Block

    if not (isinstance(cls, type) and issubclass(cls, Block)):
        raise TypeError(f"{cls!r} is not a subclass of hybridseq.Block")
    if not dataclasses.is_dataclass(getattr(cls, "Config", None)):
        raise TypeError(f"{cls.__name__}.Config must be a @dataclass (the block's config schema)")


def _check_task(cls) -> None:
    from .tasks import Task

    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise TypeError(f"{cls!r} is not a subclass of hybridseq.tasks.Task")


def _check_callable(obj) -> None:
    if not callable(obj):
        raise TypeError(f"{obj!r} is not callable")


def _check_section(validate) -> None:
    if validate is not None:
        _check_callable(validate)


CHECKS = {"blocks": _check_block, "tasks": _check_task, "datasets": _check_callable, "sections": _check_section,
          "loggers": _check_callable,
          "solvers": lambda record: None}      # a solver's record checks itself when declared


def _registrar(kind: str, info: PluginInfo):
    table = registry.KINDS[kind]

    def register(name, obj):
        CHECKS[kind](obj)
        try:
            table.add(name, obj, owner=info.name)
        except KeyError as err:
            _warn(info, f"skipped {err.args[0]}")
            return
        info.registered.setdefault(kind, []).append(name)

    if kind == "solvers":
        def register_solver(name, solve, *, adjoint: bool = False, fixed_grid: bool = False, options=None):
            from .solvers import SolverRecord

            register(name, SolverRecord.declare(name, solve, adjoint=adjoint, fixed_grid=fixed_grid, options=options))
        return register_solver
    return register


def _misspelled_hooks(plugin) -> list[str]:
    """Attributes that look like hooks (``hybridseq_*``) but match no hook spec."""
    known = {n for n in dir(hookspecs) if n.startswith("hybridseq_")}
    names = dir(plugin) if not isinstance(plugin, dict) else plugin
    return [n for n in names if n.startswith("hybridseq_") and n not in known and callable(getattr(plugin, n, None))]


def add_plugin(plugin, name: str, *, version: str | None = None, builtin: bool = False) -> PluginInfo:
    """Register ``plugin`` (a module or object with hook implementations) and run its register hooks."""
    load()  # built-in and entry-point plugins first, so a name clash is blamed on the newcomer
    with _lock:
        info = PluginInfo(name=name, version=version, builtin=builtin)
        infos[name] = info
        bad = _misspelled_hooks(plugin)
        if bad:
            _warn(info, f"unknown hook(s) {', '.join(bad)}; valid hooks: {', '.join(REGISTER_HOOKS.values())}, "
                        "hybridseq_register_commands. Plugin skipped")
            return info
        try:
            pm.register(plugin, name=name)
            pm.check_pending()
        except Exception as err:  # pluggy.PluginValidationError and anything a plugin's import raised
            if pm.has_plugin(name):
                pm.unregister(name=name)
            _warn(info, f"rejected: {err}. Plugin skipped")
            return info
        info.hooks = sorted(h.name for h in pm.get_hookcallers(pm.get_plugin(name)) or [])
        for kind, hook in REGISTER_HOOKS.items():
            for impl in getattr(pm.hook, hook).get_hookimpls():
                if impl.plugin_name != name:
                    continue
                try:
                    impl.function(register=_registrar(kind, info))
                except Exception as err:
                    _warn(info, f"{hook} raised {type(err).__name__}: {err}")
        return info


def remove_plugin(name: str) -> None:
    """Unregister plugin ``name`` and every block, solver and dataset it registered."""
    with _lock:
        if pm.has_plugin(name):
            pm.unregister(name=name)
        for table in registry.KINDS.values():
            table.remove_owner(name)
        infos.pop(name, None)


def _selected_entry_points():
    eps = list(md.entry_points(group=ENTRY_POINT_GROUP))
    wanted = os.environ.get(ENV_VAR)
    if wanted is None:
        return eps, []
    names = [n.strip() for n in wanted.split(",") if n.strip()]
    missing = [n for n in names if n not in {ep.name for ep in eps}]
    return [ep for ep in eps if ep.name in names], missing


def load() -> None:
    """Load the built-in and entry-point plugins once (idempotent, thread-safe)."""
    if _state["loaded"]:
        return
    with _lock:
        if _state["loaded"]:
            return
        _state["loaded"] = True
        for module_name in DEFAULT_PLUGINS:
            _load_module(module_name, module_name, __version__, builtin=True)
        eps, missing = _selected_entry_points()
        for name in missing:
            warnings.warn(f"{ENV_VAR} names plugin '{name}', which is not installed", PluginWarning, stacklevel=2)
        for ep in eps:
            version = ep.dist.version if ep.dist is not None else None
            _load_module(ep.name, ep, version, builtin=False)


def _load_module(name: str, target, version, *, builtin: bool) -> None:
    from .notices import slow_notice

    try:
        with slow_notice(f"loading plugin '{name}'"):
            module = importlib.import_module(target) if isinstance(target, str) else target.load()
    except (Exception, SystemExit) as err:  # a plugin that calls sys.exit() at import must not end the CLI
        info = infos[name] = PluginInfo(name=name, version=version, builtin=builtin)
        _warn(info, f"failed to import: {type(err).__name__}: {err}. Plugin skipped")
        return
    add_plugin(module, name, version=version, builtin=builtin)


def call_commands_hook(subparsers) -> None:
    """Let every plugin add CLI sub-commands (recorded in its `PluginInfo`); one that raises is reported
    and skipped."""
    load()
    for impl in pm.hook.hybridseq_register_commands.get_hookimpls():
        info = infos.get(impl.plugin_name) or PluginInfo(impl.plugin_name, None, False)
        before = set(subparsers.choices)
        try:
            impl.function(cli=subparsers)
        except Exception as err:
            _warn(info, f"hybridseq_register_commands raised {type(err).__name__}: {err}")
        added = [name for name in subparsers.choices if name not in before]
        names = info.registered.setdefault("commands", []) if added else []
        names += [name for name in added if name not in names]


registry.set_loader(load)
