"""Task heads on a pooled summary of the sequence: classification and regression."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import MISSING
from torch import Tensor, nn

from ...seq import Seq
from ..base import Block, choice


def masked_pool(x: Tensor, valid: Tensor, how: str) -> Tensor:
    """Pool x [B, L, D] over the valid positions [B, L] -> [B, D]."""
    w = valid.to(x.dtype)[..., None]                                          # [B, L, 1]
    if how == "mean":
        return (x * w).sum(1) / w.sum(1).clamp_min(1.0)
    if how == "max":
        return x.masked_fill(~valid[..., None], torch.finfo(x.dtype).min).amax(1)
    positions = torch.arange(x.shape[1], device=x.device)[None, :]            # [1, L]
    scores = torch.where(valid, positions if how == "last" else -positions, -x.shape[1] - 1)
    idx = scores.argmax(1)                                                    # [B]
    return x[torch.arange(x.shape[0], device=x.device), idx]


class PooledHead(Block):
    """LayerNorm, masked pooling over positions, then a linear map to ``out_width`` outputs."""

    @dataclass
    class Config:
        d_model: int = MISSING
        pool: str = choice("mean", "max", "last", "first")

    produces = "pooled"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, self.out_width(cfg))

    def forward(self, seq: Seq) -> Seq:
        pooled = masked_pool(self.norm(seq.x), seq.valid(), self.cfg.pool)    # [B, D]
        return Seq(x=self.proj(pooled))                                       # [B, out]


class Classify(PooledHead):
    @dataclass
    class Config(PooledHead.Config):
        classes: int = MISSING       # number of classes (logits out)

    example = {"classes": 3}

    @classmethod
    def out_width(cls, cfg) -> int:
        return cfg.classes


class Regress(PooledHead):
    @dataclass
    class Config(PooledHead.Config):
        outputs: int = 1             # number of regression targets

    @classmethod
    def out_width(cls, cfg) -> int:
        return cfg.outputs
