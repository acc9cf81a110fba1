"""Autoregressive ODE-RNN query head: the ODE-RNN of Rubanova, Chen & Duvenaud ("Latent ODEs for
Irregularly-Sampled Time Series", NeurIPS 2019) as that paper's autoregressive baseline, which predicts each
value from the latest state before it.

Past each series' last observation it walks the query times in order, from the state there (through a
LayerNorm and a linear map): the state follows dh/dt = f(h) (an MLP field, the configured solver) over the
gap to the next query, the read-out gives the prediction ŷ_q, and a GRU cell takes in a value before the
next gap, as the ODE-RNN takes in an observation:

    h_q⁻ = ODESolve(f, h_{q-1}, t_{q-1} → t_q),   ŷ_q = W h_q⁻ + b,   h_q = GRU([v_q, m_q], h_q⁻)

with t_0, h_0 the last observation's time and state. At prediction (the output ``x``) v_q = ŷ_q with m_q = 1:
the model feeds its own predictions back. With ``teacher_forcing: true`` (how an autoregressive model is
trained: the authors' ODE-RNN is scored one step ahead on the true series) the loss is the one-step-ahead
error given the true previous values, v_q = y_q with their observed mask m_q (a query with no observed
channel takes no update, as in the encoders): ``Seq.predictive`` scores the targets with that pass.
``teacher_forcing: false`` trains the rollout's own error instead (no predictive; the task's MSE of ``x``).

A query inside the observed window (interpolation) is predicted from the state of the last observation at
or before it, carried over the gap by the same flow (the first observation's, carried back, for a query
before it): there the latest information is an observation, in either mode. The head walks each series'
queries in time order and returns them in the order given; padded queries repeat the last time.

Deliberate differences from the paper's model: the flow and cell are the head's own, seeded by the
encoder's states, so any encoder can precede it (the paper's one ODE-RNN reads the window and continues);
the prediction at t_q reads the state carried to t_q, where the authors' code decodes the state after the
previous update (its one-step prediction does not see the gap); the read-out is linear, as in `extrapolate`
and `latent_ode`, where theirs is Linear–tanh–Linear; the one-step loss covers the query targets the task
scores. The teacher-forced pass runs in float32 outside autocast, as the task's losses do.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ...seq import Seq
from ...solvers import SolverConfig
from ..base import ODEBlock
from ..encoders.common import evolve
from ..layers import MLPField, masked_pool
from .query import QueryHead, _times


class Autoregressive(ODEBlock, QueryHead):
    @dataclass
    class Config(QueryHead.Config):
        hidden_ratio: float = 2.0    # hidden width of the vector field, as a multiple of d_model
        teacher_forcing: bool = True     # train one step ahead on the true values (the paper's training)
        solver: SolverConfig = field(default_factory=lambda: SolverConfig(method="rk4"))   # one step per gap

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        d, c = cfg.d_model, cfg.channels
        self.norm = nn.LayerNorm(d)
        self.init = nn.Linear(d, d)
        self.func = MLPField(d, int(cfg.hidden_ratio * d))
        self.cell = nn.GRUCell(2 * c, d)
        self.readout = nn.Linear(d, c)

    def forward(self, seq: Seq) -> Seq:
        valid = seq.valid()                                                  # [B, L]
        given = self.queries(seq)                                            # [B, Q]
        order = given.argsort(dim=1, stable=True)                            # [B, Q] walked in time order
        tq = given.gather(1, order)                                          # [B, Q] sorted
        t_last = masked_pool(_times(seq)[..., None], valid, "last").to(tq.dtype)   # [B, 1]
        h0 = self.init(self.norm(masked_pool(seq.x, valid, "last")))         # [B, D]
        gaps = torch.diff(tq.clamp_min(t_last), dim=1, prepend=t_last)       # [B, Q]: 0 inside the window
        inside = tq < t_last                                                 # [B, Q]
        within = self.within(seq, valid, tq) if inside.any() else None       # [B, Q, C]
        x = self.rollout(h0, gaps, inside)
        if within is not None:
            x = torch.where(inside[..., None], within, x)
        predictive = TeacherForced(self, h0, gaps, inside, within, order) if self.cfg.teacher_forcing else None
        x = torch.empty_like(x).scatter_(1, order[..., None].expand_as(x), x)   # back in the given order
        return Seq(x=x, t=given, predictive=predictive)                      # [B, Q, channels]

    def within(self, seq: Seq, valid, tq):
        """[B, Q, C] each query read from the state of the last observation at or before it (the first
        one for an earlier query), carried over the gap between them."""
        b, n, d = seq.x.shape
        t = torch.where(valid, _times(seq), torch.inf).to(tq.dtype)          # [B, L] padding sorts last
        anchor = (torch.searchsorted(t, tq.contiguous(), right=True) - 1).clamp_min(0)   # [B, Q]
        start = self.init(self.norm(seq.x.gather(1, anchor[..., None].expand(-1, -1, d))))   # [B, Q, D]
        h = evolve(self.solver, self.func, start.flatten(0, 1), (tq - t.gather(1, anchor)).flatten())
        return self.readout(h).view(b, tq.shape[1], -1)

    def rollout(self, h: Tensor, gaps: Tensor, skip: Tensor, values: Tensor | None = None,
                observed: Tensor | None = None) -> Tensor:
        """Predictions [B, Q, C] from state h [B, D] over gaps [B, Q]; after each query not in skip [B, Q]
        the cell takes in values [B, Q, C] where observed [B, Q, C] (teacher forcing), else the model's own
        prediction."""
        preds = []
        moves = (gaps != 0).any(0).tolist()      # [Q]; a gap of 0 everywhere is skipped: adaptive solvers fail on it
        takes = (~skip).any(0).tolist()          # [Q]; a query skipped in every series updates nothing
        for q in range(gaps.shape[1]):
            if moves[q]:
                h = evolve(self.solver, self.func, h, gaps[:, q])            # [B, D]
            y = self.readout(h)                                              # [B, C]
            preds.append(y)
            if q + 1 == gaps.shape[1] or not takes[q]:
                continue
            if values is None:
                v, m = y, torch.ones_like(y, dtype=torch.bool)
            else:
                v, m = values[:, q] * observed[:, q], observed[:, q]         # [B, C]
            seen = self.cell(torch.cat([v, m.to(v.dtype)], dim=-1), h)
            h = torch.where((m.any(-1) & ~skip[:, q])[:, None], seen, h)
        return torch.stack(preds, dim=1)                                     # [B, Q, C]


@dataclass
class TeacherForced:
    """The autoregressive head's ``Seq.predictive``: scores targets by the one-step-ahead squared error of
    the pass that takes in the true values (the mean over observed target entries, as the query tasks'
    MSE)."""

    head: Autoregressive
    h0: Tensor                   # [B, D] the state at the last observation
    gaps: Tensor                 # [B, Q], between the sorted query times
    inside: Tensor               # [B, Q] sorted queries inside the observed window
    within: Tensor | None        # [B, Q, C] their predictions (None: no query inside)
    order: Tensor                # [B, Q] the sorted order of the given query times

    def score(self, values: Tensor, mask: Tensor | None) -> dict:
        idx = self.order[..., None].expand_as(values)
        values = values.float().gather(1, idx)                                     # [B, Q, C] in time order
        observed = torch.ones_like(values, dtype=torch.bool) if mask is None else mask.bool().gather(1, idx)
        with torch.autocast(values.device.type, enabled=False):
            pred = self.head.rollout(self.h0.float(), self.gaps.float(), self.inside, values, observed)
        if self.within is not None:
            pred = torch.where(self.inside[..., None], self.within.float(), pred)
        m = observed.to(values.dtype)
        return {"loss": ((pred - values).square() * m).sum() / m.sum().clamp_min(1.0)}
