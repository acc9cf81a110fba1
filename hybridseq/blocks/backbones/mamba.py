"""Mamba: selective state-space layer (Gu & Dao, 2023, "Mamba: Linear-Time Sequence Modeling with
Selective State Spaces").

in-projection to (x, z) → causal depthwise convolution → SiLU → input-dependent Δ, B, C → selective
scan h_l = exp(Δ_l A) h_{l-1} + Δ_l B_l x_l, y_l = C_l h_l + D x_l → gate by SiLU(z) → out-projection,
inside a pre-norm residual layer. With observation times position l takes the exact zero-order hold
over its gap g_l of the layer's unit step (``timed_disc: zoh``, default): decay exp(g_l Δ_l A), input
Δ_l B_l x_l (exp(g_l Δ_l A) - 1)/(exp(Δ_l A) - 1), so a long silence forgets and an input's weight
saturates; ``timed_disc: scaled`` multiplies Δ_l by the gap instead (see `ssm_common`).
``impl``: mamba-ssm's fused CUDA scan (``cuda``), our chunk-parallel PyTorch scan
(``torch``, `hybridseq.ops.selective_scan`), or the first that works on the input (``auto``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...ops import selective_scan, zoh_weight
from ...ops.dispatch import IMPLS, check_impl, cuda_kernel, fast_path, impl_for, kernel_dtype, planned_impl
from ...seq import Seq
from ..base import choice
from ..layers import no_weight_decay
from .ssm_common import SSMBlock, SSMConfig, conv_silu, conv_step, inverse_softplus, log_uniform


def init_dt_bias(width: int, low: float, high: float, floor: float) -> Tensor:
    """Bias b with softplus(b) log-uniform in [low, high] (at least ``floor``): the initial steps Δ."""
    return inverse_softplus(log_uniform(width, low, high).clamp_min(floor))


def scaled_out_proj(width: int, d_model: int, n_layer: int) -> nn.Linear:
    """The out-projection, its default init divided by √n_layer (GPT-2 / mamba_ssm residual rescaling)."""
    proj = nn.Linear(width, d_model, bias=False)
    with torch.no_grad():
        proj.weight /= math.sqrt(n_layer)
    return proj


def check_positive(cfg, path: str, names: tuple[str, ...]) -> None:
    for name in names:
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{path}.{name}", f"must be >= 1, got {getattr(cfg, name)!r}")


class Mamba(SSMBlock):
    @dataclass
    class Config(SSMConfig):
        d_state: int = 16                          # state size N per inner channel
        expand: int = 2                            # inner width E = expand * d_model
        d_conv: int = 4                            # causal convolution width
        dt_rank: int = 0                           # rank of the Δ projection; 0 = ceil(d_model / 16)
        dt_floor: float = 1e-4
        norm: str = choice("rms", "layer")         # pre-norm (mamba_ssm: RMSNorm)
        n_layer: int = 1                           # layers in the stack: out_proj init scaled by 1/√n_layer
        impl: str = choice(*IMPLS)

        def validate(self, path: str) -> None:
            super().validate(path)
            check_positive(self, path, ("d_state", "expand", "d_conv", "n_layer"))
            check_impl(self.impl, f"{path}.impl")

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        d, e, n = cfg.d_model, cfg.expand * cfg.d_model, cfg.d_state
        self.rank = cfg.dt_rank or math.ceil(d / 16)
        self.in_proj = nn.Linear(d, 2 * e, bias=False)
        self.conv = nn.Conv1d(e, e, cfg.d_conv, groups=e, padding=cfg.d_conv - 1)
        self.x_proj = nn.Linear(e, self.rank + 2 * n, bias=False)
        self.dt_proj = nn.Linear(self.rank, e)
        nn.init.uniform_(self.dt_proj.weight, -self.rank ** -0.5, self.rank ** -0.5)
        with torch.no_grad():
            self.dt_proj.bias.copy_(init_dt_bias(e, cfg.dt_min, cfg.dt_max, cfg.dt_floor))
        self.a_log = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float)).repeat(e, 1))  # [E, N]
        self.d = nn.Parameter(torch.ones(e))
        self.out_proj = scaled_out_proj(e, d, cfg.n_layer)
        no_weight_decay(self.a_log, self.d, self.dt_proj.bias)
        self.impl = planned_impl(cfg.impl)

    def _project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Δ (before the gap), B, C from the convolved input x [..., E]: [..., E], [..., N], [..., N]."""
        dt, B, C = self.x_proj(x).split([self.rank, self.cfg.d_state, self.cfg.d_state], dim=-1)
        return F.softplus(self.dt_proj(dt)), B, C

    def mix(self, u: Tensor, seq: Seq) -> Tensor:
        gaps, hold = self.gaps(seq), self.exact_hold(seq)
        self.impl = "torch" if hold else impl_for(self.cfg.impl, u, path="mamba.impl")  # the CUDA scan has no
        A = -torch.exp(self.a_log.float() if self.impl == "cuda" else self.a_log)      # per-state hold; A [E, N]
        if self.impl == "cuda" and gaps is None and fast_path(u, "mamba_inner", "causal_conv1d"):
            return self._fused(u, A)
        x, z = self.in_proj(u).chunk(2, dim=-1)                            # [B, L, E] each
        x = conv_silu(x, self.conv, self.impl == "cuda" and fast_path(u, "causal_conv1d"), seq.mask)
        delta, B, C = self._project(x)
        if gaps is not None and not hold:
            delta = delta * gaps.unsqueeze(-1)
        if self.impl == "cuda":                                             # one activation dtype, A and D fp32
            work = kernel_dtype(u)
            xs, ds, Bs, Cs, zs = (v.transpose(1, 2).to(work).contiguous() for v in (x, delta, B, C, z))  # [B, ., L]
            y = cuda_kernel("selective_scan")(xs, ds, A, Bs, Cs, self.d.float(), z=zs, delta_softplus=False)
            y = y.transpose(1, 2)
        else:
            y = (selective_scan(x, delta, A, B, C, gap=gaps if hold else None) + x * self.d) * F.silu(z)
        return self.out_proj(y)

    def _fused(self, u: Tensor, A: Tensor) -> Tensor:
        """The whole layer in mamba-ssm's fused kernel (conv, projections, scan, gate, out-projection)."""
        xz = self.in_proj(u).transpose(1, 2)                                # [B, 2E, L]
        return cuda_kernel("mamba_inner")(xz, self.conv.weight, self.conv.bias, self.x_proj.weight,
                                          self.dt_proj.weight, self.out_proj.weight, self.out_proj.bias, A,
                                          D=self.d.float(), delta_bias=self.dt_proj.bias.float(),
                                          delta_softplus=True)             # [B, L, D]

    def init_state(self, batch: int, device, dtype) -> dict:
        e = self.cfg.expand * self.cfg.d_model
        return {"conv": torch.zeros(batch, e, self.cfg.d_conv, device=device, dtype=dtype),
                "h": torch.zeros(batch, e, self.cfg.d_state, device=device, dtype=dtype)}

    def mix_step(self, u: Tensor, state: dict, gap: Tensor | None) -> tuple[Tensor, dict]:
        x, z = self.in_proj(u).chunk(2, dim=-1)                            # [B, E] each
        x, window = conv_step(x, state["conv"], self.conv)
        x = F.silu(x)
        delta, B, C = self._project(x)
        A = -torch.exp(self.a_log)
        log_a, drive = delta.unsqueeze(-1) * A, (delta * x).unsqueeze(-1) * B.unsqueeze(1)   # [B, E, N]
        if gap is not None and self.cfg.timed_disc == "zoh":
            log_a, drive = gap[:, None, None] * log_a, drive * zoh_weight(log_a, gap[:, None, None])
        elif gap is not None:
            log_a, drive = gap[:, None, None] * log_a, drive * gap[:, None, None]
        h = torch.exp(log_a) * state["h"] + drive
        y = ((h * C.unsqueeze(1)).sum(-1) + x * self.d) * F.silu(z)
        return self.out_proj(y), {"conv": window, "h": h}
