"""GRU backbone (Cho et al., 2014): the classic recurrent baseline, and mTAN's classifier after its
attention (Shukla & Marlin 2021).

One pre-norm residual layer around ``torch.nn.GRU`` (cuDNN on a GPU): x + dropout(GRU(LayerNorm(x))),
``layers`` stacked inside the GRU. Padding is honoured by packing the valid prefix of each series, so a
padded step neither updates the state nor yields an output (its output is x unchanged). With
``delta_t: true`` each step also reads Δt, the time since the previous step (0 at the first; 1 per step
when the sequence carries no times), the usual way to give an RNN irregular sampling. It runs one step
at a time too (`allocate_state` / `step`, for generation).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from omegaconf import MISSING
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ...errors import ConfigError
from ...seq import Seq
from ..base import Block


class GRU(Block):
    @dataclass
    class Config:
        d_model: int = MISSING           # stream width (injected); the GRU's hidden size
        layers: int = 1                  # stacked GRU layers inside the block
        delta_t: bool = False            # append the time since the previous step to each input
        dropout: float = 0.0             # on the block output (and between stacked GRU layers)

        def validate(self, path: str) -> None:
            if self.layers < 1:
                raise ConfigError(f"{path}.layers", f"must be >= 1, got {self.layers}", got=self.layers)
            if not 0.0 <= self.dropout < 1.0:
                raise ConfigError(f"{path}.dropout", f"must be in [0, 1), got {self.dropout}", got=self.dropout)

    compile_safe = False             # packing reads the lengths on the host

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.rnn = nn.GRU(cfg.d_model + int(cfg.delta_t), cfg.d_model, num_layers=cfg.layers, batch_first=True,
                          dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.drop = nn.Dropout(cfg.dropout)

    def _gaps(self, seq: Seq) -> Tensor:
        """[B, L, 1] time since the previous step."""
        b, n, _ = seq.x.shape
        if seq.t is None:
            gaps = torch.ones(b, n, dtype=seq.x.dtype, device=seq.x.device)
            gaps[:, 0] = 0
        else:
            gaps = torch.diff(seq.t, dim=1, prepend=seq.t[:, :1]).to(seq.x.dtype)
        return gaps[..., None]

    def forward(self, seq: Seq) -> Seq:
        n = seq.x.shape[1]
        valid = seq.valid()                                                     # [B, L]
        lengths = valid.sum(1)
        if not torch.equal(valid, torch.arange(n, device=valid.device)[None, :] < lengths[:, None]):
            raise ValueError("gru: the valid positions of each sequence must form a prefix (padding at the end)")
        inp = self.norm(seq.x)
        if self.cfg.delta_t:
            inp = torch.cat([inp, self._gaps(seq)], -1)                        # [B, L, D + 1]
        packed = pack_padded_sequence(inp, lengths.clamp_min(1).cpu(), batch_first=True, enforce_sorted=False)
        out, _ = pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=n)   # [B, L, D]
        out = out.to(seq.x.dtype) * valid[..., None]
        return replace(seq, x=seq.x + self.drop(out))

    def allocate_state(self, batch_size: int, device=None, dtype=None) -> dict:
        """The zero hidden state [layers, B, D] before the first step, for `step`."""
        p = next(self.parameters())
        shape = (self.cfg.layers, batch_size, self.cfg.d_model)
        return {"h": torch.zeros(shape, device=device or p.device, dtype=dtype or p.dtype), "steps": 0}

    def step(self, x_t: Tensor, state: dict, gap: Tensor | None = None) -> tuple[Tensor, dict]:
        """One step: x_t [B, D] -> (y_t [B, D], new state); ``gap`` [B] is the time since the previous step
        (1 when None), read with ``delta_t`` (0 at the first step, as in the full pass)."""
        inp = self.norm(x_t)
        if self.cfg.delta_t:
            dt = torch.ones_like(inp[:, :1]) if gap is None else gap[:, None].to(inp.dtype)   # [B, 1]
            inp = torch.cat([inp, dt * (state["steps"] > 0)], -1)                             # [B, D + 1]
        out, h = self.rnn(inp.unsqueeze(1), state["h"])                                       # [B, 1, D]
        return x_t + self.drop(out.squeeze(1)), {"h": h, "steps": state["steps"] + 1}
