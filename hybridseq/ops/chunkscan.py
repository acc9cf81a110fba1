"""Time-varying recurrences vectorised over time: diagonal plus rank one (`dplr_scan`), dense (`matrix_scan`).

`dplr_scan` computes the recurrence of a transition that is diagonal plus a real rank-one feedback,

    h_l = a_l ⊙ h_{l-1} + s_l σ_l + x_l,        σ_l = 2 Re(q_l · h_{l-1}) + r_l        (σ_l real),

which is S4's bilinear step with A = Λ - p p* on the stored half of a conjugate-symmetric state
(`hybridseq.blocks.backbones.s4`). Time is split into chunks of T = `CHUNK` steps. Inside a chunk, with
P_k = a_1 ⋯ a_k and the middle product P_m (m = T/2), the decay from step j+1 to k is (P_k / P_m)(P_m / P_j);
so each chunk's states are one cumulative sum once its σ are known, and its T values σ solve one unit
lower-triangular T × T system whose entries 2 Re Σ q_k (P_{k-1}/P_m)(P_m/P_j) s_j are a small matrix
product. What enters from the previous chunk acts through a diagonal plus rank-T map, carried by a loop
over the L/T chunks. All chunks are computed at once: a few dozen vectorised operations and L/T small
steps, where the recurrence itself takes L sequential steps.

`matrix_scan` is the chunk-parallel scan of ``h_l = a_l h_{l-1} + x_l`` with dense N × N transitions (S4's exact
hold, whose transitions have no O(N) form): ≈ 3√L steps of batched matrix products.

Range. Each |a| is raised to at least e^-`LOG_FLOOR` (e^-20 in float32, e^-80 in float64: far below the
dtype's resolution relative to the state it multiplies), so a ratio of at most T/2 decays stays within
e^80 in float32 and e^320 in float64, both finite; the ratios are products of the decays themselves
(no logarithms, no exponentials: phases never accumulate), and the terms that lose precision in a
cumulative sum are exactly those multiplied by a vanishing decay afterwards.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .precision import full_precision

CHUNK = 8                                              # steps per chunk; LOG_FLOOR · CHUNK / 2 < log(max)
LOG_FLOOR = {torch.float32: 20.0, torch.float64: 80.0}


def _chunked(x: Tensor, chunk: int, fill: float = 0.0) -> Tensor:
    """[B, L, H, ...] -> [B, H, n, T, ...], padded at the end with ``fill`` to whole chunks."""
    pad = -x.shape[1] % chunk
    if pad:
        x = torch.cat([x, x.new_full((x.shape[0], pad, *x.shape[2:]), fill)], dim=1)
    x = x.unflatten(1, (-1, chunk))                                    # [B, n, T, H, ...]
    return x.movedim(3, 1)                                             # [B, H, n, T, ...]


def _unchunked(x: Tensor, length: int) -> Tensor:
    """Inverse of `_chunked`: [B, H, n, T, ...] -> [B, L, H, ...]."""
    return x.movedim(1, 3).flatten(1, 2)[:, :length]


def _relative_decays(a: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Decays a [B, H, n, T, M] -> (fwd, back, mid): fwd_k = Π_{i<=k} a_i / mid and back = 1 / fwd [B, H, n, T, M],
    mid = Π_{i<=m} a_i [B, H, n, 1, M] at the middle step m = T/2 - 1; all products of at most T/2 decays (or
    their reciprocals), after raising each |a| to at least e^-LOG_FLOOR."""
    floor = math.exp(-LOG_FLOOR[a.real.dtype])
    a = torch.where(a == 0, torch.full_like(a, floor), a * (floor / a.abs().clamp_min(floor * floor)).clamp_min(1))
    m = a.shape[-2] // 2 - 1
    right = a[..., m + 1:, :].cumprod(-2)                              # Π_{m<i<=k} a_i, k > m
    left = a[..., 1:m + 1, :].flip(-2).cumprod(-2).flip(-2)            # Π_{k<i<=m} a_i, k < m
    one = torch.ones_like(a[..., :1, :])
    fwd = torch.cat([1 / left, one, right], dim=-2)
    back = torch.cat([left, one, 1 / right], dim=-2)
    return fwd, back, a[..., :1, :] * left[..., :1, :]


def _shifted(x: Tensor, first: Tensor) -> Tensor:
    """x moved one step later along the chunk (dim -2), ``first`` [..., 1, M] in front: the value before each step."""
    return torch.cat([first.expand_as(x[..., :1, :]), x[..., :-1, :]], dim=-2)


