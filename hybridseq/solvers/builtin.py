"""Built-in solvers: every torchdiffeq method (Chen et al., "Neural Ordinary Differential Equations", 2018),
each with adjoint support, registered with the options its method accepts (read once, at registration).
"""
from __future__ import annotations

import inspect

from ..hookspecs import hookimpl
from . import ANY

_NOT_OPTIONS = {"self", "func", "y0", "rtol", "atol", "kwargs", "unused_kwargs", "dtype"}
TESTED = ((0, 2, 3), (0, 3, 0))       # torchdiffeq versions [from, before) whose method table we read


def torchdiffeq_methods() -> dict[str, type]:
    """torchdiffeq's method name -> solver class. torchdiffeq has no public table, so this is the one place
    that reads its private ``_impl.odeint.SOLVERS``, and only for the versions in `TESTED`."""
    import torchdiffeq

    version = tuple(int(p) for p in torchdiffeq.__version__.split(".")[:3] if p.isdigit())
    if not TESTED[0] <= version < TESTED[1]:
        raise ImportError(f"torchdiffeq {torchdiffeq.__version__} is not a tested version (>= 0.2.3, < 0.3); "
                          "install one with: pip install 'torchdiffeq>=0.2.3,<0.3'")
    from torchdiffeq._impl.odeint import SOLVERS

    return dict(SOLVERS)


def _option_kind(default) -> type:
    """The values an option takes, read from its default."""
    if isinstance(default, bool):
        return bool
    if isinstance(default, (int, float)):
        return float
    return str if isinstance(default, str) else ANY


def method_options(klass: type) -> dict[str, type]:
    """Option name -> value type, from the constructor signatures along the solver class's MRO."""
    options = {}
    for base in inspect.getmro(klass):
        if "__init__" in vars(base):
            for name, param in inspect.signature(base.__init__).parameters.items():
                if name not in _NOT_OPTIONS:
                    options.setdefault(name, _option_kind(param.default))
    return options


def _make(method: str, accepted: dict[str, type]):
    def solve(func, y0, t, *, rtol=1e-3, atol=1e-4, adjoint=False, **options):
        import torchdiffeq

        unknown = set(options) - set(accepted)
        if unknown:
            raise TypeError(f"unknown option(s) {sorted(unknown)} for torchdiffeq method '{method}'; "
                            f"valid: {sorted(accepted)}")
        if adjoint:
            return torchdiffeq.odeint_adjoint(func, y0, t, rtol=rtol, atol=atol, method=method, options=options,
                                              adjoint_params=tuple(func.parameters()))
        return torchdiffeq.odeint(func, y0, t, rtol=rtol, atol=atol, method=method, options=options)

    solve.__name__ = f"torchdiffeq_{method}"
    solve.__doc__ = f"torchdiffeq's '{method}' method."
    return solve


@hookimpl
def hybridseq_register_solvers(register):
    for method, klass in torchdiffeq_methods().items():
        options = method_options(klass)
        register(method, _make(method, options), adjoint=True, fixed_grid="step_size" in options, options=options)
