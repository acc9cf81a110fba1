"""ContiFormer's interval integrals (Chen et al. 2023): the continuous query and the key/value dynamics.

For queries i and keys j of one series, with q(τ) the query path through (t_i, q_i) and k_j(τ), v_j(τ)
the trajectories that start from (k_j, v_j) at τ = t_j, attention needs, per head,

    score_ij = 1/(t_i - t_j) ∫_{t_j}^{t_i} q(τ) · k_j(τ) dτ,      v̄_ij = 1/(t_i - t_j) ∫_{t_j}^{t_i} v_j(τ) dτ

and score_ij = q_i · k_j, v̄_ij = v_j where t_i = t_j (the trajectories have not moved). Two dynamics:

- `ODEDynamics` (``dynamics: mlp``): dk/dτ = f_k(τ, k), dv/dτ = f_v(τ, v), two neural fields. One trajectory
  per key, not one per pair: a forward sweep carries the keys started so far across each observation
  interval of the series (one solve per interval, the state augmented with the moments ∫σ^p k and ∫v
  over the interval, which the query's polynomial coefficients turn into the increments of ∫q·k), and a
  backward sweep does the same towards earlier times; reading the running integrals at every
  observation gives all pairs. N trajectories instead of N².
- `LinearDynamics` (``dynamics: linear``): each head's k and v are complex pairs z with dz/dτ = λ z
  (Re λ < 0, one λ per pair, separate for keys and values), so k_j(τ) = z_j e^{λ(τ - t_j)} and both
  integrals have closed forms: no solver. Over interval m the query is a polynomial in σ ∈ [0, 1], and
  ∫_0^1 σ^p e^{xσ} dσ (`exp_moments`) gives each interval's part G_m. The sum over the intervals between
  t_j and t_i (either direction) of e^{λ(t_m - t_j)} G_m is e^{-λ t_j} (C_i - C_j) with the prefix sums
  C_i = Σ_{m<i} e^{λ t_m} G_m: separable, so the scores need no [N, N, D] tensor (computed in float64
  from each series' first time against cancellation). The value means are z_j (e^{μΔ} - 1)/(μΔ).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .common import unit_interval
from .ncde import path_derivative_coeffs

SERIES_RADIUS = 2.0                  # |x| below which exp_moments sums its Taylor series
SERIES_TERMS = 24                    # enough for |x| < 2 in float64
MEAN_EXP_RADIUS = 0.1                # |x| below which mean_exp sums 5 Taylor terms (error < 1e-8)
MAX_DECAY = 10.0                     # cap on -Re λ per unit time (backward trajectories grow as e^{decay·span})
POWERS = 4                           # coefficients of a cubic query polynomial in σ
MIX_SERIES_RADIUS = 0.1              # |μ| · time span below which `LinearDynamics.mix` sums m's Taylor series
MIX_SERIES_TERMS = 8                 # its terms: truncation below 0.1^8 / 9! ≈ 3e-14


def query_path(q: Tensor, times: Tensor, valid: Tensor, kind: str) -> Tensor:
    """Coefficients [B, N-1, D, P] with q(t_m + σ Δ_m) = Σ_p c_p σ^p on each interval m (σ ∈ [0, 1]).

    ``kind``: ``linear`` (P = 2), or ``hermite`` (P = 4: cubic Hermite with backward differences, as
    torchcde's and PhysioPro's). Padded intervals hold the last value."""
    knots = torch.cat([times[..., None], q], -1)                             # [B, N, 1 + D]
    slope = path_derivative_coeffs(knots, valid, kind)[:, :, 1:]            # [B, N-1, D, 3]: dq/dσ
    powers = 2 if kind == "linear" else POWERS
    scale = torch.arange(1, powers, dtype=q.dtype, device=q.device)
    return torch.cat([q[:, :-1, :, None], slope[..., :powers - 1] / scale], -1)


def polyval(coeffs: Tensor, s) -> Tensor:
    """Σ_p coeffs[..., p] s^p by Horner's rule."""
    out = coeffs[..., -1]
    for p in range(coeffs.shape[-1] - 2, -1, -1):
        out = out * s + coeffs[..., p]
    return out


