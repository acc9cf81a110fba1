"""Transformer layer (Vaswani et al., 2017), pre-norm, with PyTorch's scaled_dot_product_attention.

One block is one layer; stack with ``repeat:``. Padding is excluded from the keys; ``causal: true``
lets position i attend to positions <= i only, and only then does the layer run step by step
(`allocate_state` / `step`, with a cache of the past keys and values) for generation. ``dropout`` acts
on the attention weights and the feed-forward's hidden layer; the paper's residual dropout, on each
sub-layer's output before it is added to the stream (as PyTorch's ``nn.TransformerEncoderLayer``
does), is ``residual_dropout``. It is off by default because the irregular benchmark's table was
measured without it (docs/benchmarks.md). On CPU, PyTorch's fused attention kernel takes no dropout:
with ``dropout > 0`` a training step forms the [B, H, L, L] weights (at L = 1,400 measured 11x the time
and 66x the saved memory of ``dropout: 0``); CUDA's fused kernels take it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from omegaconf import MISSING
from torch import Tensor, nn

from ...seq import Seq
from ..base import Block
from ..layers import FeedForward, SelfAttention, attention_mask, check_heads


class Transformer(Block):
    @dataclass
    class Config:
        d_model: int = MISSING       # stream width (injected)
        heads: int = 4               # attention heads; must divide d_model
        mlp_ratio: float = 4.0       # hidden width of the feed-forward part, as a multiple of d_model
        dropout: float = 0.0
        residual_dropout: float = 0.0   # dropout on each sub-layer's output before the residual sum
        causal: bool = False         # position i attends to positions <= i only

        def validate(self, path: str) -> None:
            check_heads(self.d_model, self.heads, path)

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.attn = SelfAttention(cfg.d_model, cfg.heads, cfg.dropout)
        self.norm2 = nn.LayerNorm(cfg.d_model)
        self.ff = FeedForward(cfg.d_model, int(cfg.mlp_ratio * cfg.d_model), cfg.d_model, cfg.dropout)
        self.drop = nn.Dropout(cfg.residual_dropout)

    def forward(self, seq: Seq) -> Seq:
        x = seq.x                                                               # [B, L, D]
        mask = attention_mask(seq.mask, x.shape[1], self.cfg.causal, x.device)
        x = x + self.drop(self.attn(self.norm1(x), mask))
        x = x + self.drop(self.ff(self.norm2(x)))
        return replace(seq, x=x)

    def allocate_state(self, batch_size: int, device=None, dtype=None) -> dict:
        """The key/value cache before the first position, for `step` (causal layers only)."""
        if not self.cfg.causal:
            raise RuntimeError("a transformer with causal: false attends to later positions; it has no "
                               "step-by-step mode (set causal: true)")
        p = next(self.parameters())
        return self.attn.empty_cache(batch_size, device or p.device, dtype or p.dtype)

    def step(self, x_t: Tensor, state: dict, gap: Tensor | None = None) -> tuple[Tensor, dict]:
        """One position: x_t [B, D] -> (y_t [B, D], the cache grown by one), equal to the causal full pass."""
        y, state = self.attn.step(self.norm1(x_t), state)
        x = x_t + self.drop(y)
        return x + self.drop(self.ff(self.norm2(x))), state
