"""ODE Transformer (Li et al., ACL 2022, "ODE Transformer: An Ordinary Differential Equation-Inspired
Model for Sequence Generation").

A pre-norm Transformer layer ``T`` defines the vector field ``F(x) = T(x) - x`` (attention + feed-forward
update). Each of the ``layers`` layers is one step (h = 1) of a Runge–Kutta scheme applied to ``F`` with
the SAME parameters at every stage of that layer (the tableaux are data: `hybridseq.solvers.tableau`):

- ``euler``:       y = x + F(x)                                  (the plain residual layer)
- ``rk2``:         Heun: F1 = F(x), F2 = F(x + F1), y = x + (F1 + F2) / 2
- ``rk3``:         Kutta's third order: F(x), F(x + F1/2), F(x - F1 + 2 F2), weights 1/6, 2/3, 1/6
- ``rk4``:         classic fourth order, stages F(x), F(x + F1/2), F(x + F2/2), F(x + F3)
- ``gated_rk2``:   γ = σ(W [F1; F2] + b), y = x + γ F1 + (1 - γ) F2, with one γ per position
                   (``gate: scalar``, W: 2d -> 1, the paper's) or per position and channel (``channel``)
- ``learned_rk2``: y = x + a1 F1 + a2 F2 with learnable coefficients a1, a2 (initialised at 1)

``rk_norm: true`` (the paper's RK-Norm, as we read it) layer-normalises each stage F_i, with its own
LayerNorm, where it enters the final combination y = x + Σ w_i LN_i(F_i); the stages use the raw F_i.
With ``causal: true`` the head also runs one position at a time for generation (`allocate_state` /
`step`): each stage of each layer keeps a key/value cache of its own inputs at the earlier positions.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from omegaconf import MISSING
from torch import Tensor, nn

from ...errors import ConfigError
from ...seq import Seq
from ...solvers.tableau import EULER, HEUN, RK3, RK4, combine, stages
from ..base import Block, DepthMap, choice
from ..layers import FeedForward, SelfAttention, attention_mask, check_heads

SCHEMES = ("euler", "rk2", "rk3", "rk4", "gated_rk2", "learned_rk2")
TABLE = {"euler": EULER, "rk2": HEUN, "rk3": RK3, "rk4": RK4, "gated_rk2": HEUN, "learned_rk2": HEUN}
COEF_INIT = 1.0          # learned_rk2: a1 = a2 = 1 at the start (Li et al.)


class LayerField(nn.Module):
    """The update of one pre-norm Transformer layer, F(x) = T(x) - x: [B, L, D] -> [B, L, D]."""

    def __init__(self, d_model: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, heads, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, int(mlp_ratio * d_model), d_model, dropout)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        a = self.attn(self.norm1(x), mask)
        return a + self.ff(self.norm2(x + a))

    def step(self, x: Tensor, cache: dict) -> tuple[Tensor, dict]:
        """F at one position x [B, D] with causal attention through a key/value ``cache``."""
        a, cache = self.attn.step(self.norm1(x), cache)
        return a + self.ff(self.norm2(x + a)), cache


class ODELayer(nn.Module):
    """One layer: one step of ``scheme`` on its own `LayerField` (shared by all stages)."""

    def __init__(self, d_model: int, heads: int, mlp_ratio: float, dropout: float, scheme: str,
                 gate: str = "scalar", rk_norm: bool = False):
        super().__init__()
        self.scheme, self.tableau = scheme, TABLE[scheme]
        self.field = LayerField(d_model, heads, mlp_ratio, dropout)
        if scheme == "gated_rk2":
            self.gate = nn.Linear(2 * d_model, 1 if gate == "scalar" else d_model)
        if scheme == "learned_rk2":
            self.coef = nn.Parameter(torch.full((2,), COEF_INIT))
        self.stage_norms = (nn.ModuleList(nn.LayerNorm(d_model) for _ in range(self.tableau.stages))
                            if rk_norm else None)

    def weights(self, ks: list[Tensor]):
        """The weights w_i of the stages in the final combination."""
        if self.scheme == "gated_rk2":
            gamma = torch.sigmoid(self.gate(torch.cat(ks, dim=-1)))           # [B, L, 1] or [B, L, D]
            return gamma, 1 - gamma
        if self.scheme == "learned_rk2":
            return self.coef[0], self.coef[1]
        return self.tableau.b

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        ks = stages(lambda t, y: self.field(y, mask), 0.0, x, 1.0, self.tableau)  # F_1 … F_s: [B, L, D]
        return self.finish(x, ks)

    def finish(self, x: Tensor, ks: list[Tensor]) -> Tensor:
        """y = x + Σ w_i F_i (each F_i layer-normalised first with ``rk_norm``)."""
        weights = self.weights(ks)
        if self.stage_norms is not None:
            ks = [norm(k) for norm, k in zip(self.stage_norms, ks)]
        return combine(x, ks, 1.0, weights)

    def step(self, x: Tensor, caches: list[dict]) -> tuple[Tensor, list[dict]]:
        """The layer at one position x [B, D]: stage i attends through its own key/value cache ``caches[i]``
        (the stage inputs of the earlier positions), as the causal full pass does."""
        new: list[dict] = []

        def field(t: float, y: Tensor) -> Tensor:
            k, cache = self.field.step(y, caches[len(new)])
            new.append(cache)
            return k

        return self.finish(x, stages(field, 0.0, x, 1.0, self.tableau)), new


class ODETransformer(Block):
    """``layers`` Transformer layers, each integrated by one step of a Runge–Kutta ``scheme``."""

    @dataclass
    class Config:
        d_model: int = MISSING       # stream width (injected)
        heads: int = 4               # attention heads; must divide d_model
        layers: int = 1              # layers, each with its own parameters
        scheme: str = choice("rk2", *SCHEMES)  # integration scheme of each layer
        gate: str = choice("scalar", "channel")  # gated_rk2: one gate per position (paper) or per channel
        rk_norm: bool = False        # layer-normalise each stage where it enters the combination (RK-Norm)
        mlp_ratio: float = 4.0       # feed-forward hidden width as a multiple of d_model
        dropout: float = 0.0
        causal: bool = False         # position i attends to positions <= i only

        def validate(self, path: str) -> None:
            check_heads(self.d_model, self.heads, path)
            if self.layers < 1:
                raise ConfigError(f"{path}.layers", f"expected an integer >= 1, got {self.layers}")

    example = {"heads": 2, "layers": 2, "scheme": "gated_rk2", "mlp_ratio": 2.0}

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.layers = nn.ModuleList(ODELayer(cfg.d_model, cfg.heads, cfg.mlp_ratio, cfg.dropout, cfg.scheme,
                                             cfg.gate, cfg.rk_norm) for _ in range(cfg.layers))

    def forward(self, seq: Seq) -> Seq:
        x = seq.x                                                               # [B, L, D]
        mask = attention_mask(seq.mask, x.shape[1], self.cfg.causal, x.device)
        for layer in self.layers:
            x = layer(x, mask)
        return replace(seq, x=x)

    def allocate_state(self, batch_size: int, device=None, dtype=None) -> list[list[dict]]:
        """One key/value cache per layer and stage, for `step` (causal heads only)."""
        if not self.cfg.causal:
            raise RuntimeError("an ode_transformer with causal: false attends to later positions; it has no "
                               "step-by-step mode (set causal: true)")
        p = next(self.parameters())
        return [[layer.field.attn.empty_cache(batch_size, device or p.device, dtype or p.dtype)
                 for _ in range(layer.tableau.stages)] for layer in self.layers]

    def step(self, x_t: Tensor, state: list, gap: Tensor | None = None) -> tuple[Tensor, list]:
        """One position through every layer: x_t [B, D] -> (y_t [B, D], the caches grown by one)."""
        new = []
        for layer, caches in zip(self.layers, state):
            x_t, caches = layer.step(x_t, caches)
            new.append(caches)
        return x_t, new

    def attention_along_depth(self, times: int) -> tuple[int, list[tuple[float, Tensor, Tensor]]]:
        """One entry per layer, at t = l / layers (``times`` is ignored: the depth is discrete)."""
        n = len(self.layers)
        return self.cfg.heads, [(i / n, layer.field.attn.qkv.weight, layer.field.attn.out.weight)
                                for i, layer in enumerate(self.layers)]

    def feedforward_along_depth(self, times: int) -> list[tuple[float, Tensor, Tensor]]:
        """``[(t, fc1_weight, fc2_weight), ...]``, one entry per layer like `attention_along_depth`."""
        n = len(self.layers)
        return [(i / n, layer.field.ff[0].weight, layer.field.ff[-1].weight) for i, layer in enumerate(self.layers)]

    def depth_map(self, seq: Seq) -> DepthMap:
        x = seq.x.detach()                                                      # [B, L, D]
        mask = attention_mask(seq.mask, x.shape[1], self.cfg.causal, x.device)
        return DepthMap(x, seq.valid()[..., None], step=lambda i, y: self.layers[i](y, mask), steps=len(self.layers))
