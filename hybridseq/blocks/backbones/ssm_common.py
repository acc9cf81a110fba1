"""What the state-space backbones share: the residual pre-norm layer, time gaps, recurrent stepping.

Time gaps. With observation times ``t`` the discretisation step at position l is the learned step times
``gap_l = (t_l - t_prev) / time_unit``, where t_prev is the time of the previous *valid* position;
the first valid position takes ``gap = 1`` (one regular step) and padded positions ``gap = 0`` (the state
passes through unchanged and their input is zeroed). Equal gaps of ``time_unit`` give the regular model.
Gaps are differences of the times in their own dtype, promoted to at least float32 and to the stream's
dtype (never in bf16 / fp16: times near 40 with gaps of 0.1 would round to a gap of 0).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from omegaconf import MISSING
from torch import Tensor, nn

from ...errors import ConfigError
from ...ops.dispatch import cuda_kernel
from ...seq import Seq
from ..base import Block, choice


@dataclass
class SSMConfig:
    d_model: int = MISSING     # stream width (injected)
    dropout: float = 0.0       # on the layer's output, before the residual
    time_unit: float = 1.0     # the observation gap that counts as one step of the learned Δ
    dt_min: float = 1e-3       # initial steps Δ are log-uniform in [dt_min, dt_max]
    dt_max: float = 1e-1
    norm: str = choice("layer", "rms")         # pre-norm: LayerNorm or RMSNorm (eps 1e-5)
    timed_disc: str = choice("zoh", "scaled")  # with times: exact hold over each gap, or step Δ·gap
    residual_fp32: bool = True   # keep the residual stream in (at least) float32 under autocast, as mamba_ssm

    def validate(self, path: str) -> None:
        if not self.time_unit > 0:
            raise ConfigError(f"{path}.time_unit", f"must be > 0, got {self.time_unit!r}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ConfigError(f"{path}.dt_min", f"need 0 < dt_min <= dt_max, got {self.dt_min}, {self.dt_max}")


@dataclass
class ModalSSMConfig(SSMConfig):
    """Keys shared by the convolutional SSMs (s4d, s4), whose N-dimensional state is N/2 complex modes."""
    d_state: int = 64              # state size N per channel (N/2 complex conjugate pairs)
    bidirectional: bool = False    # add an anti-causal SSM (no recurrent mode)
    ssm_lr: float = 1e-3           # learning rate of the state matrix, input matrix and step (no weight decay)

    def validate(self, path: str) -> None:
        super().validate(path)
        if not (math.isfinite(self.ssm_lr) and self.ssm_lr > 0):
            raise ConfigError(f"{path}.ssm_lr", f"must be a finite number > 0, got {self.ssm_lr!r}")
        if self.d_state < 2 or self.d_state % 2:
            raise ConfigError(f"{path}.d_state", f"must be an even number >= 2, got {self.d_state!r}")


class TiedDropout(nn.Dropout):
    """Dropout whose mask is shared along time: one draw per (batch, channel) of x [B, L, D] (state-spaces/s4's
    DropoutNd with tie=True); an x of shape [B, D] (one step) gets an ordinary mask."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0 or x.dim() < 3:
            return super().forward(x)
        keep = torch.rand(x.shape[0], *([1] * (x.dim() - 2)), x.shape[-1], device=x.device) >= self.p
        return x * keep / (1 - self.p)


def gated_output(width: int, dropout: float) -> nn.Sequential:
    """The output stage of s4d and s4: GELU, time-tied dropout, then a linear layer into a GLU gate."""
    return nn.Sequential(nn.GELU(), TiedDropout(dropout), nn.Linear(width, 2 * width), nn.GLU(dim=-1))


NORM_EPS = 1e-5
NORMS = {"layer": lambda width: nn.LayerNorm(width, eps=NORM_EPS), "rms": lambda width: nn.RMSNorm(width, eps=NORM_EPS)}