@full_precision
def dplr_scan(a: Tensor, s: Tensor, x: Tensor, q: Tensor, r: Tensor, h0: Tensor | None = None) -> Tensor:
    """States h [B, L, H, M] of the diagonal-plus-rank-one recurrence in the module docstring.

    a, s, x, q: [B, L, H, M] complex (|a| <= 1); r: [B, L, H] real; h0 [B, H, M] (default zeros).
    """
    length, chunk = x.shape[1], CHUNK
    fwd, back, mid = _relative_decays(_chunked(a, chunk, 1.0))            # [B, H, n, T, M]
    s, x, q = (_chunked(v, chunk) for v in (s, x, q))
    r = _chunked(r.unsqueeze(-1), chunk).squeeze(-1)                   # [B, H, n, T]
    total = fwd * mid                                                  # Π_{i<=k} a_i
    p_s, xs = back * s, (back * x).cumsum(-2)                          # [B, H, n, T, M]
    q_t = q * _shifted(fwd, 1 / mid)                                   # q_k Π_{i<k} a_i / mid
    xs_prev = _shifted(xs, torch.zeros_like(mid))                      # Σ_{j<k}
    strict = torch.ones(chunk, chunk, dtype=torch.bool, device=x.device).tril(-1)
    k = 2 * (q_t @ p_s.transpose(-1, -2)).real                         # [B, H, n, T(k), T(j)]
    system = torch.eye(chunk, dtype=k.dtype, device=k.device) - k.masked_fill(~strict, 0)
    g = q * _shifted(total, torch.ones_like(mid))                      # σ's functional of the entering state
    f = 2 * (q_t * xs_prev).sum(-1).real + r                           # σ from this chunk's inputs [B, H, n, T]
    sol = torch.linalg.solve_triangular(system, torch.cat([f.unsqueeze(-1), g.real, g.imag], -1), upper=False,
                                        unitriangular=True)            # [B, H, n, T, 1 + 2M]
    sigma0, g = sol[..., 0], torch.complex(*sol[..., 1:].chunk(2, dim=-1))
    fwd_end = fwd[..., -1, :]                                          # [B, H, n, M]
    spread = fwd_end.unsqueeze(-2) * p_s                               # [B, H, n, T, M]: h_end per σ_j
    base = fwd_end * (xs[..., -1, :] + (p_s * sigma0.unsqueeze(-1)).sum(-2))
    decay = total[..., -1, :]
    h = torch.zeros_like(base[:, :, 0]) if h0 is None else h0.to(base.dtype)      # [B, H, M]
    entering = []
    for c in range(base.shape[2]):                                     # the rank-T carry across chunks
        entering.append(h)
        feedback = 2 * (g[:, :, c] * h.unsqueeze(-2)).sum(-1).real                 # [B, H, T]
        h = decay[:, :, c] * h + base[:, :, c] + (spread[:, :, c] * feedback.unsqueeze(-1)).sum(-2)
    h_in = torch.stack(entering, dim=2)                                # [B, H, n, M]
    sigma = sigma0 + 2 * (g * h_in.unsqueeze(-2)).sum(-1).real         # [B, H, n, T]
    states = total * h_in.unsqueeze(-2) + fwd * ((p_s * sigma.unsqueeze(-1)).cumsum(-2) + xs)
    return _unchunked(states, length)


@full_precision
def matrix_scan(a: Tensor, x: Tensor, h0: Tensor) -> Tensor:
    """States h [B, L, ..., N] of h_l = a_l h_{l-1} + x_l with dense transitions a [B, L, ..., N, N], x [B, L, ..., N],
    from h0 [B, ..., N], chunk-parallel: T ≈ √L steps inside all chunks at once (local states from zero and
    cumulative transition products), L/T carries across chunks, one batched product for what enters each chunk;
    only multiplications by the transitions, as the sequential recurrence."""
    length = x.shape[1]
    size = max(1, math.isqrt(length - 1) + 1)
    pad = -length % size
    if pad:                                            # identity steps at the end
        eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device).expand(a.shape[0], pad, *a.shape[2:])
        a, x = torch.cat([a, eye], dim=1), torch.cat([x, x.new_zeros(x.shape[0], pad, *x.shape[2:])], dim=1)
    a, x = a.unflatten(1, (-1, size)), x.unflatten(1, (-1, size))              # [B, n, T, ...]
    local, cum = [x[:, :, 0]], [a[:, :, 0]]
    for t in range(1, size):
        local.append((a[:, :, t] @ local[-1].unsqueeze(-1)).squeeze(-1) + x[:, :, t])
        cum.append(a[:, :, t] @ cum[-1])
    local, cum = torch.stack(local, dim=2), torch.stack(cum, dim=2)           # [B, n, T, ..., N(, N)]
    h, entering = h0, []
    for c in range(local.shape[1]):
        entering.append(h)
        h = (cum[:, c, -1] @ h.unsqueeze(-1)).squeeze(-1) + local[:, c, -1]
    entering = torch.stack(entering, dim=1).unsqueeze(2)                       # [B, n, 1, ..., N]
    states = local + (cum @ entering.unsqueeze(-1)).squeeze(-1)
    return states.flatten(1, 2)[:, :length]
