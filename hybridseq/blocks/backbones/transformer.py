"""Transformer layer (Vaswani et al., 2017), pre-norm, with PyTorch's scaled_dot_product_attention.

One block is one layer; stack with ``repeat:``. Padding is excluded from the keys; ``causal: true``
lets position i attend to positions <= i only.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from omegaconf import MISSING
from torch import Tensor, nn

from ...errors import ConfigError
from ...seq import Seq
from ..base import Block
from .mlp import FeedForward


def attention_mask(valid: Tensor | None, length: int, causal: bool, device) -> Tensor | None:
    """Boolean mask [B|1, 1, L, L] (True = may attend) from valid positions [B, L] and causality.

    Every query may attend to itself, so padded rows never see an empty key set (no NaN).
    """
    if valid is None and not causal:
        return None
    eye = torch.eye(length, dtype=torch.bool, device=device)
    allowed = valid[:, None, None, :] | eye if valid is not None else torch.ones_like(eye)[None, None]
    if causal:
        allowed = allowed & torch.ones(length, length, dtype=torch.bool, device=device).tril()
    return allowed


class SelfAttention(nn.Module):
    """Multi-head self-attention: x [B, L, D] -> [B, L, D]."""

    def __init__(self, d_model: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # 3 x [B, H, L, hd]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, n, d))                                    # [B, L, D]


class Transformer(Block):
    @dataclass
    class Config:
        d_model: int = MISSING       # stream width (injected)
        heads: int = 4               # attention heads; must divide d_model
        mlp_ratio: float = 4.0       # hidden width of the feed-forward part, as a multiple of d_model
        dropout: float = 0.0
        causal: bool = False         # position i attends to positions <= i only

        def validate(self, path: str) -> None:
            if self.heads < 1 or self.d_model % self.heads:
                raise ConfigError(f"{path}.heads", f"heads={self.heads} must be >= 1 and divide d_model={self.d_model}")

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.attn = SelfAttention(cfg.d_model, cfg.heads, cfg.dropout)
        self.norm2 = nn.LayerNorm(cfg.d_model)
        self.ff = FeedForward(cfg.d_model, int(cfg.mlp_ratio * cfg.d_model), cfg.d_model, cfg.dropout)

    def forward(self, seq: Seq) -> Seq:
        x = seq.x                                                               # [B, L, D]
        mask = attention_mask(seq.mask, x.shape[1], self.cfg.causal, x.device)
        x = x + self.attn(self.norm1(x), mask)
        x = x + self.ff(self.norm2(x))
        return replace(seq, x=x)
