"""Task heads that predict values at query times ``seq.query_t``: x [B, Q, channels].

``interpolate``: multi-time attention in the style of mTAN (Shukla & Marlin, 2021): each query time,
embedded with a learned Time2Vec encoding, attends to the sequence's states (keys carry the encoding
of their own observation times), then a feed-forward layer and a linear read-out give the values.

``extrapolate``: an ODE decoder in the style of Latent ODEs (Rubanova et al., 2019): the state at each
series' last valid position seeds a neural ODE that is integrated by the configured solver to every
query time, forward for queries after the last observation and backward for earlier ones; a linear
read-out gives the values. Series differ in their last time, so the ODE runs in offset time
τ = t_query - t_last over the union of the batch's offsets.

Without ``query_t`` both heads predict at the sequence's own times (reconstruction).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from omegaconf import MISSING
from torch import Tensor, nn

from ...errors import ConfigError
from ...seq import Seq
from ...solvers import SolverConfig
from ..base import Block, ODEBlock
from ..layers import FeedForward, MLPField, TimeEncoding, check_heads, masked_pool

QUERY_MAX_FREQ = 64.0    # query times are smooth targets: the time encoding needs no finer resolution


def _times(seq: Seq) -> Tensor:
    """[B, L] observation times (positions 0..L-1 on a regular grid)."""
    if seq.t is not None:
        return seq.t
    b, n = seq.x.shape[:2]
    return torch.arange(n, dtype=seq.x.dtype, device=seq.x.device).expand(b, n)


class QueryHead(Block):
    """Base of the query-time heads: output width is ``channels``; the output sits at the query times."""

    @dataclass
    class Config:
        d_model: int = MISSING       # stream width (injected)
        channels: int = MISSING      # values predicted per query time (the data's channels)

    produces = "sequence"
    example = {"channels": 2}

    @classmethod
    def out_width(cls, cfg) -> int:
        return cfg.channels

    @staticmethod
    def queries(seq: Seq) -> Tensor:
        return seq.query_t if seq.query_t is not None else _times(seq)


class Interpolate(QueryHead):
    @dataclass
    class Config(QueryHead.Config):
        heads: int = 4               # attention heads; must divide d_model
        time_features: int = 16      # size of the learned time encoding
        mlp_ratio: float = 2.0       # hidden width of the feed-forward layer, as a multiple of d_model

        def validate(self, path: str) -> None:
            check_heads(self.d_model, self.heads, path)
            if self.time_features < 2:
                raise ConfigError(f"{path}.time_features", f"must be >= 2, got {self.time_features}")

    example = {"channels": 2, "heads": 2}

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        d = cfg.d_model
        self.time = TimeEncoding(cfg.time_features, QUERY_MAX_FREQ)
        self.query = nn.Linear(cfg.time_features, d)
        self.key_time = nn.Linear(cfg.time_features, d)
        self.norm = nn.LayerNorm(d)
        self.q, self.k, self.v, self.out = (nn.Linear(d, d) for _ in range(4))
        self.norm2 = nn.LayerNorm(d)
        self.ff = FeedForward(d, int(cfg.mlp_ratio * d), d)
        self.readout = nn.Linear(d, cfg.channels)

    def forward(self, seq: Seq) -> Seq:
        tq = self.queries(seq)                                               # [B, Q]
        b, n, d = seq.x.shape
        h = self.cfg.heads
        query = self.query(self.time(tq))                                    # [B, Q, D]
        memory = self.norm(seq.x) + self.key_time(self.time(_times(seq)))    # [B, L, D]

        def split(x: Tensor) -> Tensor:                                      # [B, *, D] -> [B, H, *, D/H]
            return x.view(b, x.shape[1], h, d // h).transpose(1, 2)

        allowed = seq.valid()[:, None, None, :]                              # [B, 1, 1, L]
        y = F.scaled_dot_product_attention(split(self.q(query)), split(self.k(memory)), split(self.v(memory)),
                                           attn_mask=allowed)                # [B, H, Q, D/H]
        z = query + self.out(y.transpose(1, 2).reshape(b, tq.shape[1], d))   # [B, Q, D]
        z = z + self.ff(self.norm2(z))
        return Seq(x=self.readout(z), t=tq)                                  # [B, Q, channels]


STEP = 0.05     # default fixed step of the decoder: 20 steps per unit of (normalised) time


class Extrapolate(ODEBlock, QueryHead):
    @dataclass
    class Config(QueryHead.Config):
        hidden_ratio: float = 2.0    # hidden width of the vector field, as a multiple of d_model
        solver: SolverConfig = field(default_factory=lambda: SolverConfig(method="rk4", step_size=STEP))

    compile_safe = True

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        d = cfg.d_model
        self.norm = nn.LayerNorm(d)
        self.init = nn.Linear(d, d)
        self.func = MLPField(d, int(cfg.hidden_ratio * d))
        self.readout = nn.Linear(d, cfg.channels)

    def forward(self, seq: Seq) -> Seq:
        valid = seq.valid()                                                  # [B, L]
        z0 = self.init(self.norm(masked_pool(seq.x, valid, "last")))         # [B, D]
        t_last = masked_pool(_times(seq)[..., None], valid, "last")[:, 0]    # [B]
        tq = self.queries(seq)                                               # [B, Q]
        z = solve_at_offsets(self.solver, self.func, z0, tq - t_last[:, None])   # [B, Q, D]
        return Seq(x=self.readout(z), t=tq)                                  # [B, Q, channels]


def solve_at_offsets(solver, func, z0: Tensor, tau: Tensor) -> Tensor:
    """States [B, Q, D] of the autonomous ODE dz/dt = func(z), z = z0 [B, D] at τ = 0, at the offsets
    tau [B, Q] of either sign: one solve forward over the union of the positive offsets of the batch,
    one backward over the negative ones (offset 0 is z0 itself)."""
    z = z0[:, None, :].expand(-1, tau.shape[1], -1)                          # [B, Q, D] (τ = 0)
    rows = torch.arange(tau.shape[0], device=tau.device)[:, None]            # [B, 1]
    for sign in (1.0, -1.0):                                                 # forward, then backward in time
        side = sign * tau > 0                                                # [B, Q]
        if not side.any():
            continue
        grid = torch.unique(sign * tau[side])                                # [T] sorted positive offsets
        times = sign * torch.cat([grid.new_zeros(1), grid])                  # [T + 1] monotone from 0
        path = solver(func, z0, times)                                       # [T + 1, B, D]
        idx = torch.searchsorted(grid, (sign * tau).clamp_min(0).contiguous()) + 1   # [B, Q]
        idx = torch.where(side, idx.clamp_max(grid.numel()), 0)
        z = torch.where(side[..., None], path[idx, rows], z)                  # [B, Q, D]
    return z
