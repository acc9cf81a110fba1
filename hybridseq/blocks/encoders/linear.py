"""Linear encoder: observed values and their mask, projected, plus a time encoding.

The time encoding is Time2Vec (Kazemi et al., 2019): one linear feature and ``time_features - 1``
periodic ones, sin(ω t + φ). The frequencies start on a geometric range, as the sinusoidal encoding of
Vaswani et al. (2017) and mTAN's and ContiFormer's time embeddings do, so that the encoding resolves
one step of a long series as well as its whole span; they are learned unless ``learn_freq: false``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import MISSING
from torch import nn

from ...seq import IrregularBatch, Seq
from ..base import Block
from ..layers import TimeEncoding, check_time_encoding


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
        values = batch.observed_values()                               # [B, N, C]
        feats = [values, batch.observed.to(values.dtype)]              # 2 x [B, N, C]
        if self.time is not None:
            times = torch.where(batch.valid, batch.times, torch.zeros_like(batch.times))
            feats.append(self.time(times))                             # [B, N, k]
        return batch.seq(self.proj(torch.cat(feats, dim=-1)))           # [B, N, D]
