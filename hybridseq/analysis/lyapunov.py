"""Lyapunov exponents of a depth flow.

**Finite-time exponents** (`ftle`, the default of `analyze`): for the map Φ: x(0) ↦ x(T),
FTLE_i = log σ_i(∂Φ/∂x(0)) / T, the logarithms of the singular values of the flow's Jacobian (Haller,
"Lagrangian coherent structures", 2015). Small systems build J densely (one vector–Jacobian product per
basis vector); larger ones run block subspace iteration on JᵀJ with ``torch.func.jvp`` / ``vjp`` and
read the σ_i from the Rayleigh–Ritz projection, stopping when they change by less than ``tol``.

**Asymptotic exponents** (`lyapunov_exponents`, Benettin et al. 1980): k tangents pushed through each
step by ``jvp`` and re-orthonormalised by QR; Σ log|diag R| / T converges to the exponents only as
T → ∞, so it warns (`LyapunovConvergenceWarning`) when the estimate over the first half of the horizon
differs from the whole by more than ``tol``.

Each batch element is its own system (the maps must not mix samples); a ``mask`` keeps the tangents
on the valid entries only.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Callable

import torch
from torch import Tensor
from torch.func import jvp, vjp, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..solvers.tableau import RK4, Tableau
from ..solvers.tableau import step as rk_step

TINY = 1e-30
DENSE_MAX = 256          # `ftle(method="auto")` builds J densely up to this many entries per sample
OVERSAMPLE = 4           # extra subspace vectors: convergence then goes with σ_{k+p+1}/σ_k, not σ_{k+1}/σ_k
# torch's first forward-mode AD call scripts its JVP decompositions with the deprecated torch.jit.script
TORCH_JIT_NOTICE = r"`torch\.jit\.script` is deprecated"


class LyapunovConvergenceWarning(UserWarning):
    """Benettin's estimate has not settled over the given horizon."""


@contextlib.contextmanager
def _autodiff_ready():
    with sdpa_kernel(SDPBackend.MATH), warnings.catch_warnings():        # the fused kernels lack forward AD
        warnings.filterwarnings("ignore", TORCH_JIT_NOTICE, DeprecationWarning)
        yield


def rk_map(field: Callable, steps: int, t0: float = 0.0, t1: float = 1.0, tableau: Tableau = RK4) -> Callable:
    """``step(i, x)``: one step of ``tableau`` for dx/dt = field(t, x) over [t_i, t_{i+1}] of an even grid."""
    h = (t1 - t0) / steps

    def step(i: int, x: Tensor) -> Tensor:
        f = lambda t, y: field(torch.tensor(t, dtype=y.dtype, device=y.device), y)  # noqa: E731
        return rk_step(f, t0 + i * h, x, h, tableau)

    return step


def rk4_map(field: Callable, steps: int, t0: float = 0.0, t1: float = 1.0) -> Callable:
    """`rk_map` with the classical RK4 tableau."""
    return rk_map(field, steps, t0, t1, RK4)


def compose(step: Callable, steps: int) -> Callable:
    """The whole flow x ↦ step(steps-1, … step(0, x))."""
    def flow(x: Tensor) -> Tensor:
        for i in range(steps):
            x = step(i, x)
        return x
    return flow


def _keep(x0: Tensor, mask: Tensor | None) -> Tensor:
    b = x0.shape[0]
    return (torch.ones_like(x0) if mask is None else mask.expand(x0.shape).to(x0.dtype)).reshape(b, -1)  # [B, n]


def jacobian(flow: Callable, x0: Tensor, mask: Tensor | None = None) -> Tensor:
    """Per-sample Jacobian of ``flow`` at ``x0`` restricted to the valid entries: [B, n, n] (n = x0[0].numel())."""
    b, keep = x0.shape[0], _keep(x0, mask)
    n = keep.shape[1]
    with _autodiff_ready():
        _, pull = vjp(flow, x0.detach())
        basis = torch.eye(n, dtype=x0.dtype, device=x0.device)[:, None, :].expand(n, b, n)   # [n, B, n]
        rows = vmap(lambda e: pull(e.reshape(x0.shape))[0].reshape(b, -1))(basis)           # [n, B, n]
    return rows.transpose(0, 1) * keep[:, :, None] * keep[:, None, :]                      # [B, n, n]


