"""ContiFormer encoder: a stack of continuous-time attention layers (Chen et al., "ContiFormer:
Continuous-Time Transformer for Irregular Time Series Modeling", NeurIPS 2023).

The observations are embedded (values, mask, time encoding), then each of ``layers`` layers does, from
its input x [B, N, D], q_i = W_q x_i, k_j = W_k x_j, v_j = W_v x_j and:
- the query path q(τ): an interpolation through (t_i, q_i) (``query``: cubic Hermite or linear);
- key and value trajectories k_j(τ), v_j(τ) from (k_j, v_j) at τ = t_j, each with its own dynamics
  (``dynamics``: ``mlp`` neural fields solved by the configured solver, or ``linear`` complex diagonal
  ODEs in closed form; see `contiformer_paths`);
- per head, score_ij = mean of q(τ)·k_j(τ) over [t_j, t_i] / √d_head (q_i·k_j where t_i = t_j), a softmax
  over the valid keys (and j ≤ i when ``causal``), and out_i = W_o Σ_j a_ij · mean of v_j over [t_j, t_i];
- the Transformer layer around it: residual, LayerNorm (after each sublayer as PhysioPro's default, or
  before with ``norm_first``) and a GELU feed-forward of width ``mlp_ratio`` · D.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from omegaconf import MISSING
from torch import Tensor, nn

from ...errors import ConfigError
from ...seq import IrregularBatch, Seq
from ...solvers import SolverConfig
from ..base import ODEBlock, choice
from ..layers import TimeEncoding, check_heads
from .common import clean_inputs
from .contiformer_paths import LinearDynamics, ODEDynamics, TimeField, query_path
from .contiformer_stream import streamed_attention


class ContiAttention(nn.Module):
    """Continuous-time multi-head attention of one layer: x [B, N, D] -> [B, N, D]."""

    def __init__(self, cfg):
        super().__init__()
        d = cfg.d_model
        self.heads, self.query_kind, self.causal = cfg.heads, cfg.query, cfg.causal
        self.q, self.k, self.v, self.out = (nn.Linear(d, d) for _ in range(4))
        self.dynamics = (LinearDynamics(d, cfg.heads, cfg.zero_init) if cfg.dynamics == "linear"
                         else ODEDynamics(TimeField(d, cfg.field_width, cfg.zero_init),
                                          TimeField(d, cfg.field_width, cfg.zero_init), cfg.checkpoint))
        self.scale = 1.0 / math.sqrt(d // cfg.heads)
        self.stream = cfg.stream

    def project(self, x: Tensor, times: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The query path's coefficients [B, N-1, D, 4] and q, k, v [B, N, D]."""
        q, k, v = self.q(x), self.k(x), self.v(x)
        return query_path(q, times, valid, self.query_kind), q, k, v

    def integrals(self, x: Tensor, times: Tensor, valid: Tensor, solver) -> tuple[Tensor, Tensor]:
        """Interval means: scores [B, N_i, N_j, H] (unscaled) and values [B, N_i, N_j, D]."""
        coeffs, q, k, v = self.project(x, times, valid)
        return self.dynamics.integrals(solver, coeffs, q, k, v, times, self.heads, self.causal)

    def forward(self, x: Tensor, times: Tensor, valid: Tensor, solver) -> Tensor:
        n = x.shape[1]
        keep = valid[:, None, :, None]                                       # [B, 1, N_j, 1]
        if self.causal:
            keep = keep & torch.ones(n, n, dtype=torch.bool, device=x.device).tril()[None, :, :, None]

        def weigh(scores: Tensor) -> Tensor:                                 # [B, N_i, N_j, H], softmax over j
            return torch.softmax((scores * self.scale).masked_fill(~keep, torch.finfo(scores.dtype).min), dim=2)

        coeffs, q, k, v = self.project(x, times, valid)
        if self.stream:
            return self.out(streamed_attention(self.dynamics, solver, coeffs, q, k, v, times, valid, self.heads,
                                               self.causal, self.scale))
        return self.out(self.dynamics.attend(solver, coeffs, q, k, v, times, self.heads, self.causal, weigh))


