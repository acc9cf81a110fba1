"""Hypernetworks of depth: parameters as functions of t ∈ [0, 1] (used by `neural_ode_transformer`).

`TemporalLayers` (``hyper: qkvflow``, the default) follows the authors' code: each linear layer and each
LayerNorm has its own small time MLP of Fourier features of t and generates its whole weight from it.
`HyperNet` (``hyper: full | lowrank``) shares one time MLP across parameters:

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


# --- qkvflow's parameterisation (Tong et al. 2025, the authors' code: SDML-KU/qkvflow) -------------------
TIME_SCALE = 1000.0      # t is rescaled before the sinusoids (depth steps are small)
MAX_PERIOD = 10_000.0    # frequencies f_k = MAX_PERIOD^(-k/K), k = 0..K-1
BIAS_STD = 1e-4          # initial std of the bias generators


def fourier_features(t: Tensor, k: int) -> Tensor:
    """[t, sin(s t f_j), cos(s t f_j)] with geometric frequencies f_j = MAX_PERIOD^(-j/k), s = TIME_SCALE:
    [] -> [2k + 1]."""
    freqs = torch.exp(-math.log(MAX_PERIOD) * torch.arange(k, dtype=t.dtype, device=t.device) / k)   # [k]
    angle = TIME_SCALE * t * freqs
    return torch.cat([t.reshape(1), torch.sin(angle), torch.cos(angle)])


def _time_mlp(k: int, hidden: int) -> nn.Sequential:
    """h(t) from the Fourier features: Linear(2k+1, hidden) -> SiLU -> Linear(hidden, hidden)."""
    return nn.Sequential(nn.Linear(2 * k + 1, hidden), nn.SiLU(), nn.Linear(hidden, hidden))


class TemporalLinear(nn.Module):
    """A linear layer whose weight and bias are functions of t, with its own time MLP h:
    ``W(t) = reshape(A h(t) + W0)`` [out, in] and ``b(t) = B h(t)`` [out]. W0 starts as the ordinary
    layer's initial weight, A ~ N(0, GEN_STD²), B ~ N(0, BIAS_STD²) (b has no constant part, as in qkvflow)."""

    def __init__(self, weight: Tensor, k: int, hidden: int):
        super().__init__()
        self.shape = tuple(weight.shape)
        self.mlp = _time_mlp(k, hidden)
        self.base = nn.Parameter(weight.detach().clone())                     # W0 [out, in]: a matrix (decayed)
        self.weight_gen = nn.Linear(hidden, weight.numel(), bias=False)        # A
        self.bias_gen = nn.Linear(hidden, self.shape[0], bias=False)           # B
        nn.init.normal_(self.weight_gen.weight, std=GEN_STD)
        nn.init.normal_(self.bias_gen.weight, std=BIAS_STD)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        h = self.mlp(features)                                                 # [hidden]
        return self.base + self.weight_gen(h).view(self.shape), self.bias_gen(h)   # [out, in], [out]


class TemporalNorm(nn.Module):
    """LayerNorm affine parameters as functions of t, with its own time MLP h:
    ``γ(t) = 1 + F_w h(t)``, ``β(t) = F_b h(t)``; F_w and F_b start at zero (the plain LayerNorm)."""

    def __init__(self, width: int, k: int, hidden: int):
        super().__init__()
        self.mlp = _time_mlp(k, hidden)
        self.weight_gen = nn.Linear(hidden, width, bias=False)
        self.bias_gen = nn.Linear(hidden, width, bias=False)
        nn.init.zeros_(self.weight_gen.weight)
        nn.init.zeros_(self.bias_gen.weight)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        h = self.mlp(features)                                                 # autocast may make it half
        return (1 + self.weight_gen(h)).to(features.dtype), self.bias_gen(h).to(features.dtype)


class TemporalLayers(nn.Module):
    """Every parameter of one Transformer layer at depth t, qkvflow-style: ``forward(t) -> {name: Tensor}``
    with ``{qkv,out,fc1,fc2}_{weight,bias}`` and ``{norm1,norm2}_{weight,bias}`` (attention and MLP norms)."""

    def __init__(self, linears: dict[str, Tensor], width: int, k: int, hidden: int):
        super().__init__()
        self.k = k
        self.linears = nn.ModuleDict({n: TemporalLinear(w, k, hidden) for n, w in linears.items()})
        self.norms = nn.ModuleDict({n: TemporalNorm(width, k, hidden) for n in ("norm1", "norm2")})

    def forward(self, t: Tensor) -> dict[str, Tensor]:
        features = fourier_features(t, self.k)                                 # [2k + 1]
        out = {}
        for name, module in (*self.linears.items(), *self.norms.items()):
            out[f"{name}_weight"], out[f"{name}_bias"] = module(features)
        return out

    def generators(self) -> list[nn.Linear]:
        """The maps h -> update; zeroing them leaves W = W0, b = 0, γ = 1, β = 0 at every t."""
        return [g for m in (*self.linears.values(), *self.norms.values()) for g in (m.weight_gen, m.bias_gen)]
