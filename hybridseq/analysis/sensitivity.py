"""Token-level sensitivity (Tong et al. 2025, §4.2) and what a `pde_attention` layer learned.

``token_sensitivity(fn, x)`` is the map S[b, j, i] = ‖∂y_j / ∂x_i‖_F of a sequence map y = fn(x)
([B, L, D] -> [B, L, D]): how strongly output token j depends on input token i. It takes one
vector–Jacobian product per output entry (L·D of them, vmapped), so it is meant for the short inputs
analysis runs on.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch
from torch import Tensor
from torch.func import vjp, vmap

from ..blocks.heads.pde_attention import PDEAttention
from .lyapunov import _autodiff_ready


def token_sensitivity(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """S[b, j, i] = ‖∂ fn(x)[b, j] / ∂ x[b, i]‖_F for a map that keeps samples apart: [B, L, L]."""
    b, n, d = x.shape
    with _autodiff_ready():
        _, pull = vjp(fn, x.detach())
        basis = torch.eye(n * d, dtype=x.dtype, device=x.device).view(n * d, 1, n, d).expand(n * d, b, n, d)
        rows = vmap(lambda e: pull(e)[0])(basis)                              # [L·D, B, L, D]: ∂y_(j,c)/∂x
    rows = rows.view(n, d, b, n, d)                                            # [j, c, B, i, e]
    return rows.square().sum(dim=(1, 4)).sqrt().permute(1, 0, 2)              # [B, j, i]


def block_sensitivity(block, seq) -> list[list[float]]:
    """`token_sensitivity` of one block on the first sample of ``seq`` (valid tokens): [L][L]."""
    first = replace(seq, x=seq.x[:1], mask=None if seq.mask is None else seq.mask[:1],
                    t=None if seq.t is None else seq.t[:1])
    n = int(first.valid().sum())
    first = replace(first, x=first.x[:, :n], mask=None, t=None if first.t is None else first.t[:, :n])
    return token_sensitivity(lambda x: block(replace(first, x=x)).x, first.x)[0].tolist()


def pde_summary(block: PDEAttention, seq) -> dict:
    """The learned PDE coefficients per channel (states) or head (weights), and for ``target: weights``
    the head-averaged attention of the first sample before and after the evolution ([L][L] each)."""
    out = {"pde": block.cfg.pde, "target": block.cfg.target, "time": block.cfg.time,
           "coefficients": {k: v.detach().tolist() for k, v in block.coefficients().items()}}
    if block.cfg.target == "weights":
        with torch.no_grad():
            before, after, _ = block.attention_maps(block.norm1(seq.x[:1]), seq.valid()[:1])
        out["attention_before"], out["attention_after"] = before[0].mean(0).tolist(), after[0].mean(0).tolist()
    return out
