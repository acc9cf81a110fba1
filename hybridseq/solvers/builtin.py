"""Built-in solvers: every torchdiffeq method (Chen et al., "Neural Ordinary Differential Equations", 2018),
each with adjoint support. A solve function lists the option names its method accepts in ``solve.options``.
"""
from __future__ import annotations

import inspect

from ..hookspecs import hookimpl

_NOT_OPTIONS = {"self", "func", "y0", "rtol", "atol", "kwargs", "unused_kwargs", "dtype"}


def _valid_options(method: str) -> set[str]:
    from torchdiffeq._impl.odeint import SOLVERS

    params = set()
    for klass in inspect.getmro(SOLVERS[method]):
        if "__init__" in vars(klass):
            params |= set(inspect.signature(klass.__init__).parameters)
    return params - _NOT_OPTIONS


def _make(method: str):
    def solve(func, y0, t, *, rtol=1e-3, atol=1e-4, adjoint=False, **options):
        import torchdiffeq

        unknown = set(options) - _valid_options(method)
        if unknown:
            raise TypeError(f"unknown option(s) {sorted(unknown)} for torchdiffeq method '{method}'; "
                            f"valid: {sorted(_valid_options(method))}")
        if adjoint:
            return torchdiffeq.odeint_adjoint(func, y0, t, rtol=rtol, atol=atol, method=method, options=options,
                                              adjoint_params=tuple(func.parameters()))
        return torchdiffeq.odeint(func, y0, t, rtol=rtol, atol=atol, method=method, options=options)

    solve.options = frozenset(_valid_options(method))   # option names SolverConfig.validate checks
    solve.__name__ = f"torchdiffeq_{method}"
    solve.__doc__ = f"torchdiffeq's '{method}' method."
    return solve


@hookimpl
def hybridseq_register_solvers(register):
    from torchdiffeq._impl.odeint import SOLVERS

    for method in SOLVERS:
        register(method, _make(method), adjoint=True)