def ftle(flow: Callable, x0: Tensor, k: int, time: float = 1.0, mask: Tensor | None = None, *,
         method: str = "auto", iters: int = 60, tol: float = 1e-4, seed: int = 0) -> Tensor:
    """The ``k`` largest finite-time Lyapunov exponents log σ_i(J)/``time`` of ``flow`` at ``x0``: [B, k].

    ``method``: ``dense`` (SVD of the full Jacobian), ``subspace`` (block power iteration on JᵀJ, at most
    ``iters`` rounds, until the relative change of every σ_i is below ``tol``), ``auto`` (dense up to
    `DENSE_MAX` entries per sample). ``k`` is capped at the smallest number of valid entries of a sample.
    """
    keep = _keep(x0, mask)
    b, n = keep.shape
    k = int(min(k, keep.sum(1).min().item()))
    if method == "auto":
        method = "dense" if n <= DENSE_MAX else "subspace"
    if method == "dense":
        sigma = torch.linalg.svdvals(jacobian(flow, x0, mask))[:, :k]                      # [B, k]
    elif method == "subspace":
        sigma = _subspace_svd(flow, x0.detach(), keep, k, iters, tol, seed)
    else:
        raise ValueError(f"method={method!r}: expected 'auto', 'dense' or 'subspace'")
    return sigma.clamp(min=TINY).log() / time


def _subspace_svd(flow: Callable, x: Tensor, keep: Tensor, k: int, iters: int, tol: float, seed: int) -> Tensor:
    """Top-k singular values of each sample's Jacobian by block subspace iteration: [B, k]."""
    b, n = keep.shape
    p = min(n, k + OVERSAMPLE)
    g = torch.Generator().manual_seed(seed)
    q = torch.linalg.qr(torch.randn(b, n, p, generator=g).to(x) * keep[..., None]).Q        # [B, n, p]
    shaped = lambda v: v.reshape(x.shape)                                                 # noqa: E731
    with _autodiff_ready():
        _, pull = vjp(flow, x)
        push = vmap(lambda v: jvp(flow, (x,), (shaped(v),))[1].reshape(b, -1), in_dims=-1, out_dims=-1)
        back = vmap(lambda u: pull(shaped(u))[0].reshape(b, -1), in_dims=-1, out_dims=-1)
        previous = None
        for _ in range(iters):
            y = push(q) * keep[..., None]                                                  # J Q: [B, n, p]
            sigma = torch.linalg.svdvals(y)[:, :k]                                         # Ritz values
            if previous is not None and ((sigma - previous).abs() <= tol * sigma.abs()).all():
                break
            previous = sigma
            q = torch.linalg.qr(back(y) * keep[..., None]).Q                              # JᵀJ Q, re-orthonormalised
    return sigma


def lyapunov_exponents(step: Callable, x0: Tensor, steps: int, k: int, total_time: float = 1.0,
                       mask: Tensor | None = None, seed: int = 0, tol: float = 0.05) -> Tensor:
    """Benettin's estimate of the ``k`` largest Lyapunov exponents of ``x -> step(i, x)``, i = 0..steps-1: [B, k].

    Meaningful for long horizons only (see the module docstring); warns when the estimate at half the
    horizon differs from the final one by more than ``tol`` (absolute, per unit time).
    """
    keep = _keep(x0, mask)
    b = keep.shape[0]
    k = int(min(k, keep.sum(1).min().item()))
    g = torch.Generator().manual_seed(seed)
    q = torch.linalg.qr(torch.randn(*keep.shape, k, generator=g).to(x0) * keep[..., None]).Q   # [B, n, k]
    sums = torch.zeros(b, k, dtype=x0.dtype, device=x0.device)
    half = None
    x = x0.detach()
    for i in range(steps):
        f = lambda y: step(i, y)                                             # noqa: E731
        push = lambda v: jvp(f, (x,), (v.reshape(x.shape),))[1].reshape(b, -1)  # noqa: E731
        with _autodiff_ready():
            pushed = vmap(push, in_dims=-1, out_dims=-1)(q) * keep[..., None]   # [B, n, k]
            with torch.no_grad():
                x = f(x)
        q, r = torch.linalg.qr(pushed)                                       # [B, n, k], [B, k, k]
        sums += torch.diagonal(r, dim1=-2, dim2=-1).abs().clamp(min=TINY).log()
        if i + 1 == steps // 2:
            half = sums.sort(dim=-1, descending=True).values / (total_time * (i + 1) / steps)
    found = (sums / total_time).sort(dim=-1, descending=True).values
    if half is not None and ((found - half).abs() > tol).any():
        gap = (found - half).abs().max().item()
        warnings.warn(f"Benettin's Lyapunov estimate moved by {gap:.3g} between half and full horizon "
                      f"(T = {total_time}); it has not converged: use a longer horizon or `ftle` for the "
                      "finite-time exponents", LyapunovConvergenceWarning, stacklevel=2)
    return found
