"""Convolution kernels of linear time-invariant SSMs and the FFT convolution that applies them.

* `vandermonde_kernel`: S4D's kernel K_l = 2 Re Σ_n c_n z_n^l as a Vandermonde product (Gu, Gupta,
  Goel & Ré, 2022, "On the Parameterization and Initialization of Diagonal State Space Models").
* `nplr_kernel`: S4's kernel for a normal-plus-low-rank A = Λ - p p* under the bilinear transform,
  from its truncated generating function at the roots of unity, a Cauchy sum with a Woodbury
  correction, and an inverse FFT (Gu, Goel & Ré, 2022, "Efficiently Modeling Long Sequences with
  Structured State Spaces", Algorithm 1).
* `fft_conv`: causal (and anti-causal) convolution in O(L log L).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .precision import full_precision

KERNEL_BLOCK = 4096      # kernel positions whose [H, N, ·] powers are materialised at once


@full_precision
def fft_conv(u: Tensor, k: Tensor, k_rev: Tensor | None = None) -> Tensor:
    """y_l = Σ_{j<=l} k_{l-j} u_j (+ Σ_{j>=l} k_rev_{j-l} u_j): u [B, H, L], k, k_rev [H, L] -> [B, H, L]."""
    length = u.shape[-1]
    n = 2 * length                                  # zero padding turns circular into linear convolution
    if k_rev is not None:                           # lag -d sits at index n - d of the circular kernel
        k = torch.cat([k + F.pad(k_rev[..., :1], (0, length - 1)), torch.zeros_like(k[..., :1]),
                       torch.flip(k_rev[..., 1:], (-1,))], dim=-1)           # [H, 2L]
    return torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(k, n=n), n=n)[..., :length]


@full_precision
def vandermonde_kernel(coef: Tensor, log_z: Tensor, length: int) -> Tensor:
    """K_l = 2 Re Σ_n coef_n exp(l log_z_n), l < length: coef, log_z [H, N] complex -> [H, L] real."""
    out = []
    for start in range(0, length, KERNEL_BLOCK):
        pos = torch.arange(start, min(length, start + KERNEL_BLOCK), device=coef.device, dtype=coef.real.dtype)
        powers = torch.exp(log_z.unsqueeze(-1) * pos)                        # [H, N, l]
        out.append(2 * torch.einsum("hn,hnl->hl", coef, powers).real)
    return torch.cat(out, dim=-1)


def cauchy_sum(v: Tensor, w: Tensor, alpha: Tensor, beta: Tensor) -> Tensor:
    """Σ_n v_n / (alpha_l - beta_l w_n): v [..., H, N], w [H, N], alpha, beta broadcastable to [H, 1, L]
    -> [..., H, L].

    With beta = 1 this is the Cauchy matrix-vector product of S4; the scaled form lets the bilinear
    transform be evaluated at z = -1 without dividing by zero.
    """
    return torch.einsum("...hn,hnl->...hl", v, 1.0 / (alpha - beta * w.unsqueeze(-1)))


def _power(m: Tensor, n: int) -> Tensor:
    """m^n for square matrices [.., N, N] by repeated squaring."""
    out = torch.eye(m.shape[-1], dtype=m.dtype, device=m.device).expand_as(m)
    while n:
        if n & 1:
            out = out @ m
        m, n = m @ m, n >> 1
    return out


def nplr_dense(lam: Tensor, p: Tensor, b: Tensor, dt: Tensor) -> tuple[Tensor, Tensor]:
    """Bilinear discretisation of A = diag(λ) - p p*: Ā [H, N, N] and B̄ [H, N] (dense; N is small)."""
    eye = torch.eye(lam.shape[-1], dtype=lam.dtype, device=lam.device)
    a = torch.diag_embed(lam) - p.unsqueeze(-1) * p.conj().unsqueeze(-2)       # [H, N, N]
    half = (dt / 2)[:, None, None].to(lam.dtype) * a
    a_bar = torch.linalg.solve(eye - half, eye + half)
    b_bar = torch.linalg.solve(eye - half, dt[:, None].to(lam.dtype) * b)
    return a_bar, b_bar


@full_precision
def nplr_kernel(lam: Tensor, p: Tensor, b: Tensor, c: Tensor, dt: Tensor, length: int) -> Tensor:
    """S4 kernel K_l = Re c Ā^l B̄, l < length, for A = diag(λ) - p p* (bilinear, step dt [H]).

    lam, p, b, c: [H, N] complex (the whole state, conjugate pairs included). Returns [H, L] real.
    """
    a_bar, _ = nplr_dense(lam, p, b, dt)
    # generating function at z^L = 1 needs c̃ = c (I - Ā^L)
    c_t = c - (c.unsqueeze(-2) @ _power(a_bar, length)).squeeze(-2)           # [H, N]
    z = torch.exp(-2j * math.pi * torch.arange(length, device=lam.device, dtype=lam.real.dtype) / length)
    # (I - Ā z)^{-1} B̄ = 2 [ (2/Δ)(1-z) - (1+z) A ]^{-1} b, inverted by Woodbury around the diagonal
    two_over_dt = (2 / dt).to(lam.dtype)[:, None, None]                       # [H, 1, 1]
    alpha = two_over_dt * (1 - z)                                              # [H, 1, L]
    beta = (1 + z).to(lam.dtype)                                               # [L]
    v = torch.stack([c_t * b, c_t * p, p.conj() * b, p.conj() * p])           # [4, H, N]
    k = cauchy_sum(v, lam, alpha, beta)                                        # [4, H, L]
    k_hat = 2 * (k[0] - beta * k[1] * k[2] / (1 + beta * k[3]))               # [H, L]
    return torch.fft.ifft(k_hat, n=length).real
