"""PDE attention (Zhang & Zhou, 2025): attention followed by a pseudo-time PDE evolution along the
sequence axis.

One pre-norm layer: attention, then ``steps`` explicit steps (total pseudo-time ``time``) of a PDE
along the sequence, then the feed-forward part. ``target: states`` evolves the token states (each
channel is a field over positions); ``target: weights`` evolves each row of the attention matrix along
the key axis and renormalises it (non-negative, rows sum to 1) before it mixes the values.

PDEs (``pde``): ``diffusion`` u_t = D Δu; ``reaction_diffusion`` u_t = D Δu + ρ tanh(u);
``advection_diffusion`` u_t = D Δu - ∂x(v u) (upwind); ``wave`` u_tt = c² Δu (velocity state,
symplectic Euler, starts at rest). Coefficients are learned per channel (states) or per head (weights)
and squashed below ceilings that keep the explicit scheme stable for dt = time/steps:
2·D·dt <= 1 (causal: D·dt <= 1), adding |v|·dt for advection (CFL), ρ·dt <= 1, c·dt <= 1.
``solver: spectral`` solves diffusion exactly (DCT-II by FFT). Boundaries are zero-flux at the ends of
the VALID part of each sequence, so padding never reaches valid tokens; ``causal: true`` uses causal
attention and one-sided stencils, so no token reaches an earlier one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

import torch
from omegaconf import MISSING
from torch import Tensor, nn

from ...errors import ConfigError
from ...seq import Seq
from ..base import Block, choice
from ..layers import FeedForward, SelfAttention, attention_mask, check_heads
from . import pde as ops

PDES = ("diffusion", "wave", "reaction_diffusion", "advection_diffusion")
COEFFICIENTS = {"diffusion": ("D",), "reaction_diffusion": ("D", "rho"), "advection_diffusion": ("D", "v"),
                "wave": ("c",)}
RAW_INIT = {"D": -2.0, "c": -2.0, "rho": 0.0, "v": 0.0}   # σ(-2) ≈ 0.12 of the ceiling; tanh(0) = 0
EPS = 1e-9


class PDEAttention(Block):
    @dataclass
    class Config:
        d_model: int = MISSING                 # stream width (injected)
        heads: int = 4                         # attention heads; must divide d_model
        pde: str = choice("diffusion", *PDES)  # the PDE evolved in pseudo-time
        target: str = choice("states", "weights")   # evolve token states or the attention weights
        solver: str = choice("explicit", "spectral")  # spectral: exact, diffusion only
        time: float = 1.0                      # pseudo-time horizon T
        steps: int = 4                         # explicit steps; dt = time / steps
        diffusion_max: Optional[float] = None  # ceiling of D; None = the largest stable value for dt
        speed_max: Optional[float] = None      # ceiling of c (wave) or |v| (advection); None = stable max
        reaction_max: Optional[float] = None   # ceiling of |ρ|; None = 1/dt
        mlp_ratio: float = 4.0                 # feed-forward hidden width as a multiple of d_model
        causal: bool = False                   # no token reaches an earlier one

        def validate(self, path: str) -> None:
            check_heads(self.d_model, self.heads, path)
            if self.steps < 1:
                raise ConfigError(f"{path}.steps", f"expected an integer >= 1, got {self.steps}")
            if not self.time > 0:
                raise ConfigError(f"{path}.time", f"expected a positive pseudo-time, got {self.time}")
            if self.solver == "spectral" and self.pde != "diffusion":
                raise ConfigError(f"{path}.solver", f"'spectral' solves pde 'diffusion' only, got pde "
                                  f"'{self.pde}'", choices=["explicit"], got=self.solver)
            if self.solver == "spectral" and self.causal and self.target == "states":
                raise ConfigError(f"{path}.causal", "the one-sided causal stencil has no spectral solution; "
                                  "use solver: explicit")
            for key, value in (("diffusion_max", self.diffusion_max), ("speed_max", self.speed_max),
                               ("reaction_max", self.reaction_max)):
                if value is not None and not value > 0:
                    raise ConfigError(f"{path}.{key}", f"expected a positive ceiling, got {value}")
            if self.solver == "explicit":
                self._check_stable(path)

        def dt(self) -> float:
            return self.time / self.steps

        def ceilings(self) -> dict[str, float]:
            """Upper bounds of the learnable coefficients (defaults: stable for dt)."""
            dt, weight = self.dt(), 1 if self.stencil_causal() else 2    # weight of u_i in the stencil
            share = 0.5 if self.pde == "advection_diffusion" else 1.0     # D and v share the CFL budget
            return {"D": self.diffusion_max or share / (weight * dt), "v": self.speed_max or share / dt,
                    "c": self.speed_max or 1 / dt, "rho": self.reaction_max or 1 / dt}

        def stencil_causal(self) -> bool:
            return self.causal and self.target == "states"

        def _check_stable(self, path: str) -> None:
            dt, top = self.dt(), self.ceilings()
            weight = 1 if self.stencil_causal() else 2
            checks = {"diffusion": [("diffusion_max", weight * top["D"] * dt)],
                      "reaction_diffusion": [("diffusion_max", weight * top["D"] * dt),
                                             ("reaction_max", top["rho"] * dt)],
                      "advection_diffusion": [("speed_max" if self.speed_max and not self.diffusion_max
                                               else "diffusion_max", (weight * top["D"] + top["v"]) * dt)],
                      "wave": [("speed_max", top["c"] * dt)]}[self.pde]
            for key, number in checks:
                if number > 1 + 1e-9:
                    need = math.ceil(self.steps * number)
                    raise ConfigError(f"{path}.{key}", f"unstable explicit step: the stability number is "
                                      f"{number:.3g} > 1 with dt = time/steps = {dt:.3g}; lower {key} or "
                                      f"set steps >= {need}", got=getattr(self, key))

    example = {"heads": 2, "pde": "advection_diffusion", "mlp_ratio": 2.0, "steps": 3}

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.attn = SelfAttention(cfg.d_model, cfg.heads)
        self.norm2 = nn.LayerNorm(cfg.d_model)
        self.ff = FeedForward(cfg.d_model, int(cfg.mlp_ratio * cfg.d_model), cfg.d_model)
        fields = cfg.d_model if cfg.target == "states" else cfg.heads
        self.raw = nn.ParameterDict({k: nn.Parameter(torch.full((fields,), RAW_INIT[k]))
                                     for k in COEFFICIENTS[cfg.pde]})          # unconstrained coefficients
        self.top = cfg.ceilings()

    def coefficients(self) -> dict[str, Tensor]:
        """The PDE coefficients, one per field (channel or head), inside their stable ranges."""
        signed = {"rho"} | ({"v"} if not self.cfg.stencil_causal() else set())
        return {k: (torch.tanh(r) if k in signed else torch.sigmoid(r)) * self.top[k] for k, r in self.raw.items()}

    def evolve(self, u: Tensor, m: Tensor, shape: tuple) -> Tensor:
        """Evolve ``u [..., n]`` on the valid positions ``m``; coefficients are viewed as ``shape``."""
        coef = {k: c.view(shape) for k, c in self.coefficients().items()}
        if self.cfg.solver == "spectral":
            return ops.diffusion_spectral(u, m, coef["D"], self.cfg.time)
        return ops.explicit(u, m, self.cfg.pde, coef, self.cfg.dt(), self.cfg.steps, self.cfg.stencil_causal())

    def attention_weights(self, h: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """(evolved attention weights [B, H, L, L], values [B, H, L, hd]) for normalised states h."""
        b, n, d = h.shape
        heads = self.cfg.heads
        q, k, v = self.attn.qkv(h).view(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)  # 3 x [B, H, L, hd]
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // heads)               # [B, H, L, L]
        allowed = attention_mask(valid, n, self.cfg.causal, h.device)          # [B, 1, L, L]
        weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
        keys = valid[:, None, None, :].expand(b, 1, n, n)                      # [B, 1, L, L] PDE domain
        if self.cfg.causal:
            keys = keys & torch.ones(n, n, dtype=torch.bool, device=h.device).tril()
        weights = torch.where(keys, self.evolve(weights, keys, (heads, 1, 1)), 0.0).clamp(min=0)
        return weights / weights.sum(-1, keepdim=True).clamp(min=EPS), v       # rows sum to 1

    def _evolved_attention(self, h: Tensor, valid: Tensor) -> Tensor:
        weights, v = self.attention_weights(h, valid)
        b, n, d = h.shape
        return self.attn.out((weights @ v).transpose(1, 2).reshape(b, n, d))   # [B, L, D]

    def forward(self, seq: Seq) -> Seq:
        x, valid = seq.x, seq.valid()                                          # [B, L, D], [B, L]
        if self.cfg.target == "weights":
            x = x + self._evolved_attention(self.norm1(x), valid)
        else:
            x = x + self.attn(self.norm1(x), attention_mask(seq.mask, x.shape[1], self.cfg.causal, x.device))
            u = self.evolve(x.transpose(1, 2), valid[:, None, :], (-1, 1))     # [B, D, L]
            x = u.transpose(1, 2)
        x = x + self.ff(self.norm2(x))
        return replace(seq, x=x)
