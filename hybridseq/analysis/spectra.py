"""Eigenvalue spectra of the attention maps of continuous-depth heads, as functions of depth t.

For head h with query/key/value/output maps W_Q, W_K, W_V [D, hd] and W_O [hd, D] (row-vector
convention, q = x W_Q), the score bilinear form is W_Q W_Kᵀ and the value-output map is W_V W_O, both
[D, D] of rank <= hd. Their nonzero eigenvalues are those of the hd × hd products W_Kᵀ W_Q and W_O W_V,
which is what we compute (the other D - hd eigenvalues are zero). The feed-forward part is summarised
by the singular values of W_2 W_1 [D, D], the MLP's linear part without the activation (its gain).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..blocks.base import ContinuousDepth


def head_eigenvalues(qkv_weight: Tensor, out_weight: Tensor, heads: int) -> tuple[Tensor, Tensor]:
    """Nonzero eigenvalues of W_Q W_Kᵀ and W_V W_O per head: two complex tensors [H, hd].

    ``qkv_weight`` [3D, D] and ``out_weight`` [D, D] are ``nn.Linear`` weights (y = x Wᵀ + b).
    """
    d = out_weight.shape[0]
    hd = d // heads
    wq, wk, wv = qkv_weight.detach().double().view(3, heads, hd, d)           # each [H, hd, D] = W_·ᵀ per head
    wo = out_weight.detach().double().view(d, heads, hd).permute(1, 2, 0)     # [H, hd, D] = W_O per head
    qk = torch.linalg.eigvals(wk @ wq.transpose(1, 2))                        # W_Kᵀ W_Q: [H, hd, hd]
    vo = torch.linalg.eigvals(wo @ wv.transpose(1, 2))                        # W_O W_V:  [H, hd, hd]
    return qk, vo


def _pairs(values: Tensor) -> list[list[list[float]]]:
    """Complex [H, hd] -> per head a list of [real, imag] pairs (JSON friendly)."""
    return [[[v.real.item(), v.imag.item()] for v in head] for head in values]


def spectra(block: ContinuousDepth, times: int = 9) -> dict:
    """Spectra of every head along depth: ``{"t": [T], "qk"/"vo": [T][H][hd] of [re, im],
    "qk_max_real"/"vo_max_real"/"qk_radius"/"vo_radius": [T][H]}``, plus ``"ff_singular": [T][D]`` for a head
    that offers ``feedforward_along_depth``. ``times`` depths are sampled for a head whose weights vary
    continuously; a head of discrete layers gives one entry per layer."""
    result = {"t": [], "qk": [], "vo": [], "qk_max_real": [], "vo_max_real": [], "qk_radius": [], "vo_radius": []}
    with torch.no_grad():
        heads, along = block.attention_along_depth(times)
        feedforward = getattr(block, "feedforward_along_depth", None)       # optional beyond the protocol
        if feedforward is not None:
            result["ff_singular"] = [torch.linalg.svdvals(fc2.double() @ fc1.double()).tolist()  # [D]
                                     for _, fc1, fc2 in feedforward(times)]
        for t, qkv, out in along:
            qk, vo = head_eigenvalues(qkv, out, heads)
            result["t"].append(t)
            for name, ev in (("qk", qk), ("vo", vo)):
                result[name].append(_pairs(ev))
                result[f"{name}_max_real"].append(ev.real.max(-1).values.tolist())
                result[f"{name}_radius"].append(ev.abs().max(-1).values.tolist())
    return result