def time_gaps(t: Tensor, valid: Tensor, unit: float) -> Tensor:
    """Step multipliers [B, L] from times t [B, L] and valid [B, L] (the rule in the module docstring)."""
    seen = torch.where(valid, t, torch.full_like(t, -math.inf))
    prev = torch.cummax(seen, dim=1).values.roll(1, dims=1)                    # latest valid time before l
    prev[:, 0] = -math.inf
    gap = torch.where(torch.isfinite(prev), (t - prev) / unit, torch.ones_like(t))
    return torch.where(valid, gap.clamp_min(0), torch.zeros_like(t))


def restart_gaps(gaps: Tensor, valid: Tensor, seq_idx: Tensor) -> Tensor:
    """``gaps`` [B, L] with 1 at the first valid position of each packed sequence (``seq_idx`` [B, L])."""
    seen = torch.where(valid, seq_idx, torch.full_like(seq_idx, -1))
    prev = torch.cummax(seen, dim=1).values.roll(1, dims=1)                   # sequence of the last valid position
    prev[:, 0] = -1
    return torch.where(valid & (prev != seq_idx), torch.ones_like(gaps), gaps)


def gap_dtype(seq: Seq) -> torch.dtype:
    """The dtype gaps are computed in: that of the times and of the stream, at least float32."""
    dtype = torch.promote_types(seq.x.dtype, torch.float32)
    return dtype if seq.t is None else torch.promote_types(dtype, seq.t.dtype)


def reverse_gaps(t: Tensor, valid: Tensor, unit: float) -> Tensor:
    """Step multipliers for a scan from the end: position l of the flipped sequence, [B, L]."""
    return time_gaps(-t.flip(1), valid.flip(1), unit)


def inverse_softplus(x: Tensor) -> Tensor:
    return x + torch.log(-torch.expm1(-x))


def log_uniform(shape, low: float, high: float) -> Tensor:
    """Samples exp(U[log low, log high]): the usual initial SSM steps Δ."""
    return torch.exp(torch.rand(shape) * (math.log(high) - math.log(low)) + math.log(low))


