"""S4D: diagonal state-space layer (Gu, Gupta, Goel & Ré, 2022, "On the Parameterization and
Initialization of Diagonal State Space Models").

Per channel h: x'(t) = A x(t) + B u(t), y = C x + D u with diagonal complex A (N/2 modes in conjugate
pairs, B folded into C), discretised by ZOH or bilinear with a learned step Δ_h. On a regular grid the
layer is a convolution with K_l = 2 Re Σ_n C_n B̄_n Ā_n^l (Vandermonde product, FFT convolution,
O(L log L)); with observation times the layer runs as a chunk-parallel diagonal scan whose position l
takes the exact zero-order hold over its gap g_l of the unit step (``timed_disc: zoh``, default):
Ā_l = Ā^{g_l}, B̄_l = B̄ (Ā^{g_l} - 1)/(Ā - 1) — for ``disc: zoh`` exactly exp(g_l Δ A) and
(exp(g_l Δ A) - 1)/A; ``timed_disc: scaled`` discretises with step Δ_h · g_l instead.
Output: GELU, then a linear layer with a GLU gate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ...ops import fft_conv, vandermonde_kernel
from ...ops.scan import held_step, scan_from, segment_length, segmented
from ...seq import Seq
from ..base import choice
from ..layers import own_lr
from .ssm_common import ModalSSMConfig, SSMBlock, gated_output, log_uniform


def s4d_init(kind: str, channels: int, state: int) -> tuple[Tensor, Tensor]:
    """Real and imaginary parts [H, N/2] of S4D-Lin, S4D-Inv or S4D-Real eigenvalues."""
    n = torch.arange(state // 2, dtype=torch.float)
    if kind == "lin":
        re, im = torch.full_like(n, -0.5), math.pi * n
    elif kind == "inv":
        re, im = torch.full_like(n, -0.5), state / math.pi * (state / (2 * n + 1) - 1)
    else:
        re, im = -(n + 1), torch.zeros_like(n)
    return re.expand(channels, -1).clone(), im.expand(channels, -1).clone()


def discretise(dt: Tensor, A: Tensor, method: str) -> tuple[Tensor, Tensor]:
    """log Ā and B̄ (B = 1) for steps dt [..., H] and eigenvalues A [H, M]: two [..., H, M] complex."""
    dta = dt.unsqueeze(-1) * A
    if method == "zoh":
        return dta, torch.expm1(dta) / A
    return torch.log((1 + dta / 2) / (1 - dta / 2)), dt.unsqueeze(-1) / (1 - dta / 2)


class S4D(SSMBlock):
    @dataclass
    class Config(ModalSSMConfig):
        init: str = choice("lin", "inv", "real")   # S4D-Lin, S4D-Inv or S4D-Real eigenvalues
        disc: str = choice("zoh", "bilinear")      # discretisation

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        h, m = cfg.d_model, cfg.d_state // 2
        re, im = s4d_init(cfg.init, h, cfg.d_state)
        self.log_dt = nn.Parameter(torch.log(log_uniform(h, cfg.dt_min, cfg.dt_max)))   # [H]
        self.a_log_re = nn.Parameter(torch.log(-re))                                       # [H, M]
        self.a_im = nn.Parameter(im)                                                       # [H, M]
        dirs = 2 if cfg.bidirectional else 1
        self.c = nn.Parameter(torch.view_as_real(torch.randn(dirs, h, m, dtype=torch.cfloat)))  # [dirs, H, M, 2]
        self.d = nn.Parameter(torch.randn(h))
        own_lr(cfg.ssm_lr, self.log_dt, self.a_log_re, self.a_im)
        self.out = gated_output(h, cfg.dropout)

    def eigenvalues(self) -> Tensor:
        return torch.complex(-torch.exp(self.a_log_re), self.a_im)                        # [H, M]

    def ssm(self, u: Tensor, seq: Seq) -> Tensor:
        """The SSM alone: u [B, L, H] -> y [B, L, H] (no D skip)."""
        A, c = self.eigenvalues(), torch.view_as_complex(self.c)
        if seq.t is None:                                                 # LTI: FFT convolution
            log_a, b = discretise(torch.exp(self.log_dt), A, self.cfg.disc)   # [H, M]
            length = u.shape[1]
            ks = [vandermonde_kernel(c[k] * b, log_a, length) for k in range(c.shape[0])]  # [H, L] each
            return fft_conv(u.transpose(1, 2), *ks).transpose(1, 2)
        y = self._scan(u, self.gaps(seq), A, c[0])
        if self.cfg.bidirectional:
            y = y + self._scan(u.flip(1), self.gaps(seq, reverse=True), A, c[1]).flip(1)
        return y

    def timed_step(self, gaps: Tensor, A: Tensor) -> tuple[Tensor, Tensor]:
        """Ā and B̄ [..., H, M] at time gaps [...] by the ``timed_disc`` rule (module docstring)."""
        dt, g = torch.exp(self.log_dt), gaps[..., None, None]
        if self.cfg.timed_disc == "scaled":
            log_a, b = discretise(dt * gaps.unsqueeze(-1), A, self.cfg.disc)
            return torch.exp(log_a), b
        log_a, b = discretise(dt, A, self.cfg.disc)                                 # unit step [H, M]
        decay, weight = held_step(log_a, g)
        return decay, b * weight

    def _scan(self, u: Tensor, gaps: Tensor, A: Tensor, c: Tensor) -> Tensor:
        """Diagonal recurrence at time gaps: u [B, L, H], gaps [B, L] -> [B, L, H], segment by segment (only
        one segment's [B, S, H, M] transitions and states exist at a time, in forward and backward)."""
        h0 = torch.zeros(u.shape[0], *A.shape, dtype=c.dtype, device=u.device)              # [B, H, M]
        size = segment_length(2 * u.shape[0] * A.numel(), u.shape[1], u.device)             # complex: 2 reals
        return segmented(self._segment, h0, u, gaps, segment=size, fixed=(A, c))

    def _segment(self, h0: Tensor, u: Tensor, gaps: Tensor, A: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        a_bar, b = self.timed_step(gaps, A)                                                 # [B, S, H, M]
        h = scan_from(a_bar, b * u.unsqueeze(-1), h0)                                       # [B, S, H, M]
        return 2 * torch.einsum("bshm,hm->bsh", h, c).real, h[:, -1]

    def mix(self, u: Tensor, seq: Seq) -> Tensor:
        return self.out(self.ssm(u, seq) + self.d * u)

    def init_state(self, batch: int, device, dtype) -> dict:
        if self.cfg.bidirectional:
            raise RuntimeError("a bidirectional s4d block sees the whole sequence; it has no recurrent mode")
        cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        return {"h": torch.zeros(batch, self.cfg.d_model, self.cfg.d_state // 2, dtype=cdtype, device=device)}

    def mix_step(self, u: Tensor, state: dict, gap: Tensor | None) -> tuple[Tensor, dict]:
        if gap is None:
            log_a, b = discretise(torch.exp(self.log_dt), self.eigenvalues(), self.cfg.disc)   # [H, M]
            a_bar = torch.exp(log_a)
        else:
            a_bar, b = self.timed_step(gap, self.eigenvalues())                              # [B, H, M]
        h = a_bar * state["h"] + b * u.unsqueeze(-1)                                      # [B, H, M]
        y = 2 * (h * torch.view_as_complex(self.c)[0]).sum(-1).real
        return self.out(y + self.d * u), {"h": h}
