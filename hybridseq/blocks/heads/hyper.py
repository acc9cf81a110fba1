"""Hypernetworks of depth: parameters as functions of t ∈ [0, 1] (used by `neural_ode_transformer`).

``θ(t) = θ0 + G(h(t))`` where ``h(t)`` is a small MLP of a sinusoidal embedding of t shared by every
parameter, ``θ0`` is a learned base value (initialised like the ordinary layer's parameter) and ``G`` is
a per-parameter generator: ``full`` maps h to every entry of θ; ``lowrank`` maps h to r scales of a
learned rank-r update ``U diag(s(h)) Vᵀ`` (matrices only; vectors are always generated in full).
With every generator at zero the parameters do not depend on t.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

GEN_STD = 0.02          # std of the generator's initial weights: a mild t-dependence at initialisation


def time_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal features of a scalar time: [] -> [dim] = [sin(πk t), cos(πk t)], k = 1..dim/2."""
    k = torch.arange(1, dim // 2 + 1, dtype=t.dtype, device=t.device)          # [dim/2]
    angle = math.pi * k * t
    return torch.cat([torch.sin(angle), torch.cos(angle)])


class HyperParam(nn.Module):
    """One generated parameter of ``shape``: ``forward(h [hidden]) -> Tensor[shape]``."""

    def __init__(self, base: Tensor, hidden: int, mode: str, rank: int):
        super().__init__()
        self.base = nn.Parameter(base.detach().clone())
        self.shape = tuple(base.shape)
        self.lowrank = mode == "lowrank" and base.dim() == 2
        if self.lowrank:
            out, inp = self.shape
            self.u = nn.Parameter(torch.randn(out, rank) / math.sqrt(out))
            self.v = nn.Parameter(torch.randn(inp, rank) / math.sqrt(inp))
            self.gen = nn.Linear(hidden, rank, bias=False)
        else:
            self.gen = nn.Linear(hidden, base.numel(), bias=False)
        nn.init.normal_(self.gen.weight, std=GEN_STD)

    def forward(self, h: Tensor) -> Tensor:
        if self.lowrank:
            s = self.gen(h)                                                     # [r]
            return self.base + (self.u * s) @ self.v.T                          # [out, in]
        return self.base + self.gen(h).view(self.shape)


class HyperNet(nn.Module):
    """Generates a named set of parameters at depth t: ``forward(t) -> {name: Tensor}``."""

    def __init__(self, bases: dict[str, Tensor], embed: int, hidden: int, mode: str, rank: int):
        super().__init__()
        self.embed = embed
        self.trunk = nn.Sequential(nn.Linear(embed, hidden), nn.SiLU())
        self.params = nn.ModuleDict({n: HyperParam(b, hidden, mode, rank) for n, b in bases.items()})

    def forward(self, t: Tensor) -> dict[str, Tensor]:
        h = self.trunk(time_embedding(t, self.embed))                          # [hidden]
        return {name: p(h) for name, p in self.params.items()}

    def generators(self) -> list[nn.Linear]:
        """The maps h -> update; zeroing them makes every parameter independent of t."""
        return [p.gen for p in self.params.values()]
