"""Explicit Runge–Kutta schemes as data (Butcher tableaux) and the one step that reads them.

A tableau ``(c, a, b)`` defines s stages k_i = f(t + c_i h, x + h Σ_{j<i} a_ij k_j) and the step
x + h Σ_i b_i k_i (Butcher, "Numerical Methods for Ordinary Differential Equations", 2016). The
`ode_transformer` layers and the analysis flows use these tables, so each scheme is written once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import Tensor


@dataclass(frozen=True)
class Tableau:
    """An explicit scheme: nodes ``c`` [s], strictly lower-triangular ``a`` [s][s-1 or less], weights ``b`` [s]."""

    name: str
    order: int
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]   # a[i] holds a_i0 … a_i(i-1)
    b: tuple[float, ...]

    @property
    def stages(self) -> int:
        return len(self.b)


EULER = Tableau("euler", 1, (0.0,), ((),), (1.0,))
HEUN = Tableau("rk2", 2, (0.0, 1.0), ((), (1.0,)), (0.5, 0.5))           # Heun's (trapezoidal) RK2
RK3 = Tableau("rk3", 3, (0.0, 0.5, 1.0), ((), (0.5,), (-1.0, 2.0)), (1 / 6, 2 / 3, 1 / 6))   # Kutta's third order
RK4 = Tableau("rk4", 4, (0.0, 0.5, 0.5, 1.0), ((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
              (1 / 6, 1 / 3, 1 / 3, 1 / 6))                               # the classical fourth order

TABLEAUX = {t.name: t for t in (EULER, HEUN, RK3, RK4)}


def stages(f: Callable[[float, Tensor], Tensor], t: float, x: Tensor, h: float, tableau: Tableau) -> list[Tensor]:
    """The stage derivatives k_1 … k_s of one step of size ``h`` from (t, x)."""
    ks: list[Tensor] = []
    for c, row in zip(tableau.c, tableau.a):
        y = x
        for a, k in zip(row, ks):
            if a:
                y = y + (h * a) * k
        ks.append(f(t + c * h, y))
    return ks


def combine(x: Tensor, ks: list[Tensor], h: float, weights) -> Tensor:
    """x + h Σ_i w_i k_i (``weights`` floats or tensors)."""
    out = x
    for w, k in zip(weights, ks):
        out = out + (h * w) * k
    return out


def step(f: Callable[[float, Tensor], Tensor], t: float, x: Tensor, h: float, tableau: Tableau) -> Tensor:
    """One explicit Runge–Kutta step of dx/dt = f(t, x): x(t) -> x(t + h)."""
    return combine(x, stages(f, t, x, h, tableau), h, tableau.b)
