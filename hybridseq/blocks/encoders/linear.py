"""Linear encoder: observed values and their mask, projected, plus a time encoding.

The time encoding is Time2Vec (Kazemi et al., 2019): one linear feature and ``time_features - 1``
periodic ones, sin(ω t + φ). The frequencies start on a geometric range, as the sinusoidal encoding of
Vaswani et al. (2017) and mTAN's and ContiFormer's time embeddings do, so that the encoding resolves
one step of a long series as well as its whole span; they are learned unless ``learn_freq: false``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from omegaconf import MISSING
from torch import nn

from ...errors import ConfigError
from ...seq import IrregularBatch, Seq
from ..base import Block

MIN_FREQ = 0.1       # lowest angular frequency: about 1/60 of a period over the unit span


class TimeEncoding(nn.Module):
    """t [..] -> [.., k]: ``[a t + b, sin(ω_1 t + φ_1), .., sin(ω_{k-1} t + φ_{k-1})]``.

    The periodic features come in sine/cosine pairs (φ = 0, π/2) whose angular frequencies ω are
    spread geometrically over [0.1, ``max_freq``] radians per unit of t. The data layer maps train
    times to [0, 1], so ``max_freq`` 1000 separates points 1/1000 of the span apart; a default
    ``nn.Linear(1, k)`` init (ω in [-1, 1]) would leave every feature nearly linear over the series.
    ``learned=False`` keeps ω and φ fixed.
    """

    def __init__(self, k: int, max_freq: float = 1000.0, learned: bool = True):
        super().__init__()
        pairs = k // 2                                                   # frequencies, each used twice
        freq = torch.logspace(math.log10(max_freq), math.log10(MIN_FREQ), max(pairs, 1))
        freq = freq.repeat_interleave(2)[: k - 1]                        # [k-1]
        phase = torch.tensor([0.0, math.pi / 2]).repeat(k)[: k - 1]      # [k-1]
        if learned:
            self.freq, self.phase = nn.Parameter(freq), nn.Parameter(phase)
        else:
            self.register_buffer("freq", freq)
            self.register_buffer("phase", phase)
        self.lin = nn.Linear(1, 1)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t = t.unsqueeze(-1)                                              # [.., 1]
        return torch.cat([self.lin(t), torch.sin(t * self.freq + self.phase)], dim=-1)   # [.., k]


def check_time_encoding(path: str, k: int, max_freq: float) -> None:
    """Range checks shared by the blocks that take ``time_features`` / ``max_freq``."""
    if k < 0:
        raise ConfigError(f"{path}.time_features", f"must be >= 0, got {k}", got=k)
    if not (math.isfinite(max_freq) and max_freq > MIN_FREQ):
        raise ConfigError(f"{path}.max_freq", f"must be a finite number > {MIN_FREQ}, got {max_freq}", got=max_freq)


class LinearEncoder(Block):
    @dataclass
    class Config:
        d_in: int = MISSING          # input channels (injected)
        d_model: int = MISSING       # output width (injected)
        time_features: int = 16      # size of the time encoding; 0 = no time input
        max_freq: float = 1000.0     # highest angular frequency of the time encoding (train times span [0, 1])
        learn_freq: bool = True      # learn the time encoding's frequencies and phases (Time2Vec)

        def validate(self, path: str) -> None:
            check_time_encoding(path, self.time_features, self.max_freq)

    accepts = "irregular"

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.time = (TimeEncoding(cfg.time_features, cfg.max_freq, cfg.learn_freq)
                     if cfg.time_features > 0 else None)
        self.proj = nn.Linear(2 * cfg.d_in + cfg.time_features, cfg.d_model)

    def forward(self, batch: IrregularBatch) -> Seq:
        observed = batch.mask & batch.valid[..., None]                 # [B, N, C]
        values = torch.where(observed, batch.values, torch.zeros_like(batch.values))
        feats = [values, observed.to(values.dtype)]                    # 2 x [B, N, C]
        if self.time is not None:
            times = torch.where(batch.valid, batch.times, torch.zeros_like(batch.times))
            feats.append(self.time(times))                             # [B, N, k]
        return batch.seq(self.proj(torch.cat(feats, dim=-1)))           # [B, N, D]
