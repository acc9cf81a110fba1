"""Position-wise MLP block: pre-norm feed-forward with a residual connection (when widths agree); it steps
for generation as every `PositionWise` block does."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

from omegaconf import MISSING
from torch import Tensor, nn

from ...seq import Seq
from ..base import Block, PositionWise, choice
from ..layers import FeedForward


class MLP(PositionWise, Block):
    @dataclass
    class Config:
        d_model: int = MISSING             # input width (injected)
        hidden_ratio: float = 4.0          # hidden width as a multiple of d_model
        d_out: Optional[int] = None        # output width; None keeps d_model (and the residual)
        dropout: float = 0.0
        activation: str = choice("gelu", "relu", "silu", "tanh")

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.ff = FeedForward(cfg.d_model, int(cfg.hidden_ratio * cfg.d_model), self.out_width(cfg),
                              cfg.dropout, cfg.activation)
        self.residual = self.out_width(cfg) == cfg.d_model

    @classmethod
    def out_width(cls, cfg) -> int:
        return cfg.d_out or cfg.d_model

    def forward(self, seq: Seq) -> Seq:
        y: Tensor = self.ff(self.norm(seq.x))                                   # [B, L, d_out]
        return replace(seq, x=seq.x + y if self.residual else y)
