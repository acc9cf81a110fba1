"""Mamba-2: selective state-space layer with state-space duality (SSD) (Dao & Gu, 2024, "Transformers
are SSMs: Generalized Models and Efficient Algorithms Through Structured State Space Duality").

One in-projection gives (z, x, B, C, Δ); x, B, C pass a causal depthwise convolution and SiLU; heads
of width ``head_dim`` share a scalar decay a_h: h_l = exp(Δ_l a_h) h_{l-1} + Δ_l x_l B_lᵀ,
y_l = h_l C_l + D x_l, computed chunk by chunk (`hybridseq.ops.ssd_chunked`); then RMSNorm(y · SiLU(z))
and the out-projection, inside a pre-norm residual layer. With observation times Δ_l is multiplied by
the gap (see `ssm_common`). ``impl``: mamba-ssm's triton SSD kernel (``cuda``), ours (``torch``), or
the first that works on the input (``auto``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...ops import ssd_chunked
from ...ops.dispatch import IMPLS, check_impl, cuda_kernel, impl_for, planned_impl
from ...seq import Seq
from ..base import choice
from .mamba import check_positive, init_dt_bias
from .ssm_common import SSMBlock, SSMConfig, causal_conv, conv_step


class Mamba2(SSMBlock):
    @dataclass
    class Config(SSMConfig):
        d_state: int = 64                          # state size N per head
        expand: int = 2                            # inner width E = expand * d_model
        head_dim: int = 64                         # channels P per head (H = E / P heads)
        n_groups: int = 1                          # groups of heads sharing B and C
        d_conv: int = 4                            # causal convolution width
        chunk_size: int = 64                       # SSD chunk length
        dt_floor: float = 1e-4
        impl: str = choice(*IMPLS)

        def validate(self, path: str) -> None:
            super().validate(path)
            check_positive(self, path, ("d_state", "expand", "head_dim", "n_groups", "d_conv", "chunk_size"))
            inner = self.expand * self.d_model
            if inner % self.head_dim:
                raise ConfigError(f"{path}.head_dim",
                                  f"head_dim={self.head_dim} must divide expand * d_model = {inner}")
            if (inner // self.head_dim) % self.n_groups:
                raise ConfigError(f"{path}.n_groups", f"n_groups={self.n_groups} must divide the number of "
                                  f"heads {inner // self.head_dim}")
            check_impl(self.impl, f"{path}.impl")

    example = {"head_dim": 8, "d_state": 8, "chunk_size": 4}

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        d, e = cfg.d_model, cfg.expand * cfg.d_model
        self.heads, gn = e // cfg.head_dim, cfg.n_groups * cfg.d_state
        self.sizes = [e, e + 2 * gn, self.heads]                           # z, (x, B, C), Δ
        self.in_proj = nn.Linear(d, sum(self.sizes), bias=False)
        self.conv = nn.Conv1d(e + 2 * gn, e + 2 * gn, cfg.d_conv, groups=e + 2 * gn, padding=cfg.d_conv - 1)
        self.dt_bias = nn.Parameter(init_dt_bias(self.heads, cfg.dt_min, cfg.dt_max, cfg.dt_floor))  # [H]
        self.a_log = nn.Parameter(torch.log(torch.empty(self.heads).uniform_(1, 16)))                # [H]
        self.d = nn.Parameter(torch.ones(self.heads))
        self.norm_out = nn.RMSNorm(e)
        self.out_proj = nn.Linear(e, d, bias=False)
        self.impl = planned_impl(cfg.impl)

    def _split(self, xbc: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x [..., H, P], B, C [..., G, N] from the convolved (x, B, C) [..., E + 2GN]."""
        e, g, n = self.sizes[0], self.cfg.n_groups, self.cfg.d_state
        x, B, C = xbc.split([e, g * n, g * n], dim=-1)
        lead = xbc.shape[:-1]
        return x.reshape(*lead, self.heads, -1), B.reshape(*lead, g, n), C.reshape(*lead, g, n)

    def mix(self, u: Tensor, seq: Seq) -> Tensor:
        z, xbc, dt = self.in_proj(u).split(self.sizes, dim=-1)             # [B, L, .]
        x, B, C = self._split(F.silu(causal_conv(xbc, self.conv)))         # [B, L, H, P], [B, L, G, N] x2
        dt = F.softplus(dt + self.dt_bias)                                  # [B, L, H]
        gaps = self.gaps(seq)
        if gaps is not None:
            dt = dt * gaps.unsqueeze(-1)
        A = -torch.exp(self.a_log)                                          # [H]
        self.impl = impl_for(self.cfg.impl, x, "ssd")
        if self.impl == "cuda":
            y = cuda_kernel("ssd")(x.contiguous(), dt.contiguous(), A, B.contiguous(), C.contiguous(),
                                   chunk_size=self.cfg.chunk_size, D=self.d)
        else:
            y = ssd_chunked(x, dt, A, B, C, self.cfg.chunk_size) + x * self.d.unsqueeze(-1)
        y = y.reshape(*u.shape[:2], -1)                                     # [B, L, E]
        return self.out_proj(self.norm_out(y * F.silu(z)))

    def init_state(self, batch: int, device, dtype) -> dict:
        width = self.sizes[1]
        return {"conv": torch.zeros(batch, width, self.cfg.d_conv, device=device, dtype=dtype),
                "h": torch.zeros(batch, self.heads, self.cfg.head_dim, self.cfg.d_state, device=device, dtype=dtype)}

    def mix_step(self, u: Tensor, state: dict, gap: Tensor | None) -> tuple[Tensor, dict]:
        z, xbc, dt = self.in_proj(u).split(self.sizes, dim=-1)             # [B, .]
        xbc, window = conv_step(xbc, state["conv"], self.conv)
        x, B, C = self._split(F.silu(xbc))                                  # [B, H, P], [B, G, N] x2
        rep = self.heads // self.cfg.n_groups
        B, C = B.repeat_interleave(rep, dim=1), C.repeat_interleave(rep, dim=1)   # [B, H, N]
        dt = F.softplus(dt + self.dt_bias)                                  # [B, H]
        if gap is not None:
            dt = dt * gap.unsqueeze(-1)
        decay = torch.exp(dt * -torch.exp(self.a_log))[..., None, None]     # [B, H, 1, 1]
        h = decay * state["h"] + (dt.unsqueeze(-1) * x).unsqueeze(-1) * B.unsqueeze(2)   # [B, H, P, N]
        y = (h * C.unsqueeze(2)).sum(-1) + x * self.d.unsqueeze(-1)         # [B, H, P]
        y = y.reshape(u.shape[0], -1)
        return self.out_proj(self.norm_out(y * F.silu(z))), {"conv": window, "h": h}
