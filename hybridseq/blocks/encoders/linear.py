"""Linear encoder: observed values and their mask, projected, plus a learned time encoding.

The time encoding is Time2Vec (Kazemi et al., 2019): one linear feature and ``time_features - 1``
periodic ones, sin(ω t + φ), all learned.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import MISSING
from torch import nn

from ...seq import IrregularBatch, Seq
from ..base import Block
from ..layers import TimeEncoding


class LinearEncoder(Block):
    @dataclass
    class Config:
        d_in: int = MISSING          # input channels (injected)
        d_model: int = MISSING       # output width (injected)
        time_features: int = 16      # size of the learned time encoding; 0 = no time input

    accepts = "irregular"

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.time = TimeEncoding(cfg.time_features) if cfg.time_features > 0 else None
        self.proj = nn.Linear(2 * cfg.d_in + cfg.time_features, cfg.d_model)

    def forward(self, batch: IrregularBatch) -> Seq:
        observed = batch.mask & batch.valid[..., None]                 # [B, N, C]
        values = torch.where(observed, batch.values, torch.zeros_like(batch.values))
        feats = [values, observed.to(values.dtype)]                    # 2 x [B, N, C]
        if self.time is not None:
            times = torch.where(batch.valid, batch.times, torch.zeros_like(batch.times))
            feats.append(self.time(times))                             # [B, N, k]
        return batch.seq(self.proj(torch.cat(feats, dim=-1)))           # [B, N, D]
