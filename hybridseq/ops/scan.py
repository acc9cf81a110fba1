"""Diagonal linear recurrences ``h_l = a_l * h_{l-1} + b_l`` in pure PyTorch, chunk-parallel and exact.

`linear_scan` is the generic differentiable recurrence (real or complex). `selective_scan` is the
selective state-space scan of Mamba (Gu & Dao, 2023, "Mamba: Linear-Time Sequence Modeling with
Selective State Spaces") fused into one autograd function: its decays ``exp(Δ A)`` and inputs
``Δ B u`` ([L, B, D, N]) exist only one segment at a time, in the forward and (recomputed) in the
backward pass, so memory does not grow with ``L · D · N``. With time gaps it runs the exact
zero-order hold over each gap (`zoh_weight`), segment by segment under activation checkpointing.

The scan itself (`scan_`) splits time into ``n`` chunks of ``T ≈ √L`` steps. A loop over the ``T``
positions of a chunk runs all chunks at once (local states from zero, cumulative decays), a loop over
the ``n`` chunk ends carries the state across chunks, and one fused multiply-add adds each chunk's
incoming state times its cumulative decay. That is ``≈ 2√L`` vectorised steps, only multiplications by
the decays (no division, no log), so it is as stable as the sequential recurrence.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from .precision import full_precision

SEGMENT_ELEMENTS = {"cpu": 1 << 21, "cuda": 1 << 25}   # per [S, B, D, N] segment buffer: ~L3 cache on
                                                       # CPU, fewer kernel launches on GPU


def _chunking(length: int) -> tuple[int, int]:
    """Chunk size T (a power of two ≈ √L) and chunk count n for a scan of ``length`` steps."""
    size = 1 << math.ceil(math.log2(max(length, 1)) / 2)
    return size, -(-length // size)


@torch.no_grad()
def scan_(a: Tensor, b: Tensor, h0: Tensor | None = None, reverse: bool = False) -> tuple[Tensor, Tensor]:
    """States of ``h_l = a_l h_{l-1} + b_l`` (``reverse``: ``h_l = a_l h_{l+1} + b_l``), time on dim 0.

    a, b: [L, *S] contiguous; h0: [*S] state before the first step (after the last one if reverse).
    Works in place: ``b`` is overwritten with the states and ``a`` with cumulative decays.
    Returns (h [L, *S], final state [*S]).
    """
    length, shape = a.shape[0], a.shape[1:]
    size, n = _chunking(length)
    pad = n * size - length
    if pad:                                         # identity steps (a=1, b=0) at the end: they leave
        a = torch.cat([a, a.new_ones(pad, *shape)])  # the final state of either direction unchanged
        b = torch.cat([b, b.new_zeros(pad, *shape)])
    av, bv = a.view(n, size, *shape), b.view(n, size, *shape)   # [n, T, *S]
    steps = range(size - 2, -1, -1) if reverse else range(1, size)
    for t in steps:                                 # local states and cumulative decays, all chunks at once
        prev = t + 1 if reverse else t - 1
        bv[:, t].addcmul_(av[:, t], bv[:, prev])
        av[:, t].mul_(av[:, prev])
    last = 0 if reverse else size - 1
    carry = h0 if h0 is not None else b.new_zeros(shape)
    incoming = torch.empty_like(bv[:, 0])          # [n, *S] state entering each chunk
    for c in (range(n - 1, -1, -1) if reverse else range(n)):
        incoming[c] = carry
        carry = torch.addcmul(bv[c, last], av[c, last], carry)
    bv.addcmul_(av, incoming.unsqueeze(1))
    return b[:length], carry


def _shift(x: Tensor, reverse: bool = False) -> Tensor:
    """x moved one step along dim 0 (to later positions; earlier if ``reverse``), zeros filling the gap."""
    fill = torch.zeros_like(x[:1])
    return torch.cat([x[1:], fill]) if reverse else torch.cat([fill, x[:-1]])


class _LinearScan(torch.autograd.Function):
    """h = scan(a, b) on time-first tensors; backward is the reverse scan of the conjugate decays."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor) -> Tensor:
        h, _ = scan_(a.clone(), b.clone())
        ctx.save_for_backward(a, h)
        return h

    @staticmethod
    def backward(ctx, dh: Tensor):
        a, h = ctx.saved_tensors
        g, _ = scan_(_shift(a, reverse=True).conj(), dh.clone(), reverse=True)   # dL/db
        return g * _shift(h).conj(), g


