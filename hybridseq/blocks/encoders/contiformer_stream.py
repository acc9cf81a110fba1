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
    top = torch.maximum(a[0], b[0])
    ea, eb = torch.exp(a[0] - top), torch.exp(b[0] - top)
    return top, a[1] * ea + b[1] * eb, a[2] * ea[..., None] + b[2] * eb[..., None]


class _Sweeps:
    """Both sweeps at once, in sweep order: rows [:B] run forwards in time, rows [B:] (unless causal) run
    backwards over the series reversed, so at step s every row's query is its s-th point and its keys
    are points 0 … s, carried newest last. The backward rows read out only the keys after the query
    (the forward rows have the query's own time)."""

    def __init__(self, dyn, solver, coeffs, q, k, v, times, valid, heads, scale, causal):
        self.dyn, self.solver, self.heads, self.scale, self.causal = dyn, solver, heads, scale, causal
        order = self.order
        self.coeffs, self.q, self.k, self.v = order(coeffs), order(q), order(k), order(v)
        self.times, self.valid = order(times), order(valid)
        b = q.shape[0]
        back = torch.zeros(self.q.shape[0], dtype=q.dtype, device=q.device)
        back[b:] = 1
        self.back = back[:, None, None]                                      # [R, 1, 1]
        self.reads_own = back == 0                                           # [R]: the query's own key read

    def order(self, x: Tensor) -> Tensor:
        """[B, N, ...] in time order -> [R, N, ...] in sweep order (the backward rows reversed)."""
        return x if self.causal else torch.cat([x, x.flip(1)], 0)

    def unorder(self, x: Tensor) -> Tensor:
        """[R, N, ...] in sweep order -> the sum over both sweeps [B, N, ...] in time order."""
        if self.causal:
            return x
        b = x.shape[0] // 2
        return x[:b] + x[b:].flip(1)

    def read(self, step: int, sums: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Scores [R, J, H], value means [R, J, D], spans and the keys read [R, J] of the step's queries,
        J = step + 1."""
        keep = self.valid[:, :step + 1].clone()
        keep[:, step] &= self.reads_own
        span = self.times[:, step:step + 1] - self.times[:, :step + 1]       # t_i - t_j, signed
        scores, values = _readout(sums, self.q[:, step], self.k[:, :step + 1], self.v[:, :step + 1], span, keep,
                                  self.heads, self.scale)
        return scores, values, span, keep

    def interval(self, step: int) -> tuple[_Interval, Tensor]:
        """The field from this step's point to the next, and the query's coefficients on it [R, D, P]."""
        field = _Interval(self.dyn, self.times[:, step], self.times[:, step + 1] - self.times[:, step],
                          self.coeffs.shape[-1], self.back)
        return field, self.coeffs[:, step]

    def run(self):
        """Statistics (max, normaliser [R, N, H], weighted sum [R, N, H, E]) and the carry at the end."""
        r, n, d = self.k.shape
        state, sums = self.k.new_zeros(r, 0, 2 * d), self.k.new_zeros(r, 0, self.heads + d)
        stats = []
        for step in range(n):
            state = torch.cat([state, torch.cat([self.k[:, step:step + 1], self.v[:, step:step + 1]], -1)], 1)
            sums = torch.cat([sums, sums.new_zeros(r, 1, self.heads + d)], 1)
            stats.append(_partial(*self.read(step, sums)[:2], self.heads))
            if step < n - 1:
                field, c = self.interval(step)
                state, gained = ODEDynamics._advance(self.solver, field, self.heads, state, c)
                sums = sums + gained
        return [torch.stack(x, 1) for x in zip(*stats)], state, sums

    def read_grad(self, step: int, sums: Tensor, lse: Tensor, grad: Tensor, delta: Tensor):
        """The readout's vector-Jacobian product at this step: gradients of the running integrals
        [R, J, H + D], of q_i [R, D] and of the keys' k_j, v_j [R, J, D], given the output's gradient
        ``grad`` [R, D], the log-normalisers ``lse`` [R, H] and δ = grad · output [R, H]."""
        heads, j = self.heads, step + 1
        q_i, k_j = self.q[:, step], self.k[:, :j]
        scores, values, span, keep = self.read(step, sums)
        weights = torch.exp(scores - lse[:, None])                           # [R, J, H]; 0 where masked
        g = grad.unflatten(-1, (heads, -1))[:, None]                         # [R, 1, H, E]
        vh = values.unflatten(-1, (heads, -1))                               # [R, J, H, E]
        d_scores = weights * ((vh * g).sum(-1) - delta[:, None]) * self.scale * keep[..., None]   # masked: none
        d_values = (weights[..., None] * g).flatten(-2)                      # [R, J, D]
        moved = (span != 0)[..., None]
        inverse = 1 / torch.where(moved, span[..., None], 1.0)
        g_sums = torch.where(moved, torch.cat([d_scores, d_values], -1) * inverse, 0.0)
        held = torch.where(moved, 0.0, d_scores)                             # [R, J, H]: scores q_i · k_j
        g_q = torch.einsum("bjh,bjhe->bhe", held, k_j.unflatten(-1, (heads, -1))).flatten(-2)
        g_k = (held[..., None] * q_i.unflatten(-1, (heads, -1))[:, None]).flatten(-2)
        return g_sums, g_q, g_k, torch.where(moved, 0.0, d_values)

    def unwind(self, state, sums, lse, grad, delta, params, out: dict) -> None:
        """Accumulate into ``out`` (sweep order) the gradients of q, k, v, coeffs and ``params`` given the
        outputs' gradient ``grad`` [R, N, D], the log-normalisers ``lse`` [R, N, H] and δ = grad · output."""
        d = self.k.shape[-1]
        adj_state, adj_sums = torch.zeros_like(state), torch.zeros_like(sums)
        for step in range(self.k.shape[1] - 1, -1, -1):
            g_sums, g_q, g_k, g_v = self.read_grad(step, sums, lse[:, step], grad[:, step], delta[:, step])
            adj_sums += g_sums
            out["q"][:, step] += g_q
            out["k"][:, :step + 1] += g_k
            out["v"][:, :step + 1] += g_v
            out["k"][:, step] += adj_state[:, -1, :d]                        # the key that joined here
            out["v"][:, step] += adj_state[:, -1, d:]
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
            out["coeffs"][:, step - 1] += got[1]
            for acc, g_p in zip(out["params"], got[2:]):
                if g_p is not None:
                    acc += g_p
            sums = sums - gained.detach()
            state = start.detach()

    def _start(self, field: _Interval, end: Tensor) -> Tensor:
        """The keys' state at the interval's start [R, J, 2D], solved backwards from its end."""
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
        sweeps = _Sweeps(dyn, solver, coeffs, q, k, v, times, valid, heads, scale, causal)
        (top, norm, acc), state, sums = sweeps.run()                        # [R, N, H] x 2, [R, N, H, E]
        if not causal:                                                       # merge the two sweeps per query
            b = q.shape[0]
            top, norm, acc = _merge((top[:b], norm[:b], acc[:b]), (top[b:].flip(1), norm[b:].flip(1), acc[b:].flip(1)))
        out = (acc / norm[..., None]).flatten(-2)                           # [B, N, D]
        ctx.setup = dyn, solver, heads, scale, causal
        ctx.save_for_backward(times, valid, coeffs, q, k, v, top + norm.log(), out, state, sums)
        return out

    @staticmethod
    def backward(ctx, grad):
        dyn, solver, heads, scale, causal = ctx.setup
        times, valid, coeffs, q, k, v, lse, out, state, sums = ctx.saved_tensors
        sweeps = _Sweeps(dyn, solver, coeffs, q, k, v, times, valid, heads, scale, causal)
        params = list(dyn.parameters())
        delta = (grad * out).unflatten(-1, (heads, -1)).sum(-1)             # [B, N, H]
        order = sweeps.order
        acc = {"q": torch.zeros_like(sweeps.q), "k": torch.zeros_like(sweeps.k), "v": torch.zeros_like(sweeps.v),
               "coeffs": torch.zeros_like(sweeps.coeffs), "params": [torch.zeros_like(p) for p in params]}
        sweeps.unwind(state, sums, order(lse), order(grad), order(delta), params, acc)
        grads = [sweeps.unorder(acc[name]) for name in ("coeffs", "q", "k", "v")]
        return (None,) * 7 + (*grads, *acc["params"])


def streamed_attention(dyn: ODEDynamics, solver, coeffs, q, k, v, times, valid, heads: int, causal: bool,
                       scale: float) -> Tensor:
    """Σ_j a_ij v̄_ij [B, N_i, D], a = softmax_j(scale · score_ij) over the valid keys (j ≤ i if causal)."""
    wide = torch.promote_types(v.dtype, torch.float32)
    with torch.autocast(v.device.type, enabled=False):
        out = _Streamed.apply(dyn, solver, heads, scale, causal, times.to(wide), valid,
                              *(t.to(wide) for t in (coeffs, q, k, v)), *dyn.parameters())
    return out.to(v.dtype)
