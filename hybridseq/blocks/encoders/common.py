"""Shared pieces of the ODE encoders: clean inputs, time reversal, per-interval solves, the jump ODE.

Every ODE encoder integrates the whole batch at once in normalised interval time: an interval of length
Δt_b in series b becomes s ∈ [0, 1] with dh/ds = Δt_b · f(h), so series with different observation
times share one solve and padded intervals (Δt = 0) leave the state unchanged.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ...seq import IrregularBatch

UNIT = (0.0, 1.0)                     # the normalised interval s ∈ [0, 1]


def clean_inputs(batch: IrregularBatch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(values, observed, times, valid) with nothing left that padding or hidden channels could change.

    values [B, N, C]: 0 where unobserved or padded; observed [B, N, C] bool; times [B, N]: padded steps
    repeat the last valid time; valid [B, N] bool.
    """
    valid = batch.valid                                                     # [B, N]
    observed, values = batch.observed, batch.observed_values()              # [B, N, C] each
    last = (batch.lengths - 1).clamp_min(0)[:, None]                        # [B, 1]
    times = torch.where(valid, batch.times, batch.times.gather(1, last))    # [B, N]
    return values, observed, times, valid


def flip_valid(x: Tensor, lengths: Tensor) -> Tensor:
    """x [B, N, ...] with the first ``lengths[b]`` entries of each row in reverse order, padding in place
    (its own inverse)."""
    pos = torch.arange(x.shape[1], device=x.device)[None, :]                # [1, N]
    idx = torch.where(pos < lengths[:, None], lengths[:, None] - 1 - pos, pos)   # [B, N]
    idx = idx.view(*idx.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, idx)


def reversed_in_time(batch: IrregularBatch) -> IrregularBatch:
    """The batch read from each series' last observation back to its first: valid prefixes reversed,
    times negated (so still increasing). An encoder run over it runs backwards in time; `flip_valid` of
    its outputs puts them back in time order."""
    n = batch.lengths
    return IrregularBatch(values=flip_valid(batch.values, n), times=-flip_valid(batch.times, n),
                          mask=flip_valid(batch.mask, n), lengths=n, query_times=batch.query_times)


def intervals(times: Tensor) -> Tensor:
    """[B, N] the interval since the previous time point (0 at the first one and over padding)."""
    return torch.diff(times, dim=1, prepend=times[:, :1])


def unit_interval(like: Tensor) -> Tensor:
    return torch.tensor(UNIT, dtype=like.dtype, device=like.device)


class Scaled(nn.Module):
    """The field ``dt · f(t, h)`` over s ∈ [0, 1]; ``dt`` [B, 1] is the interval length of each series."""

    def __init__(self, field: nn.Module, dt: Tensor):
        super().__init__()
        self.field = field
        self.dt = dt

    def forward(self, s: Tensor, h: Tensor) -> Tensor:
        return self.dt * self.field(s, h)


def evolve(solver, field: nn.Module, h: Tensor, dt: Tensor) -> Tensor:
    """h [B, H] carried over intervals of lengths dt [B] by one batched solve over s ∈ [0, 1]."""
    return solver(Scaled(field, dt[:, None]), h, unit_interval(h))[-1]


class JumpODE(nn.Module):
    """Runs a state through the observations: ODE flow over each gap, then a jump at each observation.

    ``forward(batch, jump)`` returns the states after each observation [B, N, H]; ``jump(h, x, m)`` maps
    the state [B, H], values [B, C] and observed mask [B, C] to the updated state. A time point where no
    channel was observed takes no jump: the state there is the flow's (as in Rubanova et al.'s and De
    Brouwer et al.'s code).
    """

    def __init__(self, field: nn.Module, solver: nn.Module, hidden: int):
        super().__init__()
        self.field, self.solver, self.hidden = field, solver, hidden

    def forward(self, batch: IrregularBatch, jump) -> Tensor:
        values, observed, times, valid = clean_inputs(batch)
        update = observed.any(-1)                                           # [B, N]: some channel seen
        dt = intervals(times)                                               # [B, N]
        h = values.new_zeros(values.shape[0], self.hidden)                  # [B, H]
        states = []
        for i in range(values.shape[1]):                                    # over time steps, not series
            if i > 0:
                h = evolve(self.solver, self.field, h, dt[:, i])
            h = torch.where(update[:, i, None], jump(h, values[:, i], observed[:, i]), h)
            states.append(h)
        return torch.stack(states, dim=1)                                   # [B, N, H]
