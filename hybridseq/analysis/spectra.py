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

from ..blocks.heads.neural_ode_transformer import NeuralODETransformer
from ..blocks.heads.ode_transformer import ODETransformer

CONTINUOUS_DEPTH = (NeuralODETransformer, ODETransformer)


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


def depth_weights(block, times: int) -> list[tuple[float, Tensor, Tensor, Tensor, Tensor]]:
    """(t, qkv_weight, out_weight, fc1_weight, fc2_weight) along depth: ``times`` samples of t ∈ [0, 1] for
    a neural ODE transformer; one entry per layer (t = l / layers) for an ODE transformer."""
    if isinstance(block, NeuralODETransformer):
        grid = torch.linspace(0, 1, times).tolist()
        out = []
        for t in grid:
            p = block.weights_at(t)
            out.append((t, p["qkv_weight"], p["out_weight"], p["fc1_weight"], p["fc2_weight"]))
        return out
    if isinstance(block, ODETransformer):
        n = len(block.layers)
        return [(i / n, layer.field.attn.qkv.weight, layer.field.attn.out.weight, layer.field.ff[0].weight,
                 layer.field.ff[-1].weight) for i, layer in enumerate(block.layers)]
    raise TypeError(f"{type(block).__name__} is not a continuous-depth head")


def _pairs(values: Tensor) -> list[list[list[float]]]:
    """Complex [H, hd] -> per head a list of [real, imag] pairs (JSON friendly)."""
    return [[[v.real.item(), v.imag.item()] for v in head] for head in values]


def spectra(block, times: int = 9) -> dict:
    """Spectra of every head along depth: ``{"t": [T], "qk"/"vo": [T][H][hd] of [re, im],
    "qk_max_real"/"vo_max_real"/"qk_radius"/"vo_radius": [T][H], "ff_singular": [T][D]}``."""
    heads = block.cfg.heads
    result = {"t": [], "qk": [], "vo": [], "qk_max_real": [], "vo_max_real": [], "qk_radius": [], "vo_radius": [],
              "ff_singular": []}
    with torch.no_grad():
        for t, qkv, out, fc1, fc2 in depth_weights(block, times):
            result["ff_singular"].append(torch.linalg.svdvals(fc2.double() @ fc1.double()).tolist())  # [D]
            qk, vo = head_eigenvalues(qkv, out, heads)
            result["t"].append(t)
            for name, ev in (("qk", qk), ("vo", vo)):
                result[name].append(_pairs(ev))
                result[f"{name}_max_real"].append(ev.real.max(-1).values.tolist())
                result[f"{name}_radius"].append(ev.abs().max(-1).values.tolist())
    return result
