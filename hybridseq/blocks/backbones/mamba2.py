"""Mamba-2: selective state-space layer with state-space duality (SSD) (Dao & Gu, 2024, "Transformers
are SSMs: Generalized Models and Efficient Algorithms Through Structured State Space Duality").

One in-projection gives (z, x, B, C, Δ); x, B, C pass a causal depthwise convolution and SiLU; heads
of width ``head_dim`` share a scalar decay a_h: h_l = exp(Δ_l a_h) h_{l-1} + Δ_l x_l B_lᵀ,
y_l = h_l C_l + D x_l, computed chunk by chunk (`hybridseq.ops.ssd_chunked`); then RMSNorm(y · SiLU(z))
and the out-projection, inside a pre-norm residual layer. With observation times position l takes the
exact zero-order hold over its gap g_l of the unit step (``timed_disc: zoh``, default): decay
exp(g_l Δ_l a_h), input weight Δ_l (exp(g_l Δ_l a_h) - 1)/(exp(Δ_l a_h) - 1); ``timed_disc: scaled``
multiplies Δ_l by the gap instead (see `ssm_common`).
``impl``: mamba-ssm's triton SSD kernels (``cuda``: the fused ``mamba_split_conv1d_scan_combined`` for the whole
layer without times or padding, else causal-conv1d and ``mamba_chunk_scan_combined``), ours (``torch``), or
the first that works on the input (``auto``). Packed sequences: ``block(seq, seq_idx=...)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...ops import ssd_chunked, zoh_weight
from ...ops.dispatch import IMPLS, check_impl, cuda_kernel, fast_path, impl_for, kernel_dtype, planned_impl
from ...seq import Seq
from ..base import choice
from ..layers import no_weight_decay
from .mamba import check_positive, init_dt_bias, scaled_out_proj
from .ssm_common import SSMBlock, SSMConfig, conv_silu, conv_step, restart_gaps


class GroupRMSNorm(nn.Module):
    """RMSNorm over each of ``groups`` equal slices of the last dimension, eps 1e-5, one weight per channel
    (Mamba-2's gated norm, applied to y · SiLU(z); normalised in float32)."""

    def __init__(self, width: int, groups: int, eps: float = 1e-5):
        super().__init__()
        self.groups, self.eps = groups, eps
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, y: Tensor) -> Tensor:
        g = y.float().unflatten(-1, (self.groups, -1))                     # [..., G, E/G]
        g = g * torch.rsqrt(g.square().mean(-1, keepdim=True) + self.eps)
        return g.flatten(-2).to(y.dtype) * self.weight


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
        dt_limit_min: float = 0.0                  # Δ = softplus(·) clamped to [dt_limit_min, dt_limit_max]
        dt_limit_max: float = math.inf             # (mamba_ssm's dt_limit; the default clamps nothing)
        d_has_hdim: bool = False                   # D per channel [H, P] instead of per head [H]
        learnable_init_state: bool = False         # a learned state h_0 [H, P, N] instead of zeros
        norm: str = choice("rms", "layer")         # pre-norm (mamba_ssm: RMSNorm)
        n_layer: int = 1                           # layers in the stack: out_proj init scaled by 1/√n_layer
        impl: str = choice(*IMPLS)

        def validate(self, path: str) -> None:
            super().validate(path)
            check_positive(self, path, ("d_state", "expand", "head_dim", "n_groups", "d_conv", "chunk_size",
                                        "n_layer"))
            inner = self.expand * self.d_model
            if inner % self.head_dim:
                raise ConfigError(f"{path}.head_dim",
                                  f"head_dim={self.head_dim} must divide expand * d_model = {inner}")
            if (inner // self.head_dim) % self.n_groups:
                raise ConfigError(f"{path}.n_groups", f"n_groups={self.n_groups} must divide the number of "
                                  f"heads {inner // self.head_dim}")
            if not (0 <= self.dt_limit_min < self.dt_limit_max):
                raise ConfigError(f"{path}.dt_limit_min", f"need 0 <= dt_limit_min < dt_limit_max, got "
                                  f"{self.dt_limit_min}, {self.dt_limit_max}")
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
        self.d = nn.Parameter(torch.ones(self.heads, cfg.head_dim) if cfg.d_has_hdim else torch.ones(self.heads))
        if cfg.learnable_init_state:
            self.h0 = nn.Parameter(torch.zeros(self.heads, cfg.head_dim, cfg.d_state))     # [H, P, N]
        self.norm_out = GroupRMSNorm(e, cfg.n_groups)
        self.out_proj = scaled_out_proj(e, d, cfg.n_layer)
        no_weight_decay(self.a_log, self.d, self.dt_bias)
        self.impl = planned_impl(cfg.impl)

    def _split(self, xbc: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x [..., H, P], B, C [..., G, N] from the convolved (x, B, C) [..., E + 2GN]."""
        e, g, n = self.sizes[0], self.cfg.n_groups, self.cfg.d_state
        x, B, C = xbc.split([e, g * n, g * n], dim=-1)
        lead = xbc.shape[:-1]
        return x.reshape(*lead, self.heads, -1), B.reshape(*lead, g, n), C.reshape(*lead, g, n)

    def mix(self, u: Tensor, seq: Seq, seq_idx: Tensor | None = None) -> Tensor:
        """u [B, L, D] -> [B, L, D]. ``seq_idx`` [B, L] int, non-decreasing: packed sequences (mamba_ssm's
        ``seq_idx``): state, convolution window and time gaps restart where it changes."""
        self.impl = impl_for(self.cfg.impl, u, "ssd", path="mamba2.impl")
        gaps = self.gaps(seq)
        if seq_idx is not None:
            self._check_packing(seq_idx, u)
            gaps = None if gaps is None else restart_gaps(gaps, seq.valid(), seq_idx)
        A = -torch.exp(self.a_log)                                          # [H]
        if self.impl == "cuda" and gaps is None and fast_path(u, "ssd_fused"):
            return self._fused(u, A, seq_idx)
        z, xbc, dt = self.in_proj(u).split(self.sizes, dim=-1)             # [B, L, .]
        xbc = conv_silu(xbc, self.conv, self.impl == "cuda" and fast_path(u, "causal_conv1d"), seq.mask, seq_idx)
        x, B, C = self._split(xbc)                                          # [B, L, H, P], [B, L, G, N] x2
        dt, dt_in = self._steps(self._dt(dt), gaps, A, self.exact_hold(seq))   # [B, L, H]
        if self.impl == "cuda":                                             # the kernel's input step is dt
            x_in = x * (dt_in / torch.where(dt > 0, dt, torch.ones_like(dt))).unsqueeze(-1)
            work = kernel_dtype(u)
            extra = {} if seq_idx is None else {"seq_idx": seq_idx.to(torch.int32).contiguous()}
            h0 = self._h0(u.shape[0])
            if h0 is not None:
                extra["initial_states"] = h0.float()
            y = cuda_kernel("ssd")(*(v.to(work).contiguous() for v in (x_in, dt)), A.float(),
                                   *(v.to(work).contiguous() for v in (B, C)), chunk_size=self.cfg.chunk_size,
                                   D=self.d.float(), **extra)
        else:
            y = ssd_chunked(x, dt, A, B, C, self.cfg.chunk_size, dt_in, self._h0(u.shape[0]), seq_idx) + self._skip(x)
        y = y.reshape(*u.shape[:2], -1)                                     # [B, L, E]
        return self.out_proj(self.norm_out(y * F.silu(z)))

    def _fused(self, u: Tensor, A: Tensor, seq_idx: Tensor | None) -> Tensor:
        """The whole layer in mamba-ssm's fused kernel (in-projection output to out-projection: conv, SSD,
        gated RMSNorm), for inputs without times or padding."""
        cfg, work = self.cfg, kernel_dtype(u)
        h0 = self._h0(u.shape[0])
        return cuda_kernel("ssd_fused")(
            self.in_proj(u).to(work), self.conv.weight.squeeze(1), self.conv.bias, self.dt_bias.float(), A.float(),
            D=self.d.float(), chunk_size=cfg.chunk_size, initial_states=None if h0 is None else h0.float(),
            seq_idx=None if seq_idx is None else seq_idx.to(torch.int32).contiguous(),
            dt_limit=(cfg.dt_limit_min, cfg.dt_limit_max), activation="silu", rmsnorm_weight=self.norm_out.weight,
            rmsnorm_eps=self.norm_out.eps, outproj_weight=self.out_proj.weight, outproj_bias=None,
            headdim=None if cfg.d_has_hdim else cfg.head_dim, ngroups=cfg.n_groups, norm_before_gate=False)

    def _check_packing(self, seq_idx: Tensor, u: Tensor) -> None:
        if seq_idx.shape != u.shape[:2] or seq_idx.is_floating_point() or seq_idx.is_complex():
            raise ValueError(f"mamba2: seq_idx must be an integer tensor of shape {tuple(u.shape[:2])} (batch, "
                             f"length), got {seq_idx.dtype} {tuple(seq_idx.shape)}")
        if (seq_idx.diff(dim=1) < 0).any():
            raise ValueError("mamba2: seq_idx must be non-decreasing along each row (packed sequences in order)")
        if self.cfg.learnable_init_state:
            raise ValueError("mamba2: seq_idx with learnable_init_state is not supported (each packed sequence "
                             "would start from the learned state); pad the sequences instead")

    def _dt(self, dt: Tensor) -> Tensor:
        """Δ = softplus(dt + dt_bias), clamped to the configured limits: [..., H]."""
        return F.softplus(dt + self.dt_bias).clamp(self.cfg.dt_limit_min, self.cfg.dt_limit_max)

    def _skip(self, x: Tensor) -> Tensor:
        """D x for x [..., H, P]."""
        return x * (self.d if self.cfg.d_has_hdim else self.d.unsqueeze(-1))

    def _h0(self, batch: int) -> Tensor | None:
        """The state before the first step [B, H, P, N] when it is learned, else None (zeros)."""
        return self.h0.expand(batch, *self.h0.shape) if self.cfg.learnable_init_state else None

    def _steps(self, dt: Tensor, gaps: Tensor | None, A: Tensor, hold: bool) -> tuple[Tensor, Tensor]:
        """The decay step and the input step [B, (L,) H] at time gaps [B, (L)] (see the module docstring)."""
        if gaps is None:
            return dt, dt
        g = gaps.unsqueeze(-1)
        return g * dt, dt * zoh_weight(dt * A, g) if hold else g * dt

    def init_state(self, batch: int, device, dtype) -> dict:
        width = self.sizes[1]
        return {"conv": torch.zeros(batch, width, self.cfg.d_conv, device=device, dtype=dtype),
                "h": torch.zeros(batch, self.heads, self.cfg.head_dim, self.cfg.d_state, device=device, dtype=dtype)
                if not self.cfg.learnable_init_state else self._h0(batch).to(device=device, dtype=dtype)}

    def mix_step(self, u: Tensor, state: dict, gap: Tensor | None) -> tuple[Tensor, dict]:
        z, xbc, dt = self.in_proj(u).split(self.sizes, dim=-1)             # [B, .]
        xbc, window = conv_step(xbc, state["conv"], self.conv)
        x, B, C = self._split(F.silu(xbc))                                  # [B, H, P], [B, G, N] x2
        rep = self.heads // self.cfg.n_groups
        B, C = B.repeat_interleave(rep, dim=1), C.repeat_interleave(rep, dim=1)   # [B, H, N]
        A = -torch.exp(self.a_log)
        dt, dt_in = self._steps(self._dt(dt), gap, A, self.cfg.timed_disc == "zoh")   # [B, H]
        decay = torch.exp(dt * A)[..., None, None]                          # [B, H, 1, 1]
        h = decay * state["h"] + (dt_in.unsqueeze(-1) * x).unsqueeze(-1) * B.unsqueeze(2)   # [B, H, P, N]
        y = (h * C.unsqueeze(2)).sum(-1) + self._skip(x)                    # [B, H, P]
        y = y.reshape(u.shape[0], -1)
        return self.out_proj(self.norm_out(y * F.silu(z))), {"conv": window, "h": h}
