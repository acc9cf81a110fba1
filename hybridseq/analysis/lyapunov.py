"""Lyapunov exponents of a depth flow from Jacobian–vector products (Benettin's QR method).

k tangent vectors are pushed through each step map with ``torch.func.jvp`` (vmapped over them) and
re-orthonormalised by a QR decomposition after every step; the exponents are the accumulated
``log |diag R|`` divided by the total time. Each batch element is its own system (the maps must not
mix samples), and a ``mask`` keeps the tangents on the valid positions only.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch import Tensor
from torch.func import jvp, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

TINY = 1e-30
# torch's first forward-mode AD call scripts its JVP decompositions with the deprecated torch.jit.script
TORCH_JIT_NOTICE = r"`torch\.jit\.script` is deprecated"


def rk4_map(field: Callable, steps: int, t0: float = 0.0, t1: float = 1.0) -> Callable:
    """``step(i, x)``: one classical RK4 step of dx/dt = field(t, x) over [t_i, t_{i+1}] of an even grid."""
    h = (t1 - t0) / steps

    def step(i: int, x: Tensor) -> Tensor:
        t = torch.tensor(t0 + i * h, dtype=x.dtype, device=x.device)
        k1 = field(t, x)
        k2 = field(t + h / 2, x + h / 2 * k1)
        k3 = field(t + h / 2, x + h / 2 * k2)
        k4 = field(t + h, x + h * k3)
        return x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)

    return step


def lyapunov_exponents(step: Callable, x0: Tensor, steps: int, k: int, total_time: float = 1.0,
                       mask: Tensor | None = None, seed: int = 0) -> Tensor:
    """The ``k`` largest finite-time Lyapunov exponents of ``x -> step(i, x)``, i = 0..steps-1: [B, k].

    ``x0`` is [B, ...]; ``mask`` (bool, broadcastable to x0) restricts tangents to valid entries.
    ``k`` is capped at the smallest number of valid entries of any sample.
    """
    b = x0.shape[0]
    keep = (torch.ones_like(x0) if mask is None else mask.expand(x0.shape).to(x0.dtype)).reshape(b, -1)  # [B, n]
    k = int(min(k, keep.sum(1).min().item()))
    g = torch.Generator().manual_seed(seed)
    q = torch.linalg.qr(torch.randn(*keep.shape, k, generator=g).to(x0) * keep[..., None]).Q   # [B, n, k]
    sums = torch.zeros(b, k, dtype=x0.dtype, device=x0.device)
    x = x0.detach()
    for i in range(steps):
        f = lambda y: step(i, y)                                             # noqa: E731
        push = lambda v: jvp(f, (x,), (v.reshape(x.shape),))[1].reshape(b, -1)  # noqa: E731
        with sdpa_kernel(SDPBackend.MATH), warnings.catch_warnings():      # the fused kernels lack forward AD
            warnings.filterwarnings("ignore", TORCH_JIT_NOTICE, DeprecationWarning)
            pushed = vmap(push, in_dims=-1, out_dims=-1)(q) * keep[..., None]   # [B, n, k]
            with torch.no_grad():
                x = f(x)
        q, r = torch.linalg.qr(pushed)                                       # [B, n, k], [B, k, k]
        sums += torch.diagonal(r, dim1=-2, dim2=-1).abs().clamp(min=TINY).log()
    return (sums / total_time).sort(dim=-1, descending=True).values