def exp_moments(x: Tensor, orders: int = POWERS) -> Tensor:
    """[..., orders]: ∫_0^1 σ^p e^{xσ} dσ for p = 0 … orders-1, complex x; stable near x = 0."""
    small = x.abs() < SERIES_RADIUS
    xs = torch.where(small, x, torch.zeros_like(x))                          # series branch argument
    xl = torch.where(small, torch.ones_like(x), x)                           # recursion branch argument
    ex = torch.exp(xl)
    rec = [(ex - 1) / xl]
    for p in range(1, orders):                                               # ψ_p = (e^x - p ψ_{p-1}) / x
        rec.append((ex - p * rec[-1]) / xl)
    series, term = [], torch.ones_like(x)
    terms = [term]
    for n in range(1, SERIES_TERMS):
        term = term * xs / n
        terms.append(term)                                                   # x^n / n!
    for p in range(orders):
        series.append(sum(t / (n + p + 1) for n, t in enumerate(terms)))
    return torch.where(small[..., None], torch.stack(series, -1), torch.stack(rec, -1))


def mean_exp(x: Tensor) -> Tensor:
    """(e^x - 1) / x, the mean of e^{xσ} over σ ∈ [0, 1], with a short Taylor series near 0 (complex x)."""
    small = x.abs() < MEAN_EXP_RADIUS
    xl = torch.where(small, torch.ones_like(x), x)
    xs = torch.where(small, x, torch.zeros_like(x))
    series = 1 + xs * (1 / 2 + xs * (1 / 6 + xs * (1 / 24 + xs / 120)))
    return torch.where(small, series, (torch.exp(xl) - 1) / xl)


def _finish(span: Tensor, integral: Tensor, at_start: Tensor) -> Tensor:
    """integral / span where span ≠ 0, else the value at the start. span [B, N, N], others [B, N, N, K]."""
    moved = span != 0
    safe = torch.where(moved, span, torch.ones_like(span))
    return torch.where(moved[..., None], integral / safe[..., None], at_start)


def start_scores(q: Tensor, k: Tensor, heads: int) -> Tensor:
    """q_i · k_j per head [B, N_i, N_j, H] from q, k [B, N, D]."""
    return torch.einsum("bihe,bjhe->bijh", q.unflatten(-1, (heads, -1)), k.unflatten(-1, (heads, -1)))


class TimeField(nn.Module):
    """f(τ, y) = W2 tanh(W1 y + w τ + b1) + b2; τ broadcasts against y's leading shape."""

    def __init__(self, width: int, hidden: int, zero_init: bool = False):
        super().__init__()
        self.inner = nn.Linear(width + 1, hidden)
        self.outer = nn.Linear(hidden, width)
        if zero_init:                                 # trajectories start constant: a Transformer at init
            nn.init.zeros_(self.outer.weight)
            nn.init.zeros_(self.outer.bias)

    def forward(self, tau: Tensor, y: Tensor) -> Tensor:
        return self.outer(torch.tanh(self.inner(torch.cat([y, tau[..., None].expand(*y.shape[:-1], 1)], -1))))