class SSMBlock(Block):
    """Pre-norm residual layer around a sequence mixer: x + dropout(mix(norm(x))).

    Subclasses implement ``mix(u, seq)`` (u [B, L, D], zero at padded positions) and, for recurrent use,
    ``init_state(batch, device, dtype)`` and ``mix_step(u_t, state, gap)``.
    """

    def __init__(self, cfg):
        super().__init__(cfg)
        self.norm = NORMS[cfg.norm](cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def gaps(self, seq: Seq, reverse: bool = False) -> Tensor | None:
        """[B, L] step multipliers (of the flipped sequence if ``reverse``), or None on a regular grid
        without padding; in `gap_dtype`."""
        dtype = gap_dtype(seq)
        if seq.t is not None:
            rule = reverse_gaps if reverse else time_gaps
            return rule(seq.t.to(dtype), seq.valid(), self.cfg.time_unit)
        if seq.mask is None:
            return None
        return (seq.mask.flip(1) if reverse else seq.mask).to(dtype)

    def exact_hold(self, seq: Seq) -> bool:
        """Whether this pass discretises by the exact hold over each time gap (``timed_disc: zoh``)."""
        return seq.t is not None and self.cfg.timed_disc == "zoh"

    def forward(self, seq: Seq, **options) -> Seq:
        """``options`` go to ``mix`` (``mamba2``: ``seq_idx``); a block without such an option rejects it."""
        u = self.norm(self.residual(seq.x))           # [B, L, D]; normalised in at least float32
        if seq.mask is not None:
            u = u * seq.mask.unsqueeze(-1)
        return replace(seq, x=self.residual(seq.x) + self.drop(self.mix(u, seq, **options)))

    def residual(self, x: Tensor) -> Tensor:
        """The skip branch (and the norm's input): x, or x promoted to at least float32 with ``residual_fp32``."""
        return x.to(torch.promote_types(x.dtype, torch.float32)) if self.cfg.residual_fp32 else x

    def allocate_state(self, batch_size: int, device=None, dtype=None) -> dict:
        """The recurrent state before the first step, for `step`."""
        p = next(self.parameters())
        return self.init_state(batch_size, device or p.device, dtype or p.dtype)

    def step(self, x_t: Tensor, state: dict, gap: Tensor | None = None) -> tuple[Tensor, dict]:
        """One recurrent step: x_t [B, D] -> (y_t [B, D], new state), equal to the full-sequence pass.

        ``gap`` [B] is the time since the previous observation in units of ``time_unit`` (1 if None).
        """
        y, state = self.mix_step(self.norm(self.residual(x_t)), state, gap)
        return self.residual(x_t) + self.drop(y), state

    def mix(self, u: Tensor, seq: Seq) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def init_state(self, batch: int, device, dtype) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def mix_step(self, u: Tensor, state: dict, gap: Tensor | None) -> tuple[Tensor, dict]:  # pragma: no cover
        raise NotImplementedError


def conv_silu(x: Tensor, conv: nn.Conv1d, kernel: bool = False, mask: Tensor | None = None,
              seq_idx: Tensor | None = None) -> Tensor:
    """SiLU(causal depthwise convolution) of x [B, L, E]: causal-conv1d's CUDA kernel when ``kernel``.

    With ``mask`` [B, L] the window of each valid position holds the previous *valid* inputs: the valid
    positions are packed to the front (in order), convolved, and put back, so a padded slot anywhere
    changes no valid output. Outputs at padded positions are finite but meaningless. With ``seq_idx``
    [B, L] (packed sequences) a window holds only inputs of its own sequence.
    """
    if mask is not None:
        order = torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)    # valid positions first [B, L]
        index = order.unsqueeze(-1).expand_as(x)
        idx = None if seq_idx is None else torch.gather(seq_idx, 1, order)
        packed = conv_silu(torch.gather(x, 1, index), conv, kernel, seq_idx=idx)   # [B, L, E]
        return torch.empty_like(packed).scatter_(1, index, packed)
    if kernel:
        fn = cuda_kernel("causal_conv1d")
        weight = conv.weight.squeeze(1)
        if seq_idx is None:
            return fn(x.transpose(1, 2).contiguous(), weight, conv.bias, activation="silu").transpose(1, 2)
        channels_last = x.contiguous().transpose(1, 2)                        # [B, E, L], stride 1 over E
        return fn(channels_last, weight, conv.bias, seq_idx=seq_idx.to(torch.int32).contiguous(),
                  activation="silu").transpose(1, 2)
    return F.silu(causal_conv(x, conv, seq_idx))


def causal_conv(x: Tensor, conv: nn.Conv1d, seq_idx: Tensor | None = None) -> Tensor:
    """Depthwise causal convolution over time with ``conv``'s weights: x [B, L, E] -> [B, L, E]; with
    ``seq_idx`` [B, L], terms from another sequence than the output's are left out.

    Written as K shifted multiply-adds, which is several times faster than Conv1d on CPU (forward and
    backward) for the short kernels used here.
    """
    length, width = x.shape[1], conv.weight.shape[-1]
    w = conv.weight.squeeze(1).T                                               # [K, E]
    padded = F.pad(x, (0, 0, width - 1, 0))                                    # [B, L+K-1, E]
    idx = None if seq_idx is None else F.pad(seq_idx, (width - 1, 0), value=-1)   # [B, L+K-1]
    y = padded[:, width - 1:] * w[-1]
    for k in range(width - 1):
        term = padded[:, k:k + length] * w[k]
        if idx is not None:
            term = term * (idx[:, k:k + length] == seq_idx).unsqueeze(-1)
        y = y + term
    return y + conv.bias if conv.bias is not None else y


def conv_step(x: Tensor, window: Tensor, conv: nn.Conv1d) -> tuple[Tensor, Tensor]:
    """One step of `causal_conv`: x [B, E], window [B, E, K] of past inputs -> (y [B, E], new window)."""
    window = torch.cat([window[..., 1:], x.unsqueeze(-1)], dim=-1)
    y = (window * conv.weight.squeeze(1)).sum(-1)
    return (y + conv.bias if conv.bias is not None else y), window