class ContiFormerLayer(nn.Module):
    """Attention and feed-forward sublayers, each residual with LayerNorm (post- or pre-norm)."""

    def __init__(self, cfg):
        super().__init__()
        d, width = cfg.d_model, int(cfg.mlp_ratio * cfg.d_model)
        self.attention = ContiAttention(cfg)
        self.ff = nn.Sequential(nn.Linear(d, width), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(width, d))
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.drop = nn.Dropout(cfg.dropout)
        self.norm_first = cfg.norm_first

    def forward(self, x: Tensor, times: Tensor, valid: Tensor, solver) -> Tensor:
        if self.norm_first:
            x = x + self.drop(self.attention(self.norm1(x), times, valid, solver))
            return x + self.drop(self.ff(self.norm2(x)))
        x = self.norm1(x + self.drop(self.attention(x, times, valid, solver)))
        return self.norm2(x + self.drop(self.ff(x)))


class ContiFormerEncoder(ODEBlock):
    @dataclass
    class Config:
        d_in: int = MISSING              # input channels (injected)
        d_model: int = MISSING           # output width (injected)
        heads: int = 2
        layers: int = 1                  # stacked ContiFormer layers
        dynamics: str = choice("mlp", "linear")   # key/value ODEs: neural fields, or closed-form linear
        query: str = choice("hermite", "linear")  # interpolation of the queries between observations
        causal: bool = False             # attend only to keys at or before the query
        field_width: int = 32            # hidden width of each key/value field (dynamics: mlp)
        zero_init: bool = False          # start with constant trajectories (fields' output layer / λ at 0)
        checkpoint: bool = False         # dynamics mlp: re-solve each interval in backward (less memory)
        stream: bool = False             # dynamics mlp: read attention out during the sweeps, memory linear in T
        mlp_ratio: float = 4.0           # feed-forward width / d_model
        norm_first: bool = False         # pre-norm; false = post-norm (the paper's Transformer layer)
        dropout: float = 0.0
        time_features: int = 8           # size of the learned time encoding of the inputs
        solver: SolverConfig = field(default_factory=lambda: SolverConfig(method="rk4"))

        def validate(self, path: str) -> None:
            check_heads(self.d_model, self.heads, path)
            if self.dynamics == "linear" and (self.d_model // self.heads) % 2:
                raise ConfigError(f"{path}.dynamics", f"'linear' pairs features into complex numbers: d_model / "
                                  f"heads ({self.d_model // self.heads}) must be even", got=self.dynamics)
            if self.stream and (self.dynamics != "mlp" or self.checkpoint):
                raise ConfigError(f"{path}.stream", "streaming applies to dynamics 'mlp' without checkpoint "
                                  f"(got dynamics '{self.dynamics}', checkpoint {self.checkpoint}); "
                                  "set one of stream / checkpoint", got=self.stream)
            if self.layers < 1:
                raise ConfigError(f"{path}.layers", f"must be >= 1, got {self.layers}", got=self.layers)
            if not 0.0 <= self.dropout < 1.0:
                raise ConfigError(f"{path}.dropout", f"must be in [0, 1), got {self.dropout}", got=self.dropout)

    accepts = "irregular"

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.time = TimeEncoding(cfg.time_features)
        self.embed = nn.Linear(2 * cfg.d_in + cfg.time_features, cfg.d_model)
        self.layers = nn.ModuleList(ContiFormerLayer(cfg) for _ in range(cfg.layers))

    def forward(self, batch: IrregularBatch) -> Seq:
        values, observed, times, valid = clean_inputs(batch)
        x = self.embed(torch.cat([values, observed.to(values.dtype), self.time(times)], -1))   # [B, N, D]
        for layer in self.layers:
            x = layer(x, times, valid, self.solver)
        return batch.seq(x)
