"""Multi-time attention encoder, mTAN (Shukla & Marlin, "Multi-Time Attention Networks for Irregularly
Sampled Time Series", ICLR 2021).

Queries are learned time embeddings of K reference times, keys are embeddings of the observation times,
and each channel's values are averaged with its own attention weights (softmax over the times at which
that channel was observed). Output: one vector per reference time, ``x`` [B, K, d_model] with ``t`` the
reference times, so every series becomes a regular sequence of the same length K whatever its number of
observations. ``reference: learned`` (the default) learns the reference times but keeps them increasing
(first time + cumulative softplus gaps), initialised evenly over [0, 1]; ``reference: fixed`` holds them
at K evenly spaced points of [0, 1], as the paper and its code do (with K = 128 there). Use
``data.normalise_time: true`` (the default) so observations lie in [0, 1].
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from omegaconf import MISSING
from torch import Tensor, nn

from ...seq import IrregularBatch, Seq
from ..base import Block, choice
from ..layers import TimeEncoding, inverse_softplus, multi_time_attention
from .common import clean_inputs


class MTANEncoder(Block):
    @dataclass
    class Config:
        d_in: int = MISSING              # input channels (injected)
        d_model: int = MISSING           # output width (injected)
        reference_points: int = 16       # K, the output length (the paper: 128)
        reference: str = choice("learned", "fixed")   # learned increasing times, or K fixed even points
        heads: int = 2
        time_features: int = 16          # size of the learned time embedding
        key_width: int = 16              # per-head query/key width

    accepts = "irregular"

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        k = cfg.reference_points
        if cfg.reference == "fixed":
            self.register_buffer("fixed", torch.linspace(0.0, 1.0, k))
        else:
            self.start = nn.Parameter(torch.zeros(()))
            gap = 1.0 / max(k - 1, 1)
            self.raw_gaps = nn.Parameter(inverse_softplus(torch.full((k - 1,), gap)))
        self.time = TimeEncoding(cfg.time_features)
        self.query = nn.Linear(cfg.time_features, cfg.heads * cfg.key_width)
        self.key = nn.Linear(cfg.time_features, cfg.heads * cfg.key_width)
        self.out = nn.Linear(cfg.heads * cfg.d_in + cfg.d_in, cfg.d_model)

    def reference_times(self) -> Tensor:
        """[K] increasing reference times."""
        if self.cfg.reference == "fixed":
            return self.fixed
        return torch.cat([self.start[None], self.start + torch.cumsum(F.softplus(self.raw_gaps), 0)])

    def forward(self, batch: IrregularBatch) -> Seq:
        values, observed, times, _ = clean_inputs(batch)
        b, n, c = values.shape
        h, e = self.cfg.heads, self.cfg.key_width
        ref = self.reference_times()                                        # [K]
        q = self.query(self.time(ref)).view(1, -1, h, e)                    # [1, K, H, E]
        k = self.key(self.time(times)).view(b, n, h, e)                     # [B, N, H, E]
        pooled = multi_time_attention(q, k, values, observed)               # [B, K, H, C]
        seen = observed.any(1).to(values.dtype)[:, None].expand(b, ref.shape[0], c)   # [B, K, C]
        x = self.out(torch.cat([pooled.reshape(b, ref.shape[0], h * c), seen], -1))    # [B, K, D]
        return Seq(x=x, t=ref.expand(b, -1), mask=None, query_t=batch.query_times)
