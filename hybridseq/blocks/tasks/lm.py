"""Language-model head: per-position logits over the vocabulary, [B, L, D] → [B, L, vocab].

Used with the ``lm`` task, which trains each position to predict its target token (the next one for
text; the answer tokens only for the synthetic recall tasks). Causality comes from the blocks before it
(``causal: true`` attention, SSMs, recurrences), not from the head. Position-wise, so it steps for
generation (`PositionWise`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from omegaconf import MISSING
from torch import nn

from ...seq import Seq
from ..base import Block, PositionWise


class LanguageModelHead(PositionWise, Block):
    """LayerNorm, then a linear map to the vocabulary's logits at every position."""

    @dataclass
    class Config:
        d_model: int = MISSING
        vocab: int = MISSING         # vocabulary size (logits out; taken from the data)

    example = {"vocab": 5}

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.vocab)

    @classmethod
    def out_width(cls, cfg) -> int:
        return cfg.vocab

    def forward(self, seq: Seq) -> Seq:
        return replace(seq, x=self.proj(self.norm(seq.x)))                   # [B, L, vocab]
