"""PDE attention (Zhang & Zhou, EMNLP 2025, "Continuous-Time Attention: PDE-Guided Mechanisms for
Long-Sequence Transformers"): attention followed by a pseudo-time PDE evolution along the sequence axis.

One pre-norm layer: attention, then the PDE evolved over pseudo-time ``time`` along the sequence, then
the feed-forward part. ``target: states`` evolves the token states (each channel is a field over
positions); ``target: weights`` evolves each row of the attention matrix along the key axis and
renormalises it (non-negative, rows sum to 1) before it mixes the values.

PDEs (``pde``): ``diffusion`` u_t = D Δu; ``reaction_diffusion`` u_t = D Δu + r(u) (``reaction``:
ρ tanh u or ρ u (1 - σ(u))); ``advection_diffusion`` u_t = D Δu - ∂x(v u) (upwind); ``wave``
u_tt = c² Δu (from rest). Coefficients are learned per channel (states) or per head (weights) in
pseudo-time units, below fixed ceilings (``diffusion_max``, ``speed_max``, ``reaction_max``), so the
equation does not depend on how it is discretised: ``time`` sets how far it evolves and ``steps`` only
refines. The explicit stepper takes max(steps, ⌈time · rate / COURANT⌉) equal steps, where rate is the
stability bound of the ceilings (2 D + ρ, 2 D + |v|, c; a one-sided causal stencil counts D once), so
every step is stable whatever the learned values. ``stepper: spectral`` solves diffusion and the wave
exactly (DCT-II by FFT; ``steps`` is then irrelevant) and reaction–diffusion by Strang splitting of the
exact diffusion with the reaction. Boundaries are zero-flux at the ends of the VALID part of each
sequence (``boundary: fixed`` holds the two ends instead), so padding never reaches valid tokens;
``causal: true`` uses causal attention and one-sided stencils, so no token reaches an earlier one (on
states the one-sided stencil is upwind transport: see docs/heads.md). ``placement: after`` evolves the
states after the feed-forward part instead of between attention and it. A causal layer also runs one
position at a time for generation (`allocate_state` / `step`; not with held ends on states, whose last
token's output depends on whether more follow).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import ClassVar

import torch
import torch.nn.functional as F
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
CEILING_KEYS = {"D": "diffusion_max", "v": "speed_max", "c": "speed_max", "rho": "reaction_max"}
SPECTRAL = ("diffusion", "wave", "reaction_diffusion")
RAW_INIT = {"D": -2.0, "c": -2.0, "rho": 0.0, "v": 0.0}   # σ(-2) ≈ 0.12 of the ceiling; tanh(0) = 0
COURANT = 0.9            # explicit steps run at 90% of the stability limit (the wave's top mode stays bounded)
MAX_STEPS = 10_000       # more explicit steps than this is a config mistake, not a model
EPS = 1e-9


class PDEAttention(Block):
    @dataclass
    class Config:
        d_model: int = MISSING                 # stream width (injected)
        heads: int = 4                         # attention heads; must divide d_model
        pde: str = choice("diffusion", *PDES)  # the PDE evolved in pseudo-time
        target: str = choice("states", "weights")   # evolve token states or the attention weights
        stepper: str = choice("explicit", "spectral")  # spectral: exact diffusion / wave, split reaction
        time: float = 1.0                      # pseudo-time horizon T: how far the PDE evolves
        steps: int = 4                         # at least this many steps; more when stability needs them
        diffusion_max: float = 2.0             # ceiling of D (pseudo-time units)
        speed_max: float = 2.0                 # ceiling of c (wave) or |v| (advection)
        reaction_max: float = 1.0              # ceiling of |ρ|
        reaction: str = choice("tanh", "logistic")   # r(u) = ρ tanh u, or ρ u (1 - σ(u)) (authors' code)
        boundary: str = choice("neumann", "fixed")   # zero-flux ends, or ends held at their values (authors' code)
        placement: str = choice("inside", "after")   # PDE between attention and FF, or after the FF (authors' code)
        mlp_ratio: float = 4.0                 # feed-forward hidden width as a multiple of d_model
        causal: bool = False                   # no token reaches an earlier one

        renamed: ClassVar[dict] = {"solver": "stepper"}

        def validate(self, path: str) -> None:
            check_heads(self.d_model, self.heads, path)
            if self.steps < 1:
                raise ConfigError(f"{path}.steps", f"expected an integer >= 1, got {self.steps}")
            if not (self.time > 0 and math.isfinite(self.time)):
                raise ConfigError(f"{path}.time", f"expected a positive finite pseudo-time, got {self.time}")
            if self.stepper == "spectral" and self.pde not in SPECTRAL:
                raise ConfigError(f"{path}.stepper", f"'spectral' solves pde {', '.join(SPECTRAL)} only, got "
                                  f"pde '{self.pde}'", choices=["explicit"], got=self.stepper)
            if self.stepper == "spectral" and self.boundary == "fixed":
                raise ConfigError(f"{path}.boundary", "held ends have no spectral stepper here; use stepper: "
                                  "explicit or boundary: neumann", got=self.boundary)
            if self.placement == "after" and self.target == "weights":
                raise ConfigError(f"{path}.placement", "placement 'after' evolves the states; with target: "
                                  "weights the PDE acts inside attention", choices=["inside"], got=self.placement)
            if self.stepper == "spectral" and self.causal and self.target == "states":
                raise ConfigError(f"{path}.causal", "the one-sided causal stencil has no spectral solution; "
                                  "use stepper: explicit")
            for key in ("diffusion_max", "speed_max", "reaction_max"):
                value = getattr(self, key)
                if not (value > 0 and math.isfinite(value)):
                    raise ConfigError(f"{path}.{key}", f"expected a positive finite ceiling, got {value}")
            if self.substeps() > MAX_STEPS:
                key = max(self.rates(), key=self.rates().get)
                raise ConfigError(f"{path}.{CEILING_KEYS[key]}", f"time={self.time} with this ceiling needs "
                                  f"{self.substeps()} stable steps (> {MAX_STEPS}); lower {CEILING_KEYS[key]} "
                                  "or time", got=getattr(self, CEILING_KEYS[key]))

        def stencil_causal(self) -> bool:
            return self.causal and self.target == "states"

        def rates(self) -> dict[str, float]:
            """Each coefficient's share of the explicit stability bound at its ceiling (rate · dt <= 1)."""
            if self.stepper == "spectral":                             # diffusion and the wave are exact
                return {"rho": self.reaction_max} if self.pde == "reaction_diffusion" else {}
            weight = 1 if self.stencil_causal() else 2                 # weight of u_i in the stencil
            top = {"D": weight * self.diffusion_max, "v": self.speed_max, "c": self.speed_max,
                   "rho": self.reaction_max}
            return {k: top[k] for k in COEFFICIENTS[self.pde]}

        def substeps(self) -> int:
            """Equal steps over ``time``: ``steps``, or more where the stability bound needs them."""
            rate = sum(self.rates().values())
            return max(self.steps, math.ceil(self.time * rate / COURANT - 1e-9))

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
        self.top = {"D": cfg.diffusion_max, "v": cfg.speed_max, "c": cfg.speed_max, "rho": cfg.reaction_max}
        # Diffusion (and upwind advection–diffusion) of attention rows over the same key domain for every
        # query is one linear map E per (sample, head) that keeps rows non-negative and summing to 1 (flux
        # form, steps within the stability bound), so the evolved rows are A Eᵀ and the output A (Eᵀ V):
        # evolve the values by the transposed map and keep the fused kernel (O(L·hd) work, no L×L tensor).
        self.through_values = (cfg.target == "weights" and cfg.pde in ("diffusion", "advection_diffusion")
                               and not cfg.causal and cfg.boundary == "neumann")

    def coefficients(self) -> dict[str, Tensor]:
        """The PDE coefficients, one per field (channel or head), inside their stable ranges."""
        signed = {"rho"} | ({"v"} if not self.cfg.stencil_causal() else set())
        return {k: (torch.tanh(r) if k in signed else torch.sigmoid(r)) * self.top[k] for k, r in self.raw.items()}

    def evolve(self, u: Tensor, m: Tensor, shape: tuple) -> Tensor:
        """Evolve ``u [..., n]`` on the valid positions ``m``; coefficients are viewed as ``shape``."""
        cfg = self.cfg
        coef = {k: c.view(shape) for k, c in self.coefficients().items()}
        if cfg.stepper == "explicit":
            n = cfg.substeps()
            held = ops.ends(m.expand(u.shape)) if cfg.boundary == "fixed" else None
            return ops.explicit(u, m, cfg.pde, coef, cfg.time / n, n, cfg.stencil_causal(), cfg.reaction, held)
        if cfg.pde == "wave":
            return ops.wave_spectral(u, m, coef["c"], cfg.time)
        if cfg.pde == "reaction_diffusion":
            return ops.split_reaction_diffusion(u, m, coef, cfg.time, cfg.substeps(), cfg.reaction)
        return ops.diffusion_spectral(u, m, coef["D"], cfg.time)

    def evolve_transpose(self, u: Tensor, m: Tensor, shape: tuple) -> Tensor:
        """Eᵀ u for the linear evolution E of `evolve` (diffusion: E is symmetric; advection–diffusion)."""
        cfg = self.cfg
        if cfg.pde == "diffusion":
            return self.evolve(u, m, shape)
        coef = {k: c.view(shape) for k, c in self.coefficients().items()}
        n = cfg.substeps()
        return ops.explicit_transpose(u, m, cfg.pde, coef, cfg.time / n, n)

    def attention_maps(self, h: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(softmax weights, evolved weights [B, H, L, L], values [B, H, L, hd]) for normalised states h."""
        b, n, d = h.shape
        heads = self.cfg.heads
        q, k, v = self.attn.qkv(h).view(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)  # 3 x [B, H, L, hd]
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // heads)               # [B, H, L, L]
        allowed = attention_mask(valid, n, self.cfg.causal, h.device)          # [B, 1, L, L]
        before = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
        keys = valid[:, None, None, :].expand(b, 1, n, n)                      # [B, 1, L, L] PDE domain
        if self.cfg.causal:
            keys = keys & torch.ones(n, n, dtype=torch.bool, device=h.device).tril()
        after = torch.where(keys, self.evolve(before, keys, (heads, 1, 1)), 0.0).clamp(min=0)
        return before, after / after.sum(-1, keepdim=True).clamp(min=EPS), v  # rows sum to 1

    def attention_weights(self, h: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """(evolved attention weights [B, H, L, L], values [B, H, L, hd]) for normalised states h."""
        return self.attention_maps(h, valid)[1:]

    def _evolved_attention(self, h: Tensor, valid: Tensor, mask: Tensor | None) -> Tensor:
        b, n, d = h.shape
        if self.through_values:
            heads = self.cfg.heads
            q, k, v = self.attn.qkv(h).view(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)  # 3 x [B, H, L, hd]
            # the PDE in at least float32 (the DCT needs it; autocast may hand bf16 values), attention in q's dtype
            wide = torch.promote_types(v.dtype, torch.float32)
            v = self.evolve_transpose(v.transpose(-1, -2).to(wide), valid[:, None, None, :], (heads, 1, 1))
            v = v.transpose(-1, -2).to(q.dtype)                                # [B, H, L, hd]
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask(mask, n, False, h.device))
        else:
            weights, v = self.attention_weights(h, valid)
            y = weights @ v                                                    # [B, H, L, hd]
        return self.attn.out(y.transpose(1, 2).reshape(b, n, d))               # [B, L, D]

    def forward(self, seq: Seq) -> Seq:
        x, valid = seq.x, seq.valid()                                          # [B, L, D], [B, L]
        if self.cfg.target == "weights":
            x = x + self._evolved_attention(self.norm1(x), valid, seq.mask)
        else:
            x = x + self.attn(self.norm1(x), attention_mask(seq.mask, x.shape[1], self.cfg.causal, x.device))
            if self.cfg.placement == "inside":
                x = self._evolved_states(x, valid)
        x = x + self.ff(self.norm2(x))
        if self.cfg.target == "states" and self.cfg.placement == "after":
            x = self._evolved_states(x, valid)
        return replace(seq, x=x)

    def _evolved_states(self, x: Tensor, valid: Tensor) -> Tensor:
        return self.evolve(x.transpose(1, 2), valid[:, None, :], (-1, 1)).transpose(1, 2)   # via [B, D, L]

    def allocate_state(self, batch_size: int, device=None, dtype=None) -> dict:
        """The key/value cache (and, on states, the window of the latest pre-PDE states) for `step`."""
        if not self.cfg.causal:
            raise RuntimeError("a pde_attention with causal: false lets tokens reach earlier ones; it has no "
                               "step-by-step mode (set causal: true)")
        if self.cfg.target == "states" and self.cfg.boundary == "fixed":
            raise RuntimeError("boundary: fixed holds the last token's state, so a token's output changes when "
                               "more tokens follow; it has no step-by-step mode (use boundary: neumann)")
        p = next(self.parameters())
        device, dtype = device or p.device, dtype or p.dtype
        state = {"attn": self.attn.empty_cache(batch_size, device, dtype)}
        if self.cfg.target == "states":
            state["window"] = torch.zeros(batch_size, self.cfg.d_model, 0, device=device, dtype=dtype)
        return state

    def step(self, x_t: Tensor, state: dict, gap: Tensor | None = None) -> tuple[Tensor, dict]:
        """One position x_t [B, D] -> (y_t [B, D], new state), equal to the causal full pass. On weights the new
        attention row evolves over its own keys. On states the one-sided stencil moves information one
        position per explicit step, so a token's evolved state depends on the latest ``substeps() + 1``
        pre-PDE states alone: the window keeps those and evolves them as the full pass evolves the sequence
        (its artificial left end reaches no further than the window's second-to-last position)."""
        cfg, new = self.cfg, {}
        if cfg.target == "weights":
            y, new["attn"] = self._row_step(self.norm1(x_t), state["attn"])
        else:
            y, new["attn"] = self.attn.step(self.norm1(x_t), state["attn"])
        x = x_t + y
        if cfg.target == "states" and cfg.placement == "inside":
            x, new["window"] = self._window_step(x, state["window"])
        x = x + self.ff(self.norm2(x))
        if cfg.target == "states" and cfg.placement == "after":
            x, new["window"] = self._window_step(x, state["window"])
        return x, new

    def _window_step(self, x: Tensor, window: Tensor) -> tuple[Tensor, Tensor]:
        """The evolved state of a new position x [B, D] from the window [B, D, W] of the states before it."""
        window = torch.cat([window, x.unsqueeze(-1)], -1)[..., -(self.cfg.substeps() + 1):]      # [B, D, W]
        domain = torch.ones(window.shape[0], 1, window.shape[-1], dtype=torch.bool, device=x.device)
        return self.evolve(window, domain, (-1, 1))[..., -1], window

    def _row_step(self, h: Tensor, cache: dict) -> tuple[Tensor, dict]:
        """Evolved attention of one new position (normalised state h [B, D]) over every cached key."""
        b, d = h.shape
        heads = self.cfg.heads
        q, keys, values, cache = self.attn.extend(h, cache)                    # [B, H, 1, hd], [B, H, n, hd] x2
        before = torch.softmax(q @ keys.transpose(-1, -2) / math.sqrt(d // heads), dim=-1)    # [B, H, 1, n]
        domain = torch.ones(b, 1, 1, keys.shape[2], dtype=torch.bool, device=h.device)       # the keys <= i
        after = self.evolve(before, domain, (heads, 1, 1)).clamp(min=0)
        after = after / after.sum(-1, keepdim=True).clamp(min=EPS)             # rows sum to 1
        return self.attn.out((after @ values).reshape(b, d)), cache
