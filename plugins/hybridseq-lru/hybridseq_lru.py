"""Linear Recurrent Unit backbone for hybridseq (Orvieto et al., "Resurrecting Recurrent Neural Networks
for Long Sequences", ICML 2023).

A complex diagonal linear recurrence h_k = λ ⊙ h_{k-1} + γ ⊙ (B u_k), read out as y_k = Re(C h_k) + D ⊙ u_k.
λ = exp(-exp(ν_log) + i·exp(θ_log)) is initialised uniformly on the ring r_min <= |λ| <= r_max with
phases in [0, max_phase]; γ = sqrt(1 - |λ|²) keeps the state's scale at initialisation. The recurrence is
evaluated for all positions at once by a parallel (Hillis–Steele) scan: log2(L) vectorised steps. With
``time_gaps: true`` and observation times in ``seq.t``, step k uses λ^(Δt_k / time_unit), so a longer
gap decays the state more; by default the unit is each series' mean gap, so time units do not matter.
The block is pre-norm: x + GLU(GELU(LRU(LayerNorm(x)))). It also runs one position at a time
(`allocate_state` / `step`), which is how ``hybridseq generate`` samples from an LRU language model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

import torch
import torch.nn.functional as F
from omegaconf import MISSING
from torch import Tensor, nn

import hybridseq
from hybridseq import ConfigError, Seq
from hybridseq.blocks.layers import linear_scan, time_gaps

TINY = 1e-7   # keeps the log-parameters finite at the edges of the ring (|λ| -> 1, phase -> 0)


class LRU(hybridseq.Block):
    @dataclass
    class Config:
        d_model: int = MISSING       # stream width (injected)
        d_state: int = 64            # complex state size N
        r_min: float = 0.9           # smallest |λ| at initialisation
        r_max: float = 0.999         # largest |λ| at initialisation (< 1: stable)
        max_phase: float = 6.283     # phases arg(λ) start uniform in [0, max_phase]
        time_gaps: bool = False      # use seq.t: step k advances by λ^(Δt_k / time_unit)
        time_unit: Optional[float] = None  # the time gap that counts as one step; None: each series' mean gap
        dropout: float = 0.0

        def validate(self, path: str) -> None:
            if not 0.0 <= self.r_min < self.r_max <= 1.0:
                raise ConfigError(f"{path}.r_max", f"need 0 <= r_min < r_max <= 1, got r_min={self.r_min}, "
                                  f"r_max={self.r_max}")
            for key in ("d_state", "max_phase", "time_unit"):
                value = getattr(self, key)
                if value is not None and value <= 0:
                    raise ConfigError(f"{path}.{key}", f"must be > 0, got {value}")

    example = {"d_state": 4, "time_gaps": True}

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        h, n = cfg.d_model, cfg.d_state
        radius_sq = torch.rand(n) * (cfg.r_max ** 2 - cfg.r_min ** 2) + cfg.r_min ** 2      # |λ|² on the ring
        nu = -0.5 * torch.log(radius_sq)                                                   # |λ| = exp(-ν)
        self.nu_log = nn.Parameter(torch.log(nu.clamp_min(TINY)))
        self.theta_log = nn.Parameter(torch.log(cfg.max_phase * torch.rand(n).clamp_min(TINY)))
        self.gamma_log = nn.Parameter(0.5 * torch.log1p(-radius_sq.clamp_max(1 - TINY)))   # log sqrt(1-|λ|²)
        self.B_re = nn.Parameter(torch.randn(n, h) / math.sqrt(2 * h))
        self.B_im = nn.Parameter(torch.randn(n, h) / math.sqrt(2 * h))
        self.C_re = nn.Parameter(torch.randn(h, n) / math.sqrt(n))
        self.C_im = nn.Parameter(torch.randn(h, n) / math.sqrt(n))
        self.D = nn.Parameter(torch.randn(h))
        self.norm = nn.LayerNorm(h)
        self.glu = nn.Linear(h, 2 * h)
        self.drop = nn.Dropout(cfg.dropout)

    def log_lambda(self) -> Tensor:
        """[N] complex log λ = -ν + iθ."""
        return torch.complex(-self.nu_log.exp(), self.theta_log.exp())

    def recurrence(self, u: Tensor, gaps: Tensor | None, valid: Tensor) -> Tensor:
        """The LRU map u [B, L, H] -> y [B, L, H]; ``gaps`` [B, L] in steps, or None for one step each."""
        steps = gaps[..., None] if gaps is not None else torch.ones_like(u[:, :, :1])     # [B, L, 1]
        a = torch.exp(steps * self.log_lambda())                                          # [B, L, N]
        a = torch.where(valid[..., None], a, torch.ones_like(a))                          # carry state over padding
        gamma_b = torch.complex(self.B_re, self.B_im) * self.gamma_log.exp()[:, None]     # [N, H]
        h = linear_scan(a, u.to(gamma_b.dtype) @ gamma_b.T)                               # [B, L, N]
        return (h @ torch.complex(self.C_re, self.C_im).T).real + self.D * u              # [B, L, H]

    def steps(self, seq: Seq, valid: Tensor) -> Tensor | None:
        """[B, L] time gaps in units of steps, or None (one step per position) without ``time_gaps``."""
        if not self.cfg.time_gaps or seq.t is None:
            return None
        if self.cfg.time_unit is not None:
            return time_gaps(seq.t.to(seq.x.dtype), valid, self.cfg.time_unit)            # [B, L]
        gaps = time_gaps(seq.t.to(seq.x.dtype), valid, 1.0)   # 1 at each first step, whose state is still 0
        later = valid & (valid.cumsum(1) > 1)                                             # [B, L] after the first
        unit = (gaps * later).sum(1, keepdim=True) / later.sum(1, keepdim=True).clamp_min(1)  # [B, 1] mean gap
        return gaps / torch.where(unit > 0, unit, torch.ones_like(unit))

    def forward(self, seq: Seq) -> Seq:
        valid = seq.valid()                                                               # [B, L]
        u = self.norm(seq.x) * valid[..., None]                                           # [B, L, H]
        y = F.gelu(self.recurrence(u, self.steps(seq, valid), valid))
        return replace(seq, x=seq.x + self.drop(F.glu(self.glu(y), dim=-1)))

    def allocate_state(self, batch_size: int, device=None, dtype=None) -> dict:
        """The zero state [B, N] (complex) before the first step, for `step` (generation)."""
        p = self.nu_log
        cdtype = torch.complex128 if (dtype or p.dtype) == torch.float64 else torch.complex64
        return {"h": torch.zeros(batch_size, self.cfg.d_state, dtype=cdtype, device=device or p.device)}

    def step(self, x_t: Tensor, state: dict, gap: Tensor | None = None) -> tuple[Tensor, dict]:
        """One position of the recurrence: x_t [B, H] -> (y_t [B, H], new state), equal to `forward` at that
        position; ``gap`` [B] is the time since the previous position in steps (1 when None)."""
        u = self.norm(x_t)                                                                # [B, H]
        log_a = self.log_lambda() if gap is None else gap[:, None] * self.log_lambda()    # [N] or [B, N]
        gamma_b = torch.complex(self.B_re, self.B_im) * self.gamma_log.exp()[:, None]     # [N, H]
        h = torch.exp(log_a) * state["h"] + u.to(gamma_b.dtype) @ gamma_b.T              # [B, N]
        y = F.gelu((h @ torch.complex(self.C_re, self.C_im).T).real + self.D * u)         # [B, H]
        return x_t + self.drop(F.glu(self.glu(y), dim=-1)), {"h": h}

    def stats(self) -> dict:
        """``max_radius``: the largest |λ|, i.e. how slowly the longest memory fades (always < 1)."""
        return {"max_radius": round(float(torch.exp(-self.nu_log.detach().exp()).max()), 4)}


@hybridseq.hookimpl
def hybridseq_register_blocks(register):
    register("lru", LRU)
