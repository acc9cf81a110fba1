"""ODE-RNN encoder (Rubanova, Chen & Duvenaud, "Latent ODEs for Irregularly-Sampled Time Series", 2019).

The hidden state follows a neural ODE between observations and takes a gated (GRU) update at each one,
from the observed values and their channel mask. The output at each observation is a projection of the
updated state; all series are integrated together in normalised interval time (see `common`).

``direction: backward`` runs it from each series' last observation back to its first, as the latent
ODE's recognition network does: the output at observation i then summarises observations i, …, N-1,
and the first valid position holds the summary of the whole series (the `latent_ode` head reads it).
Going back in time the learned field is integrated over -t (dh/d(-t) = f(h)), which is the same model
class as the authors' backward solve of dh/dt = f(h), up to the sign of the learned f.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from omegaconf import MISSING
from torch import nn

from ...seq import IrregularBatch, Seq
from ...solvers import SolverConfig
from ..base import ODEBlock, choice
from ..layers import MLPField
from .common import JumpODE, flip_valid, reversed_in_time


class ODERNNEncoder(ODEBlock):
    @dataclass
    class Config:
        d_in: int = MISSING              # input channels (injected)
        d_model: int = MISSING           # output width (injected)
        hidden: int = 32                 # ODE state size
        field_width: int = 64            # width of the vector field's hidden layer
        direction: str = choice("forward", "backward")   # backward: from the last observation to the first
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
        if self.cfg.direction == "forward":
            return batch.seq(self.out(self.flow(batch, self.jump)))       # [B, N, D]
        states = flip_valid(self.flow(reversed_in_time(batch), self.jump), batch.lengths)   # [B, N, H]
        return batch.seq(self.out(states))                                # [B, N, D] in time order
