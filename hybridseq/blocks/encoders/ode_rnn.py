"""ODE-RNN encoder (Rubanova, Chen & Duvenaud, "Latent ODEs for Irregularly-Sampled Time Series", 2019).

The hidden state follows a neural ODE between observations and takes a gated (GRU) update at each one,
from the observed values and their channel mask. The output at each observation is a projection of the
updated state; all series are integrated together in normalised interval time (see `common`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from omegaconf import MISSING
from torch import nn

from ...seq import IrregularBatch, Seq
from ...solvers import SolverConfig
from ..base import ODEBlock
from ..layers import MLPField
from .common import JumpODE


class ODERNNEncoder(ODEBlock):
    @dataclass
    class Config:
        d_in: int = MISSING              # input channels (injected)
        d_model: int = MISSING           # output width (injected)
        hidden: int = 32                 # ODE state size
        field_width: int = 64            # width of the vector field's hidden layer
        solver: SolverConfig = field(default_factory=lambda: SolverConfig(method="rk4"))

    accepts = "irregular"

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.flow = JumpODE(MLPField(cfg.hidden, cfg.field_width), self.solver, cfg.hidden)
        self.cell = nn.GRUCell(2 * cfg.d_in, cfg.hidden)
        self.out = nn.Linear(cfg.hidden, cfg.d_model)

    def jump(self, h, x, m):
        return self.cell(torch.cat([x, m.to(x.dtype)], dim=-1), h)        # [B, 2C] -> [B, H]

    def forward(self, batch: IrregularBatch) -> Seq:
        return batch.seq(self.out(self.flow(batch, self.jump)))           # [B, N, D]
