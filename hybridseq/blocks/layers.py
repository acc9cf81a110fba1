"""Shared layers: the toolkit that built-in blocks and plugin authors import (see docs/layers.md).

Attention (`attention_mask`, `SelfAttention`), the position-wise `FeedForward`, the learned
`TimeEncoding`, an ODE vector field (`MLPField`), masked pooling over valid positions (`masked_pool`),
the heads-divide-width check (`check_heads`), the parallel `linear_scan` of ``h_l = a_l h_{l-1} + b_l``,
and the state-space helpers `time_gaps`, `inverse_softplus` and `log_uniform` (defined with the SSM
backbones, `hybridseq.blocks.backbones.ssm_common`, and importable from here).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..ops import linear_scan

ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh}
POOLS = ("mean", "max", "last", "first")
_SSM_HELPERS = ("time_gaps", "inverse_softplus", "log_uniform")


def check_heads(d_model: int, heads: int, path: str) -> None:
    """A `ConfigError` at ``<path>.heads`` unless ``heads`` >= 1 divides ``d_model``."""
    if heads < 1 or d_model % heads:
        raise ConfigError(f"{path}.heads", f"heads={heads} must be >= 1 and divide d_model={d_model}")


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


class FeedForward(nn.Sequential):
    """Linear -> activation -> dropout -> Linear: [.., d_in] -> [.., d_out]."""

    def __init__(self, d_in: int, hidden: int, d_out: int, dropout: float = 0.0, activation: str = "gelu"):
        super().__init__(nn.Linear(d_in, hidden), ACTIVATIONS[activation](), nn.Dropout(dropout),
                         nn.Linear(hidden, d_out))


class TimeEncoding(nn.Module):
    """Time2Vec (Kazemi et al., 2019): t [..] -> [.., k] with one linear and k-1 sinusoidal learned features."""

    def __init__(self, k: int):
        super().__init__()
        self.lin = nn.Linear(1, k)

    def forward(self, t: Tensor) -> Tensor:
        z = self.lin(t.unsqueeze(-1))                              # [.., k]
        return torch.cat([z[..., :1], torch.sin(z[..., 1:])], dim=-1)


class MLPField(nn.Module):
    """f(t, h) = W2 tanh(W1 h + b1) + b2, an autonomous ODE vector field: [.., width] -> [.., out]."""

    def __init__(self, width: int, hidden: int, out: int | None = None):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(width, hidden), nn.Tanh(), nn.Linear(hidden, out or width))

    def forward(self, t: Tensor, h: Tensor) -> Tensor:
        return self.net(h)


def masked_pool(x: Tensor, valid: Tensor, how: str) -> Tensor:
    """Pool x [B, L, D] over the valid positions [B, L] -> [B, D]; ``how`` is one of `POOLS`."""
    w = valid.to(x.dtype)[..., None]                                          # [B, L, 1]
    if how == "mean":
        return (x * w).sum(1) / w.sum(1).clamp_min(1.0)
    if how == "max":
        return x.masked_fill(~valid[..., None], torch.finfo(x.dtype).min).amax(1)
    positions = torch.arange(x.shape[1], device=x.device)[None, :]            # [1, L]
    scores = torch.where(valid, positions if how == "last" else -positions, -x.shape[1] - 1)
    idx = scores.argmax(1)                                                    # [B]
    return x[torch.arange(x.shape[0], device=x.device), idx]


def __getattr__(name: str):
    # the SSM helpers live with the backbones, which import this module: fetched on first use
    if name in _SSM_HELPERS:
        from .backbones import ssm_common

        return getattr(ssm_common, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ACTIVATIONS", "POOLS", "FeedForward", "MLPField", "SelfAttention", "TimeEncoding", "attention_mask",
           "check_heads", "linear_scan", "masked_pool", *_SSM_HELPERS]
