"""Streamed ContiFormer attention for ``dynamics: mlp`` (``stream: true``): memory linear in T.

`ODEDynamics` keeps every pair's integrals, [N, N, H + D], and autograd keeps each interval's state of
all keys under way: both quadratic in T. Streaming reads the attention out at each observation as a
sweep passes it: per query and head an online softmax (running maximum, normaliser and weighted sum of
the value means, merged across the forward and the backward sweep), so no [N, N, ·] tensor is formed.
Backward walks each sweep in reverse: at each observation the readout's vector-Jacobian product is
added to the adjoint of the running integrals; across each interval the keys' starting state is
recovered by solving their fields backwards over it (the adjoint method's reconstruction), the
interval is solved again from there under autograd, and its vector-Jacobian product carries the
adjoint on. Kept between forward and backward: q, k, v, the query path, the outputs, each query's
log-normaliser and the sweeps' last states, O(N · D). Gradients equal backpropagation up to the
reconstruction error (tested); the times get none. Runs in float32 or wider (autocast is turned off
inside: the re-solves in backward must see the forward's precision).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .contiformer_paths import ODEDynamics, _finish, _Interval, start_scores

REVERSED = (1.0, 0.0)                # s from the interval's end back to its start


def _order(n: int, backward: bool) -> list[int]:
    return list(range(n - 1, -1, -1)) if backward else list(range(n))


def _readout(sums, q_i, k_j, v_j, span, keep, heads: int, scale: float) -> tuple[Tensor, Tensor]:
    """Scaled, masked scores [B, J, H] and value means [B, J, D] of one query against keys j.

    sums [B, J, H + D] (∫q·k and ∫v since t_j), q_i [B, D], k_j, v_j [B, J, D], span = t_i - t_j [B, J]."""
    start = start_scores(q_i[:, None], k_j, heads)[:, 0]                    # [B, J, H]: q_i · k_j
    scores = _finish(span, sums[..., :heads], start) * scale
    scores = scores.masked_fill(~keep[..., None], torch.finfo(scores.dtype).min)
    return scores, _finish(span, sums[..., heads:], v_j)


def _partial(scores: Tensor, values: Tensor, heads: int) -> tuple[Tensor, Tensor, Tensor]:
    """Online-softmax statistics over keys j: maximum, normaliser [B, H] and weighted sum [B, H, E]."""
    top = scores.amax(1)
    w = torch.exp(scores - top[:, None])
    return top, w.sum(1), torch.einsum("bjh,bjhe->bhe", w, values.unflatten(-1, (heads, -1)))


def _merge(a, b):
    if b is None:
        return a
    top = torch.maximum(a[0], b[0])
    ea, eb = torch.exp(a[0] - top), torch.exp(b[0] - top)
    return top, a[1] * ea + b[1] * eb, a[2] * ea[..., None] + b[2] * eb[..., None]


class _Sweep:
    """One sweep's fixed inputs: the keys are carried newest last; the backward sweep reads out only the
    keys after the query (the forward sweep has the query's own time)."""

    def __init__(self, dyn, solver, coeffs, q, k, v, times, valid, heads, scale, backward):
        self.dyn, self.solver, self.coeffs, self.q, self.k, self.v = dyn, solver, coeffs, q, k, v
        self.times, self.valid, self.heads, self.scale, self.backward = times, valid, heads, scale, backward
        self.order = _order(k.shape[1], backward)

    def keys(self, step: int) -> Tensor:
        """Indices of the keys read out at this step."""
        return torch.as_tensor(self.order[:step if self.backward else step + 1], device=self.k.device)

    def read(self, step: int, sums: Tensor, q_i: Tensor, k_j: Tensor, v_j: Tensor):
        i, idx = self.order[step], self.keys(step)
        span = self.times[:, i:i + 1] - self.times[:, idx]                   # [B, J]
        return _readout(sums[:, :len(idx)], q_i, k_j, v_j, span, self.valid[:, idx], self.heads, self.scale)

    def read_grad(self, step: int, sums: Tensor, lse: Tensor, grad: Tensor, delta: Tensor):
        """The readout's vector-Jacobian product at this step: gradients of the running integrals
        [B, J, H + D], of q_i [B, D] and of the keys' k_j, v_j [B, J, D], given the output's gradient
        ``grad`` [B, D], the log-normalisers ``lse`` [B, H] and δ = grad · output [B, H]."""
        i, idx = self.order[step], self.keys(step)
        heads, q_i, k_j, v_j = self.heads, self.q[:, i], self.k[:, idx], self.v[:, idx]
        scores, values = self.read(step, sums, q_i, k_j, v_j)
        span = self.times[:, i:i + 1] - self.times[:, idx]                   # [B, J]
        weights = torch.exp(scores - lse[:, None])                           # [B, J, H]
        g = grad.unflatten(-1, (heads, -1))[:, None]                         # [B, 1, H, E]
        vh = values.unflatten(-1, (heads, -1))                               # [B, J, H, E]
        d_scores = weights * ((vh * g).sum(-1) - delta[:, None]) * self.scale * self.valid[:, idx, None]
        d_values = (weights[..., None] * g).flatten(-2)                      # [B, J, D]
        moved = (span != 0)[..., None]
        inverse = 1 / torch.where(moved, span[..., None], 1.0)
        g_sums = torch.where(moved, torch.cat([d_scores, d_values], -1) * inverse, 0.0)
        held = torch.where(moved, 0.0, d_scores)                             # [B, J, H]: scores q_i · k_j
        g_q = torch.einsum("bjh,bjhe->bhe", held, k_j.unflatten(-1, (heads, -1))).flatten(-2)
        g_k = (held[..., None] * q_i.unflatten(-1, (heads, -1))[:, None]).flatten(-2)
        return g_sums, g_q, g_k, torch.where(moved, 0.0, d_values)

    def interval(self, step: int) -> tuple[_Interval, Tensor]:
        """The field from this step's point to the next, and the query's coefficients on it [B, D, P]."""
        i, nxt = self.order[step], self.order[step + 1]
        field = _Interval(self.dyn, self.times[:, i], self.times[:, nxt] - self.times[:, i],
                          self.coeffs.shape[-1], self.backward)
        return field, self.coeffs[:, min(i, nxt)]

    def run(self):
        """Per query its partial statistics (None without keys) and the carry at the end."""
        b, n, d = self.k.shape
        state, sums = self.k.new_zeros(b, 0, 2 * d), self.k.new_zeros(b, 0, self.heads + d)
        partials = [None] * n
        for step, i in enumerate(self.order):
            state = torch.cat([state, torch.cat([self.k[:, i:i + 1], self.v[:, i:i + 1]], -1)], 1)
            sums = torch.cat([sums, sums.new_zeros(b, 1, self.heads + d)], 1)
            idx = self.keys(step)
            if len(idx):
                partials[i] = _partial(*self.read(step, sums, self.q[:, i], self.k[:, idx], self.v[:, idx]),
                                       self.heads)
            if step < n - 1:
                field, c = self.interval(step)
                state, gained = ODEDynamics._advance(self.solver, field, self.heads, state, c)
                sums = sums + gained
        return partials, state, sums

    def unwind(self, state, sums, lse, grad, delta, params, out: dict) -> None:
        """Accumulate into ``out`` the gradients of q, k, v, coeffs and ``params`` given the outputs'
        gradient ``grad`` [B, N, D], the log-normalisers ``lse`` [B, N, H] and δ = grad · output [B, N, H]."""
        d = self.k.shape[-1]
        adj_state, adj_sums = torch.zeros_like(state), torch.zeros_like(sums)
        for step in range(len(self.order) - 1, -1, -1):
            i, idx = self.order[step], self.keys(step)
            if len(idx):
                g_sums, g_q, g_k, g_v = self.read_grad(step, sums, lse[:, i], grad[:, i], delta[:, i])
                adj_sums[:, :len(idx)] += g_sums
                out["q"][:, i] += g_q
                out["k"].index_add_(1, idx, g_k)
                out["v"].index_add_(1, idx, g_v)
            out["k"][:, i] += adj_state[:, -1, :d]                           # the key that joined here
            out["v"][:, i] += adj_state[:, -1, d:]
            if step == 0:
                break
            state, sums, adj_state, adj_sums = state[:, :-1], sums[:, :-1], adj_state[:, :-1], adj_sums[:, :-1]
            field, c = self.interval(step - 1)
            start = self._start(field, state)                               # the interval's starting state
            with torch.enable_grad():
                start, c = start.detach().requires_grad_(), c.detach().requires_grad_()
                end, gained = ODEDynamics._advance(self.solver, field, self.heads, start, c)
                got = torch.autograd.grad((end, gained), (start, c, *params), (adj_state, adj_sums),
                                          allow_unused=True)
            adj_state = got[0]
            out["coeffs"][:, min(self.order[step - 1], i)] += got[1]
            for acc, g_p in zip(out["params"], got[2:]):
                if g_p is not None:
                    acc += g_p
            sums = sums - gained.detach()
            state = start.detach()

    def _start(self, field: _Interval, end: Tensor) -> Tensor:
        """The keys' state at the interval's start [B, J, 2D], solved backwards from its end."""
        s = torch.tensor(REVERSED, dtype=end.dtype, device=end.device)
        return self.solver(_States(field), end, s)[-1]


class _States(nn.Module):
    """The interval's field restricted to the keys' states [k, v] (no running integrals)."""

    def __init__(self, field: _Interval):
        super().__init__()
        self.field = field

    def forward(self, s: Tensor, y: Tensor) -> Tensor:
        d = y.shape[-1] // 2
        return self.field.flow(s, y[..., :d], y[..., d:])


class _Streamed(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dyn, solver, heads, scale, causal, times, valid, coeffs, q, k, v, *params):
        directions = (False,) if causal else (False, True)
        ends, stats = [], None
        for backward in directions:
            partials, state, sums = _Sweep(dyn, solver, coeffs, q, k, v, times, valid, heads, scale,
                                           backward).run()
            ends += [state, sums]
            stats = partials if stats is None else [_merge(a, b) for a, b in zip(stats, partials)]
        top, norm, acc = (torch.stack(s, 1) for s in zip(*stats))           # [B, N, H], [B, N, H], [B, N, H, E]
        out = (acc / norm[..., None]).flatten(-2)                           # [B, N, D]
        ctx.setup = dyn, solver, heads, scale, directions
        ctx.save_for_backward(times, valid, coeffs, q, k, v, top + norm.log(), out, *ends)
        return out

    @staticmethod
    def backward(ctx, grad):
        dyn, solver, heads, scale, directions = ctx.setup
        times, valid, coeffs, q, k, v, lse, out, *ends = ctx.saved_tensors
        params = list(dyn.parameters())
        delta = (grad * out).unflatten(-1, (heads, -1)).sum(-1)             # [B, N, H]
        acc = {"q": torch.zeros_like(q), "k": torch.zeros_like(k), "v": torch.zeros_like(v),
               "coeffs": torch.zeros_like(coeffs), "params": [torch.zeros_like(p) for p in params]}
        for n, backward in enumerate(directions):
            sweep = _Sweep(dyn, solver, coeffs, q, k, v, times, valid, heads, scale, backward)
            sweep.unwind(ends[2 * n], ends[2 * n + 1], lse, grad, delta, params, acc)
        return (None,) * 7 + (acc["coeffs"], acc["q"], acc["k"], acc["v"], *acc["params"])


def streamed_attention(dyn: ODEDynamics, solver, coeffs, q, k, v, times, valid, heads: int, causal: bool,
                       scale: float) -> Tensor:
    """Σ_j a_ij v̄_ij [B, N_i, D], a = softmax_j(scale · score_ij) over the valid keys (j ≤ i if causal)."""
    wide = torch.promote_types(v.dtype, torch.float32)
    with torch.autocast(v.device.type, enabled=False):
        out = _Streamed.apply(dyn, solver, heads, scale, causal, times.to(wide), valid,
                              *(t.to(wide) for t in (coeffs, q, k, v)), *dyn.parameters())
    return out.to(v.dtype)
