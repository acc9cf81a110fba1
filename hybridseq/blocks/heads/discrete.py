"""Adaptive fine-tuning of a continuous-depth head (Tong et al. 2025, §5): export a trained
`neural_ode_transformer` to a fixed stack of N ordinary layers and fine-tune that.

Layer i holds the parameters the hypernetwork produces at t_i = i/N, as its own trainable tensors, and
computes one Euler step x + (1/N) f_i(x); the stack ends with the head's final LayerNorm. At the same N,
and when the head itself runs Euler with N steps, the stack computes exactly what the head computes.
``lora_rank`` freezes the exported tensors and trains a rank-r update W + U Vᵀ of every matrix instead
(V starts at zero, so the stack starts as the export).
"""
from __future__ import annotations

import copy
import math
from dataclasses import replace

import torch
from torch import Tensor, nn

from ...seq import Seq
from ..layers import attention_mask
from .neural_ode_transformer import NeuralODETransformer, field_update


class ExportedLayer(nn.Module):
    """One Euler step of the depth field with fixed parameters: x [B, L, D] -> [B, L, D]."""

    def __init__(self, params: dict[str, Tensor], heads: int, norms: tuple[str, str], dt: float,
                 lora_rank: int | None):
        super().__init__()
        self.heads, self.norms, self.dt = heads, norms, dt
        self.base = nn.ParameterDict({k: nn.Parameter(v.detach().clone(), requires_grad=lora_rank is None)
                                      for k, v in params.items()})
        self.lora = nn.ParameterDict()
        if lora_rank is not None:
            for k, v in params.items():
                if v.dim() == 2:
                    out, inp = v.shape
                    self.lora[f"{k}_u"] = nn.Parameter(torch.randn(out, lora_rank, dtype=v.dtype) / math.sqrt(out))
                    self.lora[f"{k}_v"] = nn.Parameter(torch.zeros(inp, lora_rank, dtype=v.dtype))

    def parameters_now(self) -> dict[str, Tensor]:
        p = dict(self.base.items())
        for k in p:
            if f"{k}_u" in self.lora:
                p[k] = p[k] + self.lora[f"{k}_u"] @ self.lora[f"{k}_v"].T            # [out, in]
        return p

    def forward(self, x: Tensor, mask: Tensor | None, keep: Tensor | None) -> Tensor:
        dx = field_update(self.parameters_now(), x, self.heads, mask, self.norms)
        return x + self.dt * (dx if keep is None else dx * keep)


class ExportedStack(nn.Module):
    """``layers`` exported Euler steps and the head's final norm: ``forward(seq) -> Seq`` like the head."""

    def __init__(self, head: NeuralODETransformer, layers: int, lora_rank: int | None = None):
        super().__init__()
        if layers < 1 or (lora_rank is not None and lora_rank < 1):
            raise ValueError(f"layers={layers} and lora_rank={lora_rank}: expected integers >= 1")
        self.causal = head.cfg.causal
        with torch.no_grad():
            self.layers = nn.ModuleList(
                ExportedLayer(head.weights_at(i / layers), head.cfg.heads, head.field.norms, 1 / layers, lora_rank)
                for i in range(layers))
        self.final_norm = copy.deepcopy(head.final_norm)
        if self.final_norm is not None and lora_rank is not None:
            self.final_norm.requires_grad_(False)

    def forward(self, seq: Seq) -> Seq:
        x = seq.x                                                               # [B, L, D]
        keep = None if seq.mask is None else seq.mask[..., None].to(x.dtype)    # [B, L, 1]
        if keep is not None:
            x = torch.where(seq.mask[..., None], x, 0.0)
        mask = attention_mask(seq.mask, x.shape[1], self.causal, x.device)
        for layer in self.layers:
            x = layer(x, mask, keep)
        return replace(seq, x=x if self.final_norm is None else self.final_norm(x))


def export_discrete(head: NeuralODETransformer, layers: int, lora_rank: int | None = None) -> ExportedStack:
    """The stack of ``layers`` Euler steps with the head's weights at t_i = i/layers (see module docs)."""
    return ExportedStack(head, layers, lora_rank)
