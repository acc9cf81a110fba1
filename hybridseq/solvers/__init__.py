"""ODE solvers: the record a registered solver declares, the config schema every ODE block embeds, and
the module that runs a registered solver.

A solver is ``solve(func, y0, t, **options) -> Tensor[len(t), *y0.shape]`` (torchdiffeq's ``odeint``
signature), registered under a name through ``hybridseq_register_solvers`` with its capabilities: a
`SolverRecord`. Validation reads the record and never runs the solver. Blocks never call a solver
library directly: they hold an `ODESolver`, so any registered solver, a third-party one included, works
in every ODE block, and function evaluations (NFE) are counted per block.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional

import torch
from torch import Tensor, nn

from .. import registry
from ..errors import ConfigError

ANY = object      # an option whose values the solver checks itself


@dataclass(frozen=True)
class SolverRecord:
    """A registered solver and what it declares it can do.

    ``adjoint``: ``solve`` accepts ``adjoint=True`` and then computes gradients by adjoint sensitivities.
    ``fixed_grid``: it steps on a grid (one step per output interval, or ``step_size``) instead of
    choosing its steps. ``options``: option name -> the type of its values (``float`` for any real number,
    ``int``, ``bool``, ``str``, or `ANY`), or None when the solver does not declare its options.
    """

    name: str
    solve: Callable
    adjoint: bool = False
    fixed_grid: bool = False
    options: Optional[Mapping[str, type]] = None

    @classmethod
    def declare(cls, name: str, solve: Callable, *, adjoint: bool = False, fixed_grid: bool = False,
                options=None) -> "SolverRecord":
        """A record from the ``register`` callback's arguments; ``options`` may be a list of names."""
        if not callable(solve):
            raise TypeError(f"solver '{name}' must be callable, got {solve!r}")
        if options is not None and not isinstance(options, Mapping):
            options = {key: ANY for key in options}
        return cls(name, solve, bool(adjoint), bool(fixed_grid), None if options is None else dict(options))

    def __call__(self, func, y0: Tensor, t: Tensor, **options) -> Tensor:
        """Solve, as the registered function does: the record stands for its solver."""
        return self.solve(func, y0, t, **options)

    def takes(self, option: str) -> bool:
        """Whether the solver declares ``option`` (False when it declares no options)."""
        return self.options is not None and option in self.options


def _fits(value, kind: type) -> bool:
    if kind is ANY:
        return True
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind)


def _able(test) -> list[str]:
    return [n for n in registry.solvers.names() if test(registry.solvers.get(n))]


@dataclass
class SolverConfig:
    method: str = "dopri5"            # any registered solver name (`hybridseq plugins` lists them)
    rtol: float = 1.0e-3              # relative tolerance (adaptive methods)
    atol: float = 1.0e-4              # absolute tolerance (adaptive methods)
    step_size: Optional[float] = None  # fixed-grid methods: step; None = one step per output time
    adjoint: bool = False             # gradients by adjoint sensitivities (O(1) memory in steps)
    options: Dict[str, Any] = field(default_factory=dict)  # further solver-specific options

    def solve_kwargs(self) -> dict:
        kwargs = {"rtol": self.rtol, "atol": self.atol, **self.options}
        if self.step_size is not None:
            kwargs["step_size"] = self.step_size
        return kwargs

    def validate(self, path: str) -> None:
        """Check the settings against what the method's record declares (the solver is not run)."""
        record = registry.solvers.get(self.method, f"{path}.method")
        if self.adjoint and not record.adjoint:
            raise ConfigError(f"{path}.adjoint", f"solver '{self.method}' does not support adjoint; "
                              "use adjoint: false or a solver that does", choices=_able(lambda r: r.adjoint))
        for key in ("rtol", "atol", "step_size"):
            value = getattr(self, key)
            if value is not None and not value > 0:
                raise ConfigError(f"{path}.{key}", f"must be > 0, got {value!r}", got=value)
        if record.options is None:
            return
        if self.step_size is not None and not record.takes("step_size"):
            raise ConfigError(f"{path}.step_size", f"solver '{self.method}' chooses its own steps and takes no "
                              "step_size; remove it or use a fixed-step method",
                              choices=_able(lambda r: r.takes("step_size")))
        for key, value in self.options.items():
            if key not in record.options:
                raise ConfigError(f"{path}.options.{key}", f"unknown option for solver '{self.method}'",
                                  choices=record.options, got=key)
            kind = record.options[key]
            if not _fits(value, kind):
                what = "a number" if kind is float else kind.__name__
                raise ConfigError(f"{path}.options.{key}", f"solver '{self.method}' rejected options "
                                  f"{key}={value!r}: expected {what}", got=value)


class _Counted(nn.Module):
    """Wraps a vector field to count its evaluations."""

    def __init__(self, func: nn.Module, owner: "ODESolver"):
        super().__init__()
        self.func = func
        self.owner = [owner]  # a list so the owner is not registered as a submodule (no cycle)

    def forward(self, t, y):
        owner = self.owner[0]
        if torch.compiler.is_compiling():
            owner.count += 1              # in place on a tensor: compiled code does not specialise on it
        else:
            owner.calls += 1              # eager: a Python int, no tensor op per evaluation
        return self.func(t, y)


class ODESolver(nn.Module):
    """Runs the configured solver: ``solver(func, y0, t) -> [len(t), *y0.shape]``.

    ``nfe`` counts vector-field evaluations since the last `reset` (the model resets it at the start of
    each forward, so it covers that forward and its backward). Eager evaluations count in a Python int;
    compiled ones in a tensor buffer (not in the state_dict), which torch.compile updates in place instead
    of recompiling for every new value of an int.
    """

    def __init__(self, cfg: SolverConfig):
        super().__init__()
        self.cfg = cfg
        self.calls = 0
        self.register_buffer("count", torch.zeros((), dtype=torch.long), persistent=False)

    @property
    def nfe(self) -> int:
        return self.calls + int(self.count)

    def reset(self) -> None:
        self.calls = 0
        self.count.zero_()

    def forward(self, func: nn.Module, y0: Tensor, t: Tensor) -> Tensor:
        record = registry.solvers.get(self.cfg.method, "solver.method")
        kwargs = self.cfg.solve_kwargs()
        if self.cfg.adjoint:
            kwargs["adjoint"] = True
        out = record.solve(_Counted(func, self), y0, t, **kwargs)
        if not isinstance(out, Tensor) or out.shape != (t.shape[0], *y0.shape):   # a plugin's contract, checked
            owner = registry.solvers.entry(self.cfg.method).owner
            got = f"shape {list(out.shape)}" if isinstance(out, Tensor) else type(out).__name__
            raise ConfigError("solver.method", f"solver '{self.cfg.method}' (plugin {owner}) returned {got} for "
                              f"{t.shape[0]} times and a state of shape {list(y0.shape)}; a solver must return "
                              "[len(t), *y0.shape]")
        return out


__all__ = ["ANY", "ODESolver", "SolverConfig", "SolverRecord"]
