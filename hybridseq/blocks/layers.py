"""Shared layers: the toolkit that built-in blocks and plugin authors import (see docs/layers.md).

Attention (`attention_mask`, `SelfAttention`), the position-wise `FeedForward`, the learned
`TimeEncoding` (with `check_time_encoding` for its config keys), mTAN's `multi_time_attention`, an ODE
vector field (`MLPField`), masked pooling over valid positions (`masked_pool`), the heads-divide-width
check (`check_heads`), the parallel `linear_scan` of ``h_l = a_l h_{l-1} + b_l``, and the state-space
helpers `time_gaps`, `inverse_softplus` and `log_uniform` (defined with the SSM backbones,
`hybridseq.blocks.backbones.ssm_common`, and importable from here).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..ops import linear_scan

ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh}
POOLS = ("mean", "max", "last", "first")
CACHE_START = 16     # positions a key/value cache of `SelfAttention.step` holds before it first grows
MIN_FREQ = 0.1       # lowest angular frequency of `TimeEncoding`: about 1/60 of a period over the unit span
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
        nn.init.xavier_uniform_(self.qkv.weight)         # as nn.MultiheadAttention: Glorot over [3D, D],
        nn.init.zeros_(self.qkv.bias)                     # zero biases (see docs/layers.md)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # 3 x [B, H, L, hd]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, n, d))                                    # [B, L, D]

    def empty_cache(self, batch: int, device, dtype) -> dict:
        """The key/value cache of `step` before the first position: buffers [B, H, capacity, hd], none used."""
        width = self.qkv.in_features // self.heads
        keys, values = (torch.zeros(batch, self.heads, CACHE_START, width, device=device, dtype=dtype) for _ in "kv")
        return {"k": keys, "v": values, "length": 0}

    def extend(self, x: Tensor, cache: dict) -> tuple[Tensor, Tensor, Tensor, dict]:
        """The query of one new position x [B, D] and every key and value up to it: (q [B, H, 1, hd],
        keys, values [B, H, n, hd], the cache holding this position too). The buffers are written in place
        and double when full (amortised O(1) copying per position), so each cache is passed on only once."""
        b, d = x.shape
        q, k, v = self.qkv(x).view(b, 3, self.heads, 1, d // self.heads).unbind(1)             # 3 x [B, H, 1, hd]
        n, keys, values = cache["length"], cache["k"], cache["v"]
        if n == keys.shape[2]:
            keys, values = (torch.cat([t, torch.zeros_like(t)], dim=2) for t in (keys, values))
        keys[:, :, n], values[:, :, n] = k[:, :, 0], v[:, :, 0]
        return q, keys[:, :, : n + 1], values[:, :, : n + 1], {"k": keys, "v": values, "length": n + 1}

    def step(self, x: Tensor, cache: dict) -> tuple[Tensor, dict]:
        """Causal attention of one new position x [B, D] to itself and every cached one (a key/value cache):
        -> (y [B, D], the cache holding this position too; see `extend`)."""
        q, keys, values, cache = self.extend(x, cache)
        y = F.scaled_dot_product_attention(q, keys, values)                                    # [B, H, 1, hd]
        return self.out(y.reshape(x.shape)), cache


class FeedForward(nn.Sequential):
    """Linear -> activation -> dropout -> Linear: [.., d_in] -> [.., d_out]."""

    def __init__(self, d_in: int, hidden: int, d_out: int, dropout: float = 0.0, activation: str = "gelu"):
        super().__init__(nn.Linear(d_in, hidden), ACTIVATIONS[activation](), nn.Dropout(dropout),
                         nn.Linear(hidden, d_out))


class TimeEncoding(nn.Module):
    """Time2Vec (Kazemi et al., 2019), t [..] -> [.., k]:
    ``[a t + b, sin(ω_1 t + φ_1), .., sin(ω_{k-1} t + φ_{k-1})]``.

    The periodic features come in sine/cosine pairs (φ = 0, π/2) whose angular frequencies ω are
    spread geometrically over [0.1, ``max_freq``] radians per unit of t. The data layer maps train
    times to [0, 1], so ``max_freq`` 1000 separates points 1/1000 of the span apart; a default
    ``nn.Linear(1, k)`` init (ω in [-1, 1]) would leave every feature nearly linear over the series.
    ``learned=False`` keeps ω and φ fixed.
    """

    def __init__(self, k: int, max_freq: float = 1000.0, learned: bool = True):
        super().__init__()
        pairs = k // 2                                                   # frequencies, each used twice
        freq = torch.logspace(math.log10(max_freq), math.log10(MIN_FREQ), max(pairs, 1))
        freq = freq.repeat_interleave(2)[: k - 1]                        # [k-1]
        phase = torch.tensor([0.0, math.pi / 2]).repeat(k)[: k - 1]      # [k-1]
        if learned:
            self.freq, self.phase = nn.Parameter(freq), nn.Parameter(phase)
        else:
            self.register_buffer("freq", freq)
            self.register_buffer("phase", phase)
        self.lin = nn.Linear(1, 1)

    def forward(self, t: Tensor) -> Tensor:
        t = t.unsqueeze(-1)                                              # [.., 1]
        return torch.cat([self.lin(t), torch.sin(t * self.freq + self.phase)], dim=-1)   # [.., k]


def check_time_encoding(path: str, k: int, max_freq: float) -> None:
    """Range checks shared by the blocks that take ``time_features`` / ``max_freq``."""
    if k < 0:
        raise ConfigError(f"{path}.time_features", f"must be >= 0, got {k}", got=k)
    if not (math.isfinite(max_freq) and max_freq > MIN_FREQ):
        raise ConfigError(f"{path}.max_freq", f"must be a finite number > {MIN_FREQ}, got {max_freq}", got=max_freq)


class MLPField(nn.Module):
    """f(t, h) = W2 tanh(W1 h + b1) + b2, an autonomous ODE vector field: [.., width] -> [.., out]."""

    def __init__(self, width: int, hidden: int, out: int | None = None):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(width, hidden), nn.Tanh(), nn.Linear(hidden, out or width))

    def forward(self, t: Tensor, h: Tensor) -> Tensor:
        return self.net(h)


def multi_time_attention(query: Tensor, key: Tensor, values: Tensor, observed: Tensor | None = None) -> Tensor:
    """Multi-time attention (mTAN, Shukla & Marlin 2021): each query time averages ``values`` over the key
    times with weights softmax(q·k / √E), each channel over only the times at which it was observed.

    query [B|1, Q, H, E] and key [B, N, H, E] (embedded times), values [B, N, C], observed [B, N, C] or
    [B, N, 1] (one mask for every channel) bool, None for all -> [B, Q, H, C]. A channel observed nowhere
    averages nothing: its weights spread over zeros (`clean_inputs` values) and give 0.
    """
    b, _, _, e = key.shape
    scores = torch.einsum("bqhe,bnhe->bhqn", query.expand(b, -1, -1, -1), key) / math.sqrt(e)   # [B, H, Q, N]
    if observed is None:
        return torch.einsum("bhqn,bnc->bqhc", torch.softmax(scores, -1), values)
    hidden = ~observed[:, None, None]                                         # [B, 1, 1, N, C|1]
    weights = torch.softmax(scores[..., None].masked_fill(hidden, torch.finfo(scores.dtype).min), dim=3)
    if observed.shape[-1] == 1:                                               # one mask: [B, H, Q, N]
        return torch.einsum("bhqn,bnc->bqhc", weights[..., 0], values)
    return torch.einsum("bhqnc,bnc->bqhc", weights, values)                   # [B, Q, H, C]


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


def no_weight_decay(*params: nn.Parameter) -> None:
    """Mark parameters the optimiser must not decay (mamba_ssm's ``_no_weight_decay`` attribute)."""
    for p in params:
        p._no_weight_decay = True


def own_lr(lr: float, *params: nn.Parameter) -> None:
    """Give parameters their own learning rate and no weight decay (state-spaces/s4's ``_optim`` attribute)."""
    for p in params:
        p._optim = {"lr": lr, "weight_decay": 0.0}
    no_weight_decay(*params)


def __getattr__(name: str):
    # the SSM helpers live with the backbones, which import this module: fetched on first use
    if name in _SSM_HELPERS:
        from .backbones import ssm_common

        return getattr(ssm_common, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ACTIVATIONS", "MIN_FREQ", "POOLS", "FeedForward", "MLPField", "SelfAttention", "TimeEncoding",
           "attention_mask", "check_heads", "check_time_encoding", "linear_scan", "masked_pool", "no_weight_decay",
           "own_lr", *_SSM_HELPERS]