class _Interval(nn.Module):
    """dY/ds over one interval for the keys under way: Y = [k, v, ∫σ^p k ds (p < P), ∫v ds] [B, J, (3 + P) D].

    s ∈ [0, 1] runs from ``t0`` [B] over the signed length ``dt`` [B], σ = s (or 1 - s backwards) is the
    interval's own coordinate; ``backward`` is a bool, or a [B, 1, 1] 0/1 tensor for mixed rows. The
    query enters only after the solve, through the moments ∫σ^p k, so the field holds no tensor that
    needs a gradient besides its parameters (the adjoint sees them all)."""

    def __init__(self, dyn, t0: Tensor, dt: Tensor, powers: int, backward: bool | Tensor):
        super().__init__()
        self.dyn, self.t0, self.dt, self.powers, self.backward = dyn, t0, dt, powers, backward

    def flow(self, s: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """d[k, v]/ds [B, J, 2D] of the keys' states alone."""
        tau = (self.t0 + s * self.dt)[:, None].expand(k.shape[:2])          # [B, J]
        return self.dt[:, None, None] * torch.cat([self.dyn.key(tau, k), self.dyn.value(tau, v)], -1)

    def forward(self, s: Tensor, y: Tensor) -> Tensor:
        d = y.shape[-1] // (3 + self.powers)
        k, v = y[..., :d], y[..., d:2 * d]
        sigma = s + self.backward * (1 - 2 * s)                              # 1 - s on rows run backwards
        moments = [k * sigma**p for p in range(self.powers)]                 # P x [B, J, D]
        return torch.cat([self.flow(s, k, v), *moments, v], -1)


class ODEDynamics(nn.Module):
    """Keys and values follow their own fields ``key(τ, k)``, ``value(τ, v)``; integrals by one forward
    and one backward sweep of the configured solver. ``checkpoint``: keep only each interval's starting
    state for backward and solve the interval again there (memory of the states, not of the stages)."""

    def __init__(self, key: nn.Module, value: nn.Module, checkpoint: bool = False):
        super().__init__()
        self.key, self.value, self.checkpoint = key, value, checkpoint

    def _sweep(self, solver, coeffs, k, v, times, heads: int, backward: bool) -> Tensor:
        """Integrals [B, N_i, N_j, H + D] for the pairs the sweep reaches (j ≤ i forward, j ≥ i backward)."""
        b, n, d = k.shape
        powers = coeffs.shape[-1]                                            # moments the query needs
        order = range(n - 1, -1, -1) if backward else range(n)
        state = sums = None
        rows = [None] * n
        for step, i in enumerate(order):
            new, zero = torch.cat([k[:, i:i + 1], v[:, i:i + 1]], -1), k.new_zeros(b, 1, heads + d)
            def join(new, old):
                return torch.cat([new, old] if backward else [old, new], 1)
            state = new if state is None else join(new, state)               # [B, J, 2D]: k_j(t_i), v_j(t_i)
            sums = zero if sums is None else join(zero, sums)                # [B, J, H + D]: ∫q·k, ∫v since t_j
            rows[i] = sums
            if step == n - 1:
                break
            nxt = i - 1 if backward else i + 1                               # the grid point reached next
            dt = times[:, nxt] - times[:, i]                                 # [B], signed
            step_args = (solver, _Interval(self, times[:, i], dt, powers, backward), heads)
            c = coeffs[:, min(i, nxt)]                                       # [B, D, P]
            if self.checkpoint and torch.is_grad_enabled():                   # recomputed in backward
                state, gained = checkpoint(self._advance, *step_args, state, c, use_reentrant=False)
            else:
                state, gained = self._advance(*step_args, state, c)
            sums = sums + gained
        pad = [F.pad(r, (0, 0, n - r.shape[1], 0) if backward else (0, 0, 0, n - r.shape[1])) for r in rows]
        return torch.stack(pad, 1)                                           # [B, N_i, N_j, H + D]

    @staticmethod
    def _advance(solver, field: _Interval, heads: int, state: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """One interval: the keys' state [B, J, 2D] at its end, and the gains of ∫q·k, ∫v [B, J, H + D]."""
        b, j, width = state.shape
        d, powers = width // 2, c.shape[-1]
        y0 = torch.cat([state, state.new_zeros(b, j, (powers + 1) * d)], -1)
        y1 = solver(field, y0, unit_interval(y0))[-1]
        moments = y1[..., 2 * d:].unflatten(-1, (powers + 1, d))             # [B, J, P + 1, D]
        qk = torch.einsum("bdp,bjpd->bjd", c, moments[:, :, :powers]).unflatten(-1, (heads, -1)).sum(-1)
        return y1[..., :2 * d], field.dt[:, None, None] * torch.cat([qk, moments[:, :, powers]], -1)

    def attend(self, solver, coeffs, q, k, v, times, heads: int, causal: bool, weigh) -> Tensor:
        """Σ_j a_ij v̄_ij [B, N_i, D] with a = ``weigh(scores)`` [B, N_i, N_j, H]."""
        b, n, d = v.shape
        scores, values = self.integrals(solver, coeffs, q, k, v, times, heads, causal)
        out = torch.einsum("bijh,bijhe->bihe", weigh(scores), values.view(b, n, n, heads, -1))
        return out.reshape(b, n, d)

    def integrals(self, solver, coeffs, q, k, v, times, heads: int, causal: bool) -> tuple[Tensor, Tensor]:
        n = k.shape[1]
        fwd = self._sweep(solver, coeffs, k, v, times, heads, backward=False)
        if causal:
            both = fwd
        else:
            bwd = self._sweep(solver, coeffs, k, v, times, heads, backward=True)
            lower = torch.ones(n, n, dtype=torch.bool, device=k.device).tril()
            both = torch.where(lower[:, :, None], fwd, bwd)
        span = times[:, :, None] - times[:, None, :]                         # t_i - t_j
        scores = _finish(span, both[..., :heads], start_scores(q, k, heads))
        values = _finish(span, both[..., heads:], v[:, None].expand(-1, n, -1, -1))
        return scores, values


class LinearDynamics(nn.Module):
    """dz/dτ = λ z on complex pairs of each head's features (keys and values each their own λ)."""

    def __init__(self, width: int, heads: int, zero_init: bool = False):
        super().__init__()
        self.heads, pairs = heads, width // heads // 2
        freq = math.pi * torch.arange(pairs, dtype=torch.float32).expand(heads, pairs)   # S4D-Lin-like
        raw = torch.full((heads, pairs), math.log(math.expm1(0.5)))         # decay 0.5 per unit time
        if zero_init:                                                         # λ ≈ 0: constant trajectories
            freq, raw = torch.zeros_like(freq), torch.full_like(raw, -30.0)
        self.key_freq, self.key_decay = nn.Parameter(freq.clone()), nn.Parameter(raw.clone())
        self.value_freq, self.value_decay = nn.Parameter(freq.clone()), nn.Parameter(raw.clone())

    @staticmethod
    def _rate(freq: Tensor, raw: Tensor, like: Tensor) -> Tensor:
        real = torch.promote_types(like.dtype, torch.float32)               # float32 at least (autocast)
        return torch.complex(-F.softplus(raw.to(real)).clamp(max=MAX_DECAY), freq.to(real))   # [H, P]

    def _complex(self, x: Tensor) -> Tensor:
        """[..., D] real (per head: real parts, then imaginary parts) -> [..., H, P] complex."""
        x = x.to(torch.promote_types(x.dtype, torch.float32)).unflatten(-1, (self.heads, 2, -1))
        return torch.complex(x[..., 0, :], x[..., 1, :])

    def _real(self, z: Tensor) -> Tensor:
        return torch.stack([z.real, z.imag], -2).flatten(-3)               # [..., H, P] -> [..., D]

    def key(self, tau: Tensor, k: Tensor) -> Tensor:
        return self._real(self._rate(self.key_freq, self.key_decay, k) * self._complex(k)).to(k.dtype)

    def value(self, tau: Tensor, v: Tensor) -> Tensor:
        return self._real(self._rate(self.value_freq, self.value_decay, v) * self._complex(v)).to(v.dtype)

    def scores(self, coeffs, q, k, times, heads: int) -> Tensor:
        """Interval means of q(τ)·k_j(τ) per head [B, N_i, N_j, H] (unscaled), in closed form."""
        lam = self._rate(self.key_freq, self.key_decay, k)                  # [H, P]
        t = times.to(lam.real.dtype)
        dt = t.diff(dim=1)                                                   # [B, N-1]
        qc = self._complex(coeffs.transpose(-1, -2)).conj()                  # [B, N-1, powers, H, P]
        moments = exp_moments(lam * dt[..., None, None], coeffs.shape[-1])   # [B, N-1, H, P, powers]
        g = dt[..., None, None] * (qc.permute(0, 1, 3, 4, 2) * moments).sum(-1)   # [B, N-1, H, P]: ∫ over interval m
        # Σ_{m from j to i} e^{λ(t_m - t_j)} G_m = e^{-λ t_j} (C_i - C_j) with C_i = Σ_{m<i} e^{λ t_m} G_m:
        # separable, so no [N, N, D] tensor; in float64 from the series' first time, against cancellation
        rel = (t - t[:, :1]).double()                                        # [B, N]
        lam64 = lam.to(torch.complex128)
        grown = torch.exp(lam64 * rel[:, :-1, None, None]) * g.to(torch.complex128)     # [B, N-1, H, P]
        c = torch.cat([torch.zeros_like(grown[:, :1]), grown.cumsum(1)], 1)  # [B, N, H, P]: C_i
        a = self._complex(k).to(torch.complex128) * torch.exp(-lam64 * rel[..., None, None])   # [B, N, H, P]
        own = (a * c).sum(-1)                                                # [B, N_j, H]: a_j · C_j
        integral = (torch.einsum("bjhp,bihp->bijh", a, c) - own[:, None]).real.to(t.dtype)   # [B, N_i, N_j, H]
        span = t[:, :, None] - t[:, None, :]                                 # t_i - t_j
        return _finish(span, integral, start_scores(q.to(t.dtype), k.to(t.dtype), heads)).to(q.dtype)

    def mix(self, attn: Tensor, v: Tensor, times: Tensor) -> Tensor:
        """Σ_j a_ij v̄_ij [B, N_i, D] for weights attn [B, N_i, N_j, H], without the [N, N, D] value means.

        v̄_ij = z_j m(μ Δ_ij), m(x) = (e^x - 1) / x, Δ_ij = t_i - t_j. Where |μ| · (the batch's time span) is
        at least ``MIX_SERIES_RADIUS``, m(μΔ) = (e^{μ t_i} e^{-μ t_j} - 1) / (μ Δ) splits the sum into
        e^{μ t_i} Σ_j (a_ij / Δ_ij) e^{-μ t_j} z_j - Σ_j (a_ij / Δ_ij) z_j, over 1 / μ, plus Σ_j a_ij z_j over
        the pairs with Δ = 0; below it, m's Taylor series with Δ^n expanded binomially in t_i and t_j. All in
        float64 from the series' first time."""
        z = self._complex(v).to(torch.complex128)                            # [B, N, H, P]
        mu = self._rate(self.value_freq, self.value_decay, v).to(torch.complex128)   # [H, P]
        rel = (times - times[:, :1]).double()                                # [B, N]
        r = rel[..., None, None]                                             # [B, N, 1, 1]
        a = attn.double()
        series = mu.abs() * rel.abs().amax().clamp_min(1e-30) < MIX_SERIES_RADIUS   # [H, P]
        out = 0
        if series.any():                                                     # Σ_n μ^n/(n+1)! Σ_j a_ij Δ_ij^n z_j
            sums = [torch.einsum("bijh,bjhp->bihp", a.to(z.dtype), (-r) ** m * z) for m in range(MIX_SERIES_TERMS)]
            near = sum(mu ** n / math.factorial(n + 1) * sum(math.comb(n, j) * r ** j * sums[n - j]
                                                             for j in range(n + 1)) for n in range(MIX_SERIES_TERMS))
            out = torch.where(series, near, out)
        if not series.all():
            safe = torch.where(series, 1.0, mu)                              # no 1 / μ where the series is used
            span = rel[:, :, None] - rel[:, None, :]                         # [B, N, N]: Δ_ij
            moved = (span != 0)[..., None]                                   # [B, N, N, 1]
            inverse = torch.where(moved, a / torch.where(moved, span[..., None], 1.0), 0.0).to(z.dtype)
            still = torch.where(moved, 0.0, a).to(z.dtype)                   # weights of the pairs with Δ = 0
            far = (torch.exp(safe * r) * torch.einsum("bijh,bjhp->bihp", inverse, torch.exp(-safe * r) * z)
                   - torch.einsum("bijh,bjhp->bihp", inverse, z)) / safe + torch.einsum("bijh,bjhp->bihp", still, z)
            out = torch.where(series, out, far)
        return self._real(out).to(v.dtype)                                   # [B, N, D]

    def attend(self, solver, coeffs, q, k, v, times, heads: int, causal: bool, weigh) -> Tensor:
        """Σ_j a_ij v̄_ij [B, N_i, D] with a = ``weigh(scores)``: closed-form scores, separable mixing."""
        return self.mix(weigh(self.scores(coeffs, q, k, times, heads)), v, times)

    def integrals(self, solver, coeffs, q, k, v, times, heads: int, causal: bool) -> tuple[Tensor, Tensor]:
        """Scores [B, N_i, N_j, H] and the value means v̄_ij [B, N_i, N_j, D] themselves (for checks)."""
        mu = self._rate(self.value_freq, self.value_decay, k)                # [H, P]
        t = times.to(mu.real.dtype)
        span = t[:, :, None] - t[:, None, :]                                 # t_i - t_j
        w = self._complex(v)[:, None] * mean_exp(mu * span[..., None, None])  # [B, N_i, N_j, H, P]
        return self.scores(coeffs, q, k, times, heads), self._real(w).to(v.dtype)
