"""ContiFormer encoder: continuous-time multi-head attention (Chen et al., "ContiFormer: Continuous-Time
Transformer for Irregular Time Series Modeling", NeurIPS 2023).

Each observation j starts a key and a value trajectory, k_j(τ) and v_j(τ), that follow one neural ODE from
(k_j, v_j) = (W_k x_j, W_v x_j) at τ = t_j. Query i attends to j with the score
    α_ij = 1/(t_i - t_j) ∫_{t_j}^{t_i} q_i · k_j(τ) dτ = q_i · k̄_ij,   k̄_ij = mean of k_j over [t_j, t_i]
(and q_i · k_i(t_i) when i = j), and receives the mean value v̄_ij over the same interval. All pairs are
solved at once: pair (i, j) runs in normalised time s ∈ [0, 1], τ = t_j + s (t_i - t_j), so
dy/ds = (t_i - t_j) f(τ, y) on a state [B, N, N, 2·d_model], and the means are Gauss–Legendre sums of the
trajectories at the quadrature nodes (the solver's output times). Cost is quadratic in N in time and memory.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from omegaconf import MISSING
from torch import Tensor, nn

from ...errors import ConfigError
from ...seq import IrregularBatch, Seq
from ...solvers import SolverConfig
from ..base import ODEBlock
from ..layers import TimeEncoding, check_heads
from .common import clean_inputs


def gauss_legendre(points: int) -> tuple[Tensor, Tensor]:
    """Nodes and weights of the ``points``-point Gauss–Legendre rule on [0, 1] (weights sum to 1)."""
    nodes, weights = np.polynomial.legendre.leggauss(points)
    return torch.tensor((nodes + 1) / 2), torch.tensor(weights / 2)


class TimeField(nn.Module):
    """f(τ, y) = W2 tanh(W1 y + w τ + b1) + b2; τ broadcasts against y's leading shape."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.inner = nn.Linear(width + 1, hidden)
        self.outer = nn.Linear(hidden, width)

    def forward(self, tau: Tensor, y: Tensor) -> Tensor:
        return self.outer(torch.tanh(self.inner(torch.cat([y, tau[..., None].expand(*y.shape[:-1], 1)], -1))))


class _PairField(nn.Module):
    """dy/ds = (t_i - t_j) f(t_j + s (t_i - t_j), y) for every pair; start, span [B, N, N]."""

    def __init__(self, field: nn.Module, start: Tensor, span: Tensor):
        super().__init__()
        self.field, self.start, self.span = field, start, span

    def forward(self, s: Tensor, y: Tensor) -> Tensor:
        return self.span[..., None] * self.field(self.start + s * self.span, y)


class ContiFormerEncoder(ODEBlock):
    @dataclass
    class Config:
        d_in: int = MISSING              # input channels (injected)
        d_model: int = MISSING           # output width (injected)
        heads: int = 2
        field_width: int = 32            # hidden width of the key/value ODE
        quadrature: int = 3              # Gauss–Legendre nodes per interval
        time_features: int = 8           # size of the learned time encoding of the inputs
        solver: SolverConfig = field(default_factory=lambda: SolverConfig(method="rk4"))

        def validate(self, path: str) -> None:
            check_heads(self.d_model, self.heads, path)
            if self.quadrature < 1:
                raise ConfigError(f"{path}.quadrature", f"must be >= 1, got {self.quadrature}")

    accepts = "irregular"

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        d = cfg.d_model
        self.time = TimeEncoding(cfg.time_features)
        self.embed = nn.Linear(2 * cfg.d_in + cfg.time_features, d)
        self.qkv = nn.Linear(d, 3 * d)
        self.field = TimeField(2 * d, cfg.field_width)
        self.proj = nn.Linear(d, d)
        nodes, weights = gauss_legendre(cfg.quadrature)
        self.register_buffer("nodes", nodes.float(), persistent=False)
        self.register_buffer("weights", weights.float(), persistent=False)

    def interval_means(self, k: Tensor, v: Tensor, times: Tensor) -> tuple[Tensor, Tensor]:
        """k̄, v̄ [B, N_i, N_j, D]: means of the trajectories from (k_j, v_j) [B, N, D] over [t_j, t_i]."""
        b, n, d = k.shape
        y0 = torch.cat([k, v], -1)[:, None].expand(b, n, n, 2 * d)             # [B, N_i, N_j, 2D]
        start = times[:, None, :].expand(b, n, n)                               # t_j
        span = times[:, :, None] - times[:, None, :]                            # t_i - t_j
        grid = torch.cat([self.nodes.new_zeros(1), self.nodes]).to(k.dtype)    # [1 + Q]
        path = self.solver(_PairField(self.field, start, span), y0, grid)[1:]   # [Q, B, N, N, 2D]
        mean = torch.einsum("q,q...->...", self.weights.to(k.dtype), path)
        return mean[..., :d], mean[..., d:]

    def forward(self, batch: IrregularBatch) -> Seq:
        values, observed, times, valid = clean_inputs(batch)
        b, n, _ = values.shape
        h = self.cfg.heads
        x = self.embed(torch.cat([values, observed.to(values.dtype), self.time(times)], -1))   # [B, N, D]
        q, k, v = self.qkv(x).chunk(3, dim=-1)                                  # 3 x [B, N, D]
        k_mean, v_mean = self.interval_means(k, v, times)                       # 2 x [B, N, N, D]
        e = k.shape[-1] // h
        q = q.view(b, n, h, e)
        scores = torch.einsum("bihe,bijhe->bhij", q, k_mean.view(b, n, n, h, e)) / math.sqrt(e)   # [B, H, N, N]
        scores = scores.masked_fill(~valid[:, None, None, :], torch.finfo(scores.dtype).min)
        attn = torch.softmax(scores, dim=-1)
        out = torch.einsum("bhij,bijhe->bihe", attn, v_mean.view(b, n, n, h, e)).reshape(b, n, h * e)
        return batch.seq(x + self.proj(out))                                    # [B, N, D]
