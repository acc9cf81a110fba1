"""torchode's ODE solvers for hybridseq (Lienen & Günnemann, "torchode: A Parallel ODE Solver for PyTorch",
2022).

Registers ``torchode_dopri5``, ``torchode_tsit5``, ``torchode_heun`` and ``torchode_euler``; any ODE block
takes them as ``solver: {method: torchode_tsit5}``. The whole state is solved as one torchode problem
(a batch of one), so the vector field sees a scalar time and the state's own shape, as with torchdiffeq.
"""
from __future__ import annotations

import hybridseq

METHODS = ("dopri5", "tsit5", "heun", "euler")
ADAPTIVE = {"dopri5", "tsit5", "heun"}     # methods with an embedded error estimate
OPTIONS = {"step_size": float, "first_step": float, "max_steps": int, "dt_min": float, "dt_max": float}


def _method_class(method: str):
    import torchode

    return {"dopri5": torchode.Dopri5, "tsit5": torchode.Tsit5, "heun": torchode.Heun,
            "euler": torchode.Euler}[method]


def _make(method: str):
    def solve(func, y0, t, *, rtol=1e-3, atol=1e-4, step_size=None, first_step=None, max_steps=None,
              dt_min=None, dt_max=None, **unknown):
        if unknown:
            raise TypeError(f"unknown option(s) {sorted(unknown)} for solver 'torchode_{method}'; "
                            f"valid: rtol, atol, {', '.join(OPTIONS)}")
        import torchode

        shape = y0.shape

        def vector_field(s, y):                      # s: [1], y: [1, numel] -> [1, numel]
            return func(s[0], y.reshape(shape)).reshape(1, -1)

        term = torchode.ODETerm(vector_field, with_stats=False)
        fixed = step_size is not None or method not in ADAPTIVE
        if fixed:
            if step_size is None:                    # one step per (smallest) gap between output times
                gaps = t.diff().abs()
                step_size = gaps[gaps > 0].min().item() if bool((gaps > 0).any()) else 1.0
            controller = torchode.FixedStepController()
            direction = 1.0 if len(t) < 2 or t[-1] >= t[0] else -1.0
            first_step = direction * step_size
        else:
            controller = torchode.IntegralController(atol=atol, rtol=rtol, term=term, dt_min=dt_min,
                                                     dt_max=dt_max)
        dt0 = None if first_step is None else t.new_tensor([first_step])
        solver = torchode.AutoDiffAdjoint(_method_class(method)(term=term), controller, max_steps=max_steps)
        problem = torchode.InitialValueProblem(y0.reshape(1, -1), t_eval=t[None, :])   # [1, numel], [1, T]
        solution = solver.solve(problem, dt0=dt0)
        status = int(solution.status[0])
        if status != torchode.Status.SUCCESS.value:
            raise RuntimeError(f"torchode {method} stopped early: {torchode.Status(status).name}; raise "
                               "max_steps or loosen rtol/atol")
        return solution.ys[0].reshape(len(t), *shape)   # [T, numel] -> [T, *y0.shape]

    solve.__name__ = f"torchode_{method}"
    solve.__doc__ = f"torchode's {method} method (no adjoint: gradients by backpropagation through the steps)."
    return solve


@hybridseq.hookimpl
def hybridseq_register_solvers(register):
    for method in METHODS:
        register(f"torchode_{method}", _make(method), adjoint=False, fixed_grid=method not in ADAPTIVE,
                 options=OPTIONS)
