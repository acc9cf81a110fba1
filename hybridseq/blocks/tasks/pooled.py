"""Task heads on a pooled summary of the sequence: classification and regression."""
from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING
from torch import nn

from ...seq import Seq
from ..base import Block, choice
from ..layers import POOLS, masked_pool


class PooledHead(Block):
    """LayerNorm, masked pooling over positions, then a linear map to ``out_width`` outputs."""

    @dataclass
    class Config:
        d_model: int = MISSING
        pool: str = choice(*POOLS)

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
