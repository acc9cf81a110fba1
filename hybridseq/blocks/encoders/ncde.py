"""Neural CDE encoder (Kidger, Morrill, Foster & Lyons, "Neural Controlled Differential Equations for
Irregular Time Series", NeurIPS 2020).

The control path X interpolates, per series, the knots (t, x̃, c) at the observation times: time itself,
the values with each channel carried forward from its last observation, and each channel's cumulative
observation count (the observational intensity). The state solves dz = f(z) dX, i.e. dz/dt = f(z) dX/dt,
with f an MLP giving a [hidden, 1 + 2C] matrix. Interpolations (``interpolation``): ``cubic`` (natural
cubic spline), ``hermite`` (cubic Hermite with backward differences: each knot's slope is the previous
interval's, so the path up to a knot never looks at later observations) or ``linear``. Each interval is
solved in normalised time σ ∈ [0, 1] where dX/dσ is a quadratic in σ, the whole batch at once; padded
intervals have dX/dσ = 0. Outputs are projections of z at the observation times.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from omegaconf import MISSING
from torch import Tensor, nn

from ...seq import IrregularBatch, Seq
from ...solvers import SolverConfig
from ..base import ODEBlock, choice
from .common import clean_inputs, unit_interval

MIN_GAP = 1e-6                       # floor on interval lengths (repeated time stamps)


def control_knots(batch: IrregularBatch) -> tuple[Tensor, Tensor]:
    """Knots X [B, N, 1 + 2C] = (t, forward-filled values, cumulative counts), and valid [B, N]."""
    values, observed, times, valid = clean_inputs(batch)
    n = values.shape[1]
    steps = torch.arange(n, device=values.device)[None, :, None].expand_as(observed)     # [B, N, C]
    last_seen = torch.where(observed, steps, torch.full_like(steps, -1)).cummax(dim=1).values
    filled = values.gather(1, last_seen.clamp_min(0))
    filled = torch.where(last_seen >= 0, filled, torch.zeros_like(filled))             # 0 before the first one
    counts = observed.to(values.dtype).cumsum(dim=1)
    return torch.cat([times[..., None], filled, counts], dim=-1), valid


def _natural_second_derivatives(x: Tensor, dt: Tensor, pieces: Tensor) -> Tensor:
    """Second derivatives M [B, N, P] of the natural cubic spline through knots x [B, N, P].

    dt [B, N-1] interval lengths, pieces [B, N-1] valid intervals; M = 0 at the first and last valid
    knot and beyond. Tridiagonal system solved by the Thomas algorithm, vectorised over series/channels.
    """
    b, n, p = x.shape
    slope = (x[:, 1:] - x[:, :-1]) / dt[..., None]                           # [B, N-1, P]
    interior = pieces[:, :-1] & pieces[:, 1:]                                # [B, N-2]: knot i+1 is interior
    zero = x.new_zeros(b, 1)
    lower = torch.cat([zero, torch.where(interior, dt[:, :-1], 0.0), zero], 1)            # [B, N]
    diag = torch.cat([zero + 1, torch.where(interior, 2 * (dt[:, :-1] + dt[:, 1:]), 1.0), zero + 1], 1)
    upper = torch.cat([zero, torch.where(interior, dt[:, 1:], 0.0), zero], 1)
    rhs = torch.cat([x.new_zeros(b, 1, p), torch.where(interior[..., None], 6 * (slope[:, 1:] - slope[:, :-1]), 0.0),
                     x.new_zeros(b, 1, p)], 1)                              # [B, N, P]
    c_prime, d_prime = [upper[:, 0] / diag[:, 0]], [rhs[:, 0] / diag[:, :1]]
    for i in range(1, n):                                                    # forward sweep
        denom = diag[:, i] - lower[:, i] * c_prime[-1]
        c_prime.append(upper[:, i] / denom)
        d_prime.append((rhs[:, i] - lower[:, i, None] * d_prime[-1]) / denom[:, None])
    m = [d_prime[-1]]
    for i in range(n - 2, -1, -1):                                           # back substitution
        m.append(d_prime[i] - c_prime[i][:, None] * m[-1])
    return torch.stack(m[::-1], dim=1)


def path_derivative_coeffs(knots: Tensor, valid: Tensor, kind: str) -> Tensor:
    """Per interval i, coefficients [B, N-1, P, 3] of dX/dσ = a0 + a1 σ + a2 σ² on σ ∈ [0, 1]."""
    pieces = valid[:, 1:]                                                    # [B, N-1]: interval i ends at a valid knot
    dt = (knots[:, 1:, 0] - knots[:, :-1, 0]).clamp_min(MIN_GAP)            # [B, N-1]
    dx = knots[:, 1:] - knots[:, :-1]                                        # [B, N-1, P]: X(σ=1) - X(σ=0)
    zero = torch.zeros_like(dx)
    if kind == "linear":
        coeffs = torch.stack([dx, zero, zero], -1)
    elif kind == "hermite":
        start = torch.cat([dx[:, :1], dx[:, :-1] / dt[:, :-1, None] * dt[:, 1:, None]], 1)   # Δ_i · slope_{i-1}
        coeffs = torch.stack([start, 4 * (dx - start), 3 * (start - dx)], -1)
    else:                                                                    # natural cubic spline in real time
        m = _natural_second_derivatives(knots, dt, pieces)                   # [B, N, P]
        h = dt[..., None]
        beta = dx / h - h * (2 * m[:, :-1] + m[:, 1:]) / 6                   # dX/dt at the interval start
        coeffs = torch.stack([h * beta, h * h * m[:, :-1], h * h * (m[:, 1:] - m[:, :-1]) / 2], -1)
    return coeffs * pieces[..., None, None].to(coeffs.dtype)


class CDEField(nn.Module):
    """f(z) [B, H, P]: an MLP whose output is read as a matrix, bounded by tanh."""

    def __init__(self, hidden: int, channels: int, width: int):
        super().__init__()
        self.hidden, self.channels = hidden, channels
        self.net = nn.Sequential(nn.Linear(hidden, width), nn.Softplus(), nn.Linear(width, hidden * channels),
                                 nn.Tanh())

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(*z.shape[:-1], self.hidden, self.channels)  # [B, H*P] -> [B, H, P]


class _Controlled(nn.Module):
    """dz/dσ = f(z) · dX/dσ on one interval, the polynomial coefficients [B, P, 3] fixed."""

    def __init__(self, field: nn.Module, coeffs: Tensor):
        super().__init__()
        self.field, self.coeffs = field, coeffs

    def forward(self, s: Tensor, z: Tensor) -> Tensor:
        powers = torch.stack([torch.ones_like(s), s, s * s])                # [3]
        dx = self.coeffs @ powers.to(z.dtype)                                # [B, P]
        return (self.field(z) @ dx[..., None]).squeeze(-1)                   # [B, H, P] @ [B, P, 1] -> [B, H]


class NCDEEncoder(ODEBlock):
    @dataclass
    class Config:
        d_in: int = MISSING              # input channels (injected)
        d_model: int = MISSING           # output width (injected)
        hidden: int = 32                 # CDE state size
        field_width: int = 64            # width of the vector field's hidden layer
        interpolation: str = choice("hermite", "cubic", "linear")
        solver: SolverConfig = field(default_factory=lambda: SolverConfig(method="rk4"))

    accepts = "irregular"

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        channels = 1 + 2 * cfg.d_in
        self.initial = nn.Linear(channels, cfg.hidden)
        self.field = CDEField(cfg.hidden, channels, cfg.field_width)
        self.out = nn.Linear(cfg.hidden, cfg.d_model)

    def states(self, batch: IrregularBatch) -> Tensor:
        """z at each observation time [B, N, H] (held constant over padding)."""
        knots, valid = control_knots(batch)                                  # [B, N, P]
        coeffs = path_derivative_coeffs(knots, valid, self.cfg.interpolation)   # [B, N-1, P, 3]
        z = self.initial(knots[:, 0])                                        # [B, H]
        states = [z]
        for i in range(coeffs.shape[1]):                                     # over intervals, not series
            z = self.solver(_Controlled(self.field, coeffs[:, i]), z, unit_interval(z))[-1]
            states.append(z)
        return torch.stack(states, dim=1)

    def forward(self, batch: IrregularBatch) -> Seq:
        return batch.seq(self.out(self.states(batch)))                      # [B, N, D]
