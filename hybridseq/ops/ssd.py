"""State-space duality (SSD) of Mamba-2, chunked, in pure PyTorch (Dao & Gu, 2024, "Transformers are
SSMs: Generalized Models and Efficient Algorithms Through Structured State Space Duality").

With a scalar decay per head, h_l = exp(Δ_l a) h_{l-1} + Δ_l x_l B_l^T and y_l = h_l C_l. Inside a chunk
of T steps the output is a masked attention-like product with decay matrix exp(s_i - s_j) (s the
cumulative sum of Δ a); chunk states carry the rest, combined across chunks by a small decay matrix over
chunk ends. Every exponent is a difference of cumulative sums with i >= j, hence <= 0: no overflow.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .precision import full_precision


def _segment_sums(x: Tensor) -> Tensor:
    """s[..., i, j] = x[..., j+1] + ... + x[..., i] for i >= j, -inf above the diagonal: [..., T] -> [..., T, T]."""
    size = x.shape[-1]
    lower = torch.ones(size, size, dtype=torch.bool, device=x.device).tril(-1)
    rep = x.unsqueeze(-1).expand(*x.shape, size).masked_fill(~lower, 0)     # [..., T(i), T(j)]: x_i if i>j
    sums = rep.cumsum(-2)                                                   # summed over i' <= i
    return sums.masked_fill(~lower.logical_or(torch.eye(size, dtype=torch.bool, device=x.device)), float("-inf"))


@full_precision
def ssd_chunked(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk: int = 64,
                dt_in: Tensor | None = None, h0: Tensor | None = None, seq_idx: Tensor | None = None) -> Tensor:
    """y [B, L, H, P] of the SSD recurrence without the D skip.

    x: [B, L, H, P]; dt: [B, L, H] (positive); A: [H] (negative); B, C: [B, L, G, N] with G dividing H.
    ``dt_in`` [B, L, H]: the step that scales the input, h_l = exp(dt_l a) h_{l-1} + dt_in_l x_l B_lᵀ
    (default ``dt``). ``h0`` [B, H, P, N]: the state before the first step (default zeros).
    ``seq_idx`` [B, L] int, non-decreasing along L: packed sequences; the state restarts from zero where it
    changes (no decay product crosses a change: the masks below), ``h0`` enters the first sequence only.
    """
    batch, length, heads, _ = x.shape
    dt_in = dt if dt_in is None else dt_in
    pad = -length % chunk
    if pad:                                            # dt = 0 and x = 0: identity steps at the end
        x, dt, dt_in, B, C = (F.pad(v, (0, 0) * (v.dim() - 2) + (0, pad)) for v in (x, dt, dt_in, B, C))
        if seq_idx is not None:
            seq_idx = F.pad(seq_idx, (0, pad), mode="replicate")
    rep = heads // B.shape[2]
    B, C = (v.repeat_interleave(rep, dim=2) for v in (B, C))                 # [B, L, H, N]
    n = x.shape[1] // chunk
    x, B, C = (v.reshape(batch, n, chunk, heads, v.shape[-1]) for v in (x, B, C))  # [B, c, T, H, .]
    dt = dt.reshape(batch, n, chunk, heads)
    xdt = x * dt_in.reshape(batch, n, chunk, heads, 1)                      # Δ x [B, c, T, H, P]
    la = (dt * A).permute(0, 3, 1, 2)                                       # log decays [B, H, c, T]
    cum = la.cumsum(-1)                                                     # [B, H, c, T]

    decay = torch.exp(_segment_sums(la))                                    # [B, H, c, T, T]
    to_end = torch.exp(cum[..., -1:] - cum)                                 # [B, H, c, T]
    across = torch.exp(_segment_sums(F.pad(cum[..., -1], (1, 0))))         # [B, H, c+1, c+1]
    carry = torch.exp(cum)                                                  # [B, H, c, T]
    if seq_idx is not None:                            # keep only products within one sequence
        idx = seq_idx.reshape(batch, 1, n, chunk)                           # [B, 1, c, T]
        ends = torch.cat([idx[:, :, 0, :1], idx[..., -1]], dim=-1)          # before each chunk [B, 1, c+1]
        decay = decay * (idx.unsqueeze(-1) == idx.unsqueeze(-2))
        to_end = to_end * (idx == idx[..., -1:])
        across = across * (ends.unsqueeze(-1) == ends.unsqueeze(-2))
        carry = carry * (idx == ends[..., :-1, None])
    y_in = torch.einsum("bclhn,bcshn,bhcls,bcshp->bclhp", C, B, decay, xdt)  # within chunks

    states = torch.einsum("bclhn,bhcl,bclhp->bchpn", B, to_end, xdt)       # chunk-end states from inside
    first = torch.zeros_like(states[:, :1]) if h0 is None else h0.unsqueeze(1).to(states.dtype)
    states = torch.cat([first, states], dim=1)                             # [B, c+1, H, P, N]
    entering = torch.einsum("bhzc,bchpn->bzhpn", across, states)[:, :-1]   # state entering each chunk
    y_carry = torch.einsum("bclhn,bchpn,bhcl->bclhp", C, entering, carry)

    y = (y_in + y_carry).reshape(batch, n * chunk, heads, -1)
    return y[:, :length]
