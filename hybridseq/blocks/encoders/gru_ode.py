"""GRU-ODE-Bayes encoder (De Brouwer, Simm, Arany & Moreau, "GRU-ODE-Bayes: Continuous modeling of
sporadically-observed time series", NeurIPS 2019).

Between observations the state follows the continuous GRU dynamics dh/dt = (1 - z) ⊙ (g - h) with
z = σ(W_z h), r = σ(W_r h), g = tanh(W_g (r ⊙ h)), which keep h bounded in (-1, 1). The state predicts a
Gaussian per channel, (μ, log σ²) = p(h) with p an MLP. At an observation the GRU-Bayes update prepares
each observed channel c on its own: ReLU(W_c [x_c, μ_c, log σ²_c, (x_c - μ_c)/σ_c] + b_c) (unobserved
channels give 0), and feeds the concatenation to a GRU cell. Its loss, as in the authors' code, is the
negative log-likelihood of the observations under the prediction before each update plus ``mixing`` ×
the KL divergence from the prediction after it to N(x, ``obs_noise_std``²), summed over observed entries
and divided by the number of series; ``loss_weight`` × that is the block's `aux_loss`, which training adds
to the task loss. Outputs are projections of the state after each update.

Deliberate differences: the flow does not read the prediction p (the authors' ``impute: false``
variant, so any registered solver integrates it); the state starts at 0 (no static covariates).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from omegaconf import MISSING
from torch import Tensor, nn

from ...errors import ConfigError
from ...seq import IrregularBatch, Seq
from ...solvers import SolverConfig
from ..base import ODEBlock
from .common import JumpODE

FEATURES_PER_CHANNEL = 4             # value, predicted mean, predicted log-variance, standardised error
LOG_2PI = math.log(2 * math.pi)


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


def gaussian_nll(x: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """-log N(x; μ, σ²) per entry."""
    return 0.5 * ((x - mean) ** 2 * torch.exp(-logvar) + logvar + LOG_2PI)


def kl_to_observation(x: Tensor, mean: Tensor, logvar: Tensor, noise_std: float) -> Tensor:
    """KL(N(μ, σ²) || N(x, noise_std²)) per entry."""
    return math.log(noise_std) - 0.5 * logvar + (torch.exp(logvar) + (mean - x) ** 2) / (2 * noise_std**2) - 0.5


class GRUODEEncoder(ODEBlock):
    @dataclass
    class Config:
        d_in: int = MISSING              # input channels (injected)
        d_model: int = MISSING           # output width (injected)
        hidden: int = 32                 # ODE state size
        p_hidden: int = 32               # hidden width of the prediction MLP p(h)
        prep_hidden: int = 4             # per-channel width of the GRU-Bayes input preparation
        mixing: float = 1.0e-4           # weight of the post-update KL term in the GRU-Bayes loss
        obs_noise_std: float = 1.0e-2    # observation noise of the KL term
        loss_weight: float = 1.0         # weight of the GRU-Bayes loss added to the task loss (0: off)
        solver: SolverConfig = field(default_factory=lambda: SolverConfig(method="rk4"))

        def validate(self, path: str) -> None:
            for key in ("mixing", "loss_weight"):
                value = getattr(self, key)
                if not value >= 0:
                    raise ConfigError(f"{path}.{key}", f"must be >= 0, got {value}", got=value)
            noise = self.obs_noise_std
            if not noise > 0:
                raise ConfigError(f"{path}.obs_noise_std", f"must be > 0, got {noise}", got=noise)

    accepts = "irregular"

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        c, prep = cfg.d_in, cfg.prep_hidden
        self.flow = JumpODE(GRUODEField(cfg.hidden), self.solver, cfg.hidden)
        self.predict = nn.Sequential(nn.Linear(cfg.hidden, cfg.p_hidden), nn.ReLU(), nn.Linear(cfg.p_hidden, 2 * c))
        self.prep_weight = nn.Parameter(math.sqrt(2.0 / (FEATURES_PER_CHANNEL + prep)) *
                                        torch.randn(c, FEATURES_PER_CHANNEL, prep))    # [C, 4, P]
        self.prep_bias = nn.Parameter(torch.full((c, prep), 0.1))
        self.cell = nn.GRUCell(prep * c, cfg.hidden)
        self.out = nn.Linear(cfg.hidden, cfg.d_model)
        self._nll: list[Tensor] = []
        self._kl: list[Tensor] = []
        self._loss: Tensor | None = None

    def jump(self, h, x, m):
        mean, logvar = self.predict(h).chunk(2, dim=-1)                    # 2 x [B, C]
        error = (x - mean) * torch.exp(-0.5 * logvar)
        feats = torch.stack([x, mean, logvar, error], -1)                  # [B, C, 4]
        prepared = torch.relu(torch.einsum("bcf,cfp->bcp", feats, self.prep_weight) + self.prep_bias)
        prepared = prepared * m[..., None].to(prepared.dtype)              # [B, C, P]: 0 where unobserved
        new = self.cell(prepared.flatten(1), h)
        after_mean, after_logvar = self.predict(new).chunk(2, dim=-1)
        mf = m.to(x.dtype)
        self._nll.append((gaussian_nll(x, mean, logvar) * mf).sum())
        self._kl.append((kl_to_observation(x, after_mean, after_logvar, self.cfg.obs_noise_std) * mf).sum())
        return new

    def aux_loss(self) -> Tensor | None:
        if self._loss is None or self.cfg.loss_weight == 0:
            return None
        return self.cfg.loss_weight * self._loss

    def forward(self, batch: IrregularBatch) -> Seq:
        self._nll, self._kl = [], []
        states = self.flow(batch, self.jump)                               # [B, N, H]
        series = batch.values.shape[0]
        self._loss = (torch.stack(self._nll).sum() + self.cfg.mixing * torch.stack(self._kl).sum()) / series
        self._nll, self._kl = [], []
        return batch.seq(self.out(states))                                 # [B, N, D]
