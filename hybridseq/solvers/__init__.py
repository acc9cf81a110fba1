"""ODE solvers: the config schema every ODE block embeds, and the module that runs a registered solver.

A solver is ``solve(func, y0, t, **options) -> Tensor[len(t), *y0.shape]`` (torchdiffeq's ``odeint``
signature), registered under a name through ``hybridseq_register_solvers``. Blocks never call a solver
library directly: they hold an `ODESolver`, so any registered solver, a third-party one included, works
in every ODE block, and function evaluations (NFE) are counted per block.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import torch
from torch import Tensor, nn

from .. import registry
from ..errors import ConfigError


DRY_RUN_SPAN = 0.1     # validation runs the solver once on dy/dt = -y over [0, span] ...
DRY_RUN_STEPS = 4      # ... or over this many fixed steps, when that is shorter


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
        """Check the method exists, supports adjoint if asked, and accepts the options (a dry run)."""
        entry = registry.solvers.entry(self.method, f"{path}.method")
        if self.adjoint and not entry.meta.get("adjoint"):
            able = [n for n in registry.solvers.names() if registry.solvers.entry(n).meta.get("adjoint")]
            raise ConfigError(f"{path}.adjoint", f"solver '{self.method}' does not support adjoint; "
                              "use adjoint: false or a solver that does", choices=able)
        for key in ("rtol", "atol", "step_size"):
            value = getattr(self, key)
            if value is not None and not value > 0:
                raise ConfigError(f"{path}.{key}", f"must be > 0, got {value!r}", got=value)
        accepted = getattr(entry.obj, "options", None)     # option names, for solvers that declare them
        if accepted is not None:
            if self.step_size is not None and "step_size" not in accepted:
                fixed = [n for n in registry.solvers.names() if "step_size" in getattr(registry.solvers.get(n), "options", ())]
                raise ConfigError(f"{path}.step_size", f"solver '{self.method}' chooses its own steps and takes no "
                                  "step_size; remove it or use a fixed-step method", choices=fixed)
            for key in self.options:
                if key not in accepted:
                    raise ConfigError(f"{path}.options.{key}", f"unknown option for solver '{self.method}'",
                                      choices=accepted, got=key)
        y0 = torch.ones(1, requires_grad=False)
        span = DRY_RUN_SPAN if self.step_size is None else min(DRY_RUN_SPAN, DRY_RUN_STEPS * self.step_size)
        try:
            out = entry.obj(_Decay(), y0, torch.tensor([0.0, span]), **self.solve_kwargs())
        except Exception as err:
            raise ConfigError(f"{path}.options", f"solver '{self.method}' rejected options "
                              f"{self.solve_kwargs()}: {type(err).__name__}: {err}") from None
        owner = f" (from plugin {entry.owner})" if getattr(entry, "owner", None) else ""
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, 1):
            got = f"shape {list(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
            raise ConfigError(f"{path}.method", f"solver '{self.method}'{owner} returned {got} for 2 output times "
                              "of a state of shape [1]; a solver must return [len(t), *y0.shape]")
        if not bool(torch.isfinite(out).all()):
            raise ConfigError(f"{path}.method", f"solver '{self.method}'{owner} returned non-finite values on "
                              "dy/dt = -y; check its options")


class _Decay(nn.Module):
    def forward(self, t, y):
        return -y


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
        solve = registry.solvers.get(self.cfg.method, "solver.method")
        kwargs = self.cfg.solve_kwargs()
        if self.cfg.adjoint:
            kwargs["adjoint"] = True
        return solve(_Counted(func, self), y0, t, **kwargs)


__all__ = ["SolverConfig", "ODESolver"]
