"""Token embedding encoder: token ids → a sequence on the model's stream, with positions or times.

A learned table of token vectors, plus one of: learned absolute position vectors (as in GPT-2, Radford et
al. 2019), the shared Time2Vec encoding (`TimeEncoding`) of the tokens' observation times projected to the
stream width (positions ``i / max_len`` when the batch carries no times), or nothing (``positions: none``,
for backbones that are position-aware themselves, such as SSMs).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import MISSING
from torch import nn

from ...errors import ConfigError
from ...schema import ranged
from ...seq import Seq, TokenBatch
from ..base import Block, choice
from ..layers import TimeEncoding, check_time_encoding

MAX_TABLE = 2**24              # bound on the rows of the token and position tables


class Embedding(Block):
    @dataclass
    class Config:
        vocab: int = MISSING         # vocabulary size (injected from model.input.vocab)
        d_model: int = MISSING       # output width (injected)
        positions: str = choice("learned", "time", "none")   # what marks where a token is
        # longest sequence (learned positions; the time scale without times)
        max_len: int = ranged(2048, ge=1, le=MAX_TABLE)
        time_features: int = 16      # size of the time encoding (positions: time)
        max_freq: float = 1000.0     # highest angular frequency of the time encoding

        def validate(self, path: str) -> None:
            if not 1 <= self.vocab <= MAX_TABLE:
                raise ConfigError(f"{path}.vocab", f"must be in [1, {MAX_TABLE}] (model.input.vocab), got {self.vocab}")
            if self.positions == "time":
                check_time_encoding(path, self.time_features, self.max_freq)
                if self.time_features < 1:
                    raise ConfigError(f"{path}.time_features", "must be >= 1 with positions: time")

    accepts = "tokens"
    example = {"max_len": 16}

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.token = nn.Embedding(cfg.vocab, cfg.d_model)
        self.position = nn.Embedding(cfg.max_len, cfg.d_model) if cfg.positions == "learned" else None
        if cfg.positions == "time":
            self.time = TimeEncoding(cfg.time_features, cfg.max_freq)
            self.time_proj = nn.Linear(cfg.time_features, cfg.d_model)
        # (config key, limit) on the sequence length, checked against the data before training
        self.length_limit = ("max_len", cfg.max_len) if cfg.positions == "learned" else None

    def forward(self, batch: TokenBatch) -> Seq:
        b, n = batch.tokens.shape
        valid = batch.valid                                                    # [B, L]
        ids = torch.where(valid, batch.tokens, torch.zeros_like(batch.tokens))  # padding never indexes
        x = self.token(ids)                                                    # [B, L, D]
        if self.cfg.positions == "learned":
            if n > self.cfg.max_len:
                raise ValueError(f"sequence of {n} tokens is longer than the embedding's max_len "
                                 f"{self.cfg.max_len}; raise max_len")
            x = x + self.position(torch.arange(n, device=ids.device))[None]    # [B, L, D]
        elif self.cfg.positions == "time":
            t = batch.times
            if t is None:
                t = (torch.arange(n, device=ids.device, dtype=x.dtype) / self.cfg.max_len).expand(b, n)
            t = torch.where(valid, t, torch.zeros_like(t))                     # [B, L]
            x = x + self.time_proj(self.time(t))                               # [B, L, D]
        return batch.seq(x)
