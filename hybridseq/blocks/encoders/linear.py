"""Linear encoder: observed values and their mask, projected, plus a time encoding.

The time encoding is Time2Vec (Kazemi et al., 2019): one linear feature and periodic ones,
sin(ω t + φ), whose frequencies start on a geometric range so that it resolves one step of a long
series as well as its whole span; they are learned unless ``learn_freq: false``.

``time: add`` (the default) gives the encoding the stream's width and adds it to the projected values,
as the sinusoidal encoding of Vaswani et al. (2017) is added to token embeddings and as the irregular
benchmark's reference transformer does. ``time: concat`` concatenates ``time_features`` of them to the
values before the projection, so the position reaches the stream only through a learned mix with the
values. docs/benchmarks.md compares the two.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from omegaconf import MISSING
from torch import nn

from ...errors import ConfigError
from ...seq import IrregularBatch, Seq
from ..base import Block, choice
from ..layers import TimeEncoding, check_time_encoding

CONCAT_FEATURES = 16      # width of the time encoding under `time: concat` unless `time_features` says


class LinearEncoder(Block):
    @dataclass
    class Config:
        d_in: int = MISSING          # input channels (injected)
        d_model: int = MISSING       # output width (injected)
        time: str = choice("add", "concat", "none")   # how the time encoding joins the values
        time_features: Optional[int] = None   # encoding width under `concat` (16 if unset); `add` uses d_model
        max_freq: float = 1000.0     # highest angular frequency of the time encoding (train times span [0, 1])
        learn_freq: bool = True      # learn the time encoding's frequencies and phases (Time2Vec)

        def validate(self, path: str) -> None:
            if self.time != "concat" and self.time_features is not None:
                raise ConfigError(f"{path}.time_features", f"is only read with time: concat (time is {self.time!r}); "
                                  "remove it, or set time: concat", got=self.time_features)
            if self.time == "concat" and self.time_features is not None and self.time_features < 1:
                raise ConfigError(f"{path}.time_features", f"must be >= 1 with time: concat, got {self.time_features}; "
                                  "time: none drops the time input", got=self.time_features)
            check_time_encoding(path, self.time_features or 0, self.max_freq)

    accepts = "irregular"

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        k = {"add": cfg.d_model, "concat": cfg.time_features or CONCAT_FEATURES, "none": 0}[cfg.time]
        self.time = TimeEncoding(k, cfg.max_freq, cfg.learn_freq) if k else None
        self.proj = nn.Linear(2 * cfg.d_in + (k if cfg.time == "concat" else 0), cfg.d_model)

    def forward(self, batch: IrregularBatch) -> Seq:
        values = batch.observed_values()                               # [B, N, C]
        feats = [values, batch.observed.to(values.dtype)]              # 2 x [B, N, C]
        if self.time is None:
            return batch.seq(self.proj(torch.cat(feats, dim=-1)))      # [B, N, D]
        times = torch.where(batch.valid, batch.times, torch.zeros_like(batch.times))
        encoded = self.time(times)                                     # [B, N, D] (add) or [B, N, k] (concat)
        if self.cfg.time == "concat":
            return batch.seq(self.proj(torch.cat([*feats, encoded], dim=-1)))
        return batch.seq(self.proj(torch.cat(feats, dim=-1)) + encoded)
