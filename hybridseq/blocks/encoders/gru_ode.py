"""GRU-ODE encoder (De Brouwer, Simm, Arany & Moreau, "GRU-ODE-Bayes", NeurIPS 2019).

Between observations the state follows the continuous GRU dynamics dh/dt = (1 - z) ⊙ (g - h) with
z = σ(W_z h), r = σ(W_r h), g = tanh(W_g (r ⊙ h)), which keep h bounded in (-1, 1). At an observation
the GRU-Bayes update reads, for each observed channel, the value, the state's predicted mean and
log-variance and the standardised prediction error (unobserved channels contribute zeros), and feeds
them with the channel mask to a GRU cell. Outputs are projections of the state after each update.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from omegaconf import MISSING
from torch import nn

from ...seq import IrregularBatch, Seq
from ...solvers import SolverConfig
from ..base import ODEBlock
from .common import JumpODE

FEATURES_PER_CHANNEL = 4             # value, predicted mean, predicted log-variance, standardised error


class GRUODEField(nn.Module):
    """dh/dt = (1 - z) ⊙ (g - h): the GRU update written as a continuous-time flow (no input)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.zr = nn.Linear(hidden, 2 * hidden)
        self.g = nn.Linear(hidden, hidden)

    def forward(self, t, h):
        z, r = torch.sigmoid(self.zr(h)).chunk(2, dim=-1)                 # 2 x [B, H]
        g = torch.tanh(self.g(r * h))
        return (1 - z) * (g - h)


class GRUODEEncoder(ODEBlock):
    @dataclass
    class Config:
        d_in: int = MISSING              # input channels (injected)
        d_model: int = MISSING           # output width (injected)
        hidden: int = 32                 # ODE state size
        solver: SolverConfig = field(default_factory=lambda: SolverConfig(method="rk4"))

    accepts = "irregular"

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.flow = JumpODE(GRUODEField(cfg.hidden), self.solver, cfg.hidden)
        self.predict = nn.Linear(cfg.hidden, 2 * cfg.d_in)                 # mean and log-variance per channel
        self.cell = nn.GRUCell((FEATURES_PER_CHANNEL + 1) * cfg.d_in, cfg.hidden)
        self.out = nn.Linear(cfg.hidden, cfg.d_model)

    def jump(self, h, x, m):
        mean, logvar = self.predict(h).chunk(2, dim=-1)                    # 2 x [B, C]
        error = (x - mean) * torch.exp(-0.5 * logvar)
        mf = m.to(x.dtype)
        feats = torch.cat([x, mean * mf, logvar * mf, error * mf, mf], dim=-1)   # [B, 5C]
        return self.cell(feats, h)

    def forward(self, batch: IrregularBatch) -> Seq:
        return batch.seq(self.out(self.flow(batch, self.jump)))           # [B, N, D]