@full_precision
def linear_scan(a: Tensor, b: Tensor) -> Tensor:
    """States h [B, L, ...] of ``h_l = a_l h_{l-1} + b_l`` (h_{-1} = 0); a, b: [B, L, ...], real or complex."""
    a, b = torch.broadcast_tensors(a, b)
    h = _LinearScan.apply(a.transpose(0, 1).contiguous(), b.transpose(0, 1).contiguous())  # [L, B, ...]
    return h.transpose(0, 1)


def _decay(delta: Tensor, A: Tensor, out: Tensor) -> Tensor:
    """exp(Δ A) [S, B, D, N] into ``out`` from Δ [S, B, D] and A [D, N]."""
    return torch.mul(delta.unsqueeze(-1), A, out=out).exp_()


def _drive(v: Tensor, B: Tensor, out: Tensor) -> Tensor:
    """Δ u B [S, B, D, N] into ``out`` from v = Δ u [S, B, D] and B [S, B, N]."""
    return torch.mul(v.unsqueeze(-1), B.unsqueeze(2), out=out)


def segment_length(width: int, length: int, device: torch.device, scale: float = 1) -> int:
    """Time steps per segment: a power of two whose [S, width] buffers hold about ``scale`` SEGMENT_ELEMENTS."""
    budget = int(scale * SEGMENT_ELEMENTS.get(device.type, SEGMENT_ELEMENTS["cuda"]))
    steps = 1 << max(4, min(12, (budget // max(width, 1)).bit_length() - 1))
    return min(steps, 1 << (max(length, 1) - 1).bit_length())


class _SelectiveScan(torch.autograd.Function):
    """y_l = C_l · h_l, h_l = exp(Δ_l A) h_{l-1} + Δ_l B_l u_l, on time-first tensors, segment by segment.

    Three [S, B, D, N] buffers are allocated once per call and reused by every segment.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, segment: int):
        length, batch = u.shape[:2]
        v = delta * u                                                  # Δ u [L, B, D]
        y = torch.empty_like(u)                                        # [L, B, D]
        h = u.new_zeros(batch, *A.shape)                               # [B, D, N]
        decay, state = (u.new_empty(min(segment, length), batch, *A.shape) for _ in range(2))
        starts = []
        for s in range(0, length, segment):
            part = slice(s, s + segment)
            n = min(segment, length - s)
            starts.append(h)
            hs, h = scan_(_decay(delta[part], A, decay[:n]), _drive(v[part], B[part], state[:n]), h)
            y[part] = (hs @ C[part].unsqueeze(-1)).squeeze(-1)
        ctx.segment = segment
        ctx.save_for_backward(u, delta, A, B, C, torch.stack(starts))
        return y

    @staticmethod
    def backward(ctx, dy):
        u, delta, A, B, C, starts = ctx.saved_tensors
        length, segment = u.shape[0], ctx.segment
        v = delta * u
        du, ddelta = torch.empty_like(u), torch.empty_like(delta)
        dB, dC, dA = torch.empty_like(B), torch.empty_like(C), torch.zeros_like(A)
        work, state, grad = (u.new_empty(min(segment, length), *starts.shape[1:]) for _ in range(3))
        g_after = None                                   # dL/dh at the first step of the next segment
        decay_after = torch.zeros_like(starts[0])        # its decay (none after the last step)
        for k in reversed(range(starts.shape[0])):
            s = k * segment
            part, n = slice(s, s + segment), min(segment, length - s)
            w, st, g = work[:n], state[:n], grad[:n]
            hs, _ = scan_(_decay(delta[part], A, w), _drive(v[part], B[part], st), starts[k])   # states again
            dC[part] = (hs.transpose(-1, -2) @ dy[part].unsqueeze(-1)).squeeze(-1)
            torch.mul(dy[part].unsqueeze(-1), C[part].unsqueeze(2), out=g)                      # ∂L/∂h_l direct
            _decay(delta[s + 1:s + n], A, w[:-1])                                               # decay of step l+1
            w[-1] = decay_after
            decay_after = torch.exp(delta[s].unsqueeze(-1) * A)
            g, g_after = scan_(w, g, g_after, reverse=True)                                    # dL/dh_l, all paths
            dv = (g @ B[part].unsqueeze(-1)).squeeze(-1)                                        # dL/d(Δu) [S, B, D]
            dB[part] = (g.transpose(-1, -2) @ v[part].unsqueeze(-1)).squeeze(-1)
            dz = torch.sub(hs, _drive(v[part], B[part], w), out=w).mul_(g)   # exp(ΔA) h_{l-1} ∂L/∂h_l = dL/d(ΔA)
            dA += torch.einsum("sbdn,sbd->dn", dz, delta[part])
            ddelta[part] = torch.einsum("sbdn,dn->sbd", dz, A) + dv * u[part]
            du[part] = dv * delta[part]
        return du, ddelta, dA, dB, dC, None


def held_step(log_a: Tensor, gap: Tensor) -> tuple[Tensor, Tensor]:
    """Ā^g and (Ā^g - 1)/(Ā - 1) for unit-step log Ā (broadcast with gaps g): the exact hold over g.

    One expm1 serves both (Ā^g = 1 + expm1(g log Ā): an absolute error of one rounding, as the
    recurrence itself), and 1/(Ā - 1) is formed at the unit step's (smaller) shape. Where log Ā = 0
    (a step Δ that underflowed) a log Ā of -√tiny stands in: the weight is then g, its limit.
    """
    real = log_a.real if log_a.is_complex() else log_a
    log_a = torch.where(log_a == 0, torch.full_like(log_a, -torch.finfo(real.dtype).tiny ** 0.5), log_a)
    grown = torch.expm1(gap * log_a)
    return grown + 1, grown * (1 / torch.expm1(log_a))


def zoh_weight(log_a: Tensor, gap: Tensor) -> Tensor:
    """(Ā^g - 1) / (Ā - 1) = expm1(g log Ā) / expm1(log Ā), broadcast; g where Ā = 1.

    A layer with unit-gap transition Ā = exp(log Ā) and input matrix B̄ is the exact zero-order hold,
    over one unit, of the continuous system x' = α x + β u with α = log Ā, β = B̄ α / (Ā - 1). Its exact
    hold over a gap g is Ā^g and B̄ times this weight: equal to B̄ at g = 1, → B̄ / (1 - Ā) as g → ∞.
    """
    return held_step(log_a, gap)[1]


def scan_from(a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
    """`linear_scan` started from state h0 [B, ...] instead of zero: a, b [B, L, ...] -> h [B, L, ...]."""
    return linear_scan(a, torch.cat([b[:, :1] + a[:, :1] * h0.unsqueeze(1), b[:, 1:]], dim=1))


def segmented(fn, h0: Tensor, *series: Tensor, segment: int, fixed: tuple = ()) -> Tensor:
    """Run ``fn(h, *parts, *fixed) -> (y, h)`` over segments of ``segment`` steps of ``series`` (all [B, L, ...]),
    each under activation checkpointing: memory holds one segment's scan, not L of them. -> y [B, L, ...]."""
    if series[0].shape[1] <= segment:                                 # one segment: nothing to save by recomputing
        return fn(h0, *series, *fixed)[0]
    ys, h = [], h0
    for s in range(0, series[0].shape[1], segment):
        y, h = checkpoint(fn, h, *(x[:, s:s + segment] for x in series), *fixed, use_reentrant=False)
        ys.append(y)
    return torch.cat(ys, dim=1)


def _zoh_segment(h0: Tensor, u: Tensor, delta: Tensor, gap: Tensor, B: Tensor, C: Tensor, A: Tensor):
    """One segment of the timed scan: states from h0 [B, D, N]; u, delta [B, S, D], gap [B, S], B, C [B, S, N]
    -> (y [B, S, D], last state [B, D, N])."""
    decay, weight = held_step(delta.unsqueeze(-1) * A, gap[..., None, None])   # [B, S, D, N]
    h = scan_from(decay, (delta * u).unsqueeze(-1) * B.unsqueeze(2) * weight, h0)
    return torch.einsum("bsdn,bsn->bsd", h, C), h[:, -1]


@full_precision
def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, segment: int | None = None,
                   gap: Tensor | None = None) -> Tensor:
    """Mamba's selective scan without the D skip: y [B, L, D].

    u, delta: [B, L, D] (Δ already positive); A: [D, N] (negative real parts); B, C: [B, L, N].
    ``segment``: time steps processed at once (default: `segment_length`). ``gap`` [B, L]: time gaps in
    units of one step; position l then takes the exact hold over gap_l of the layer's unit step:
    decay exp(gap_l Δ_l A), input Δ_l B_l u_l · `zoh_weight` (equal gaps of 1 give the plain scan).
    """
    segment = segment or segment_length(u.shape[0] * A.numel(), u.shape[1], u.device)
    if gap is not None:
        return segmented(_zoh_segment, u.new_zeros(u.shape[0], *A.shape), u, delta, gap, B, C, segment=segment,
                         fixed=(A,))
    first = [x.transpose(0, 1).contiguous() for x in (u, delta, B, C)]  # time-first [L, B, ...]
    y = _SelectiveScan.apply(first[0], first[1], A, first[2], first[3], segment)
    return y.transpose(0, 1)
