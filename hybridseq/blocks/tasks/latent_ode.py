"""Latent ODE query head (Rubanova, Chen & Duvenaud, "Latent ODEs for Irregularly-Sampled Time Series",
NeurIPS 2019): the generative half of the latent ODE, trained by the ELBO (IWAE with ``samples`` > 1).

The incoming sequence is the recognition network's output; with ``encoder: {type: ode_rnn, direction:
backward}`` (the paper's ODE-RNN run from the last observation back to the first) its state at the first
observation summarises the series (``pool: first``). An MLP maps that summary to q(z0) = N(μ, s²) (the
authors' ``transform_z0``: Linear, tanh, Linear; s = |·|); K samples z0 = μ + s ε are integrated by the
configured solver under dz/dt = f(z) (an MLP field) from z0's time t0 to every query time, forward and
backward, and a linear decoder gives the observation means. ``start: observation`` puts t0 at the pooled
observation (the paper's text: z0 is the state at the first observation); ``start: query`` at each
series' first query time, as the authors' code does (their decoder's ``odeint`` starts at the first time
to predict, which in extrapolation is the first time after the observed window). The targets are scored
by the bound of `variational` (Gaussian likelihood of fixed std, KL to the N(0, I) prior).

Output: ``x`` [B, Q, channels] is the decoding of z0 = μ, the posterior mean (deterministic, so validation
and test metrics carry no sampling noise); ``predictive`` holds the K sampled decodings.

Deliberate differences from the authors' code, each for a reason: t0 is each series' own (their batches
share one time grid); s = |·| + 1e-4, their |·| floored so that log s and the KL stay finite; the field
has one hidden layer (theirs ``gen_layers`` + 1); the likelihood covers the task's query targets (their
interpolation also reconstructs the observed points, which the head does not see); their loss averages
the log-density over points and channels and the KL over latent dimensions, then takes the log-sum-exp
over samples of the batch means; here the bound is per series, as the paper defines it (``normalise``
for a per-entry scale).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ...seq import Seq
from ...solvers import SolverConfig
from ..base import ODEBlock, choice
from ..layers import MLPField, masked_pool
from .query import QueryHead, _times, solve_at_offsets
from .variational import MIN_STD, KLWeight, LatentBound, LatentConfig, gaussian_kl, with_samples


class LatentODE(ODEBlock, QueryHead):
    @dataclass
    class Config(LatentConfig):
        latent: int = 10                 # size of z (the paper's toy experiments: 10)
        pool: str = choice("first", "last")   # the summary state: first (backward encoder) or last observation
        start: str = choice("observation", "query")   # z0's time: the pooled observation, or the first query
        posterior_hidden: int = 100      # hidden width of the MLP from the summary to (μ, s) of q(z0)
        field_hidden: int = 100          # hidden width of the latent ODE's vector field (the authors' units)
        solver: SolverConfig = field(default_factory=SolverConfig)   # dopri5, rtol 1e-3, atol 1e-4 (paper)

    example = {"channels": 2, "latent": 4, "samples": 2, "posterior_hidden": 8, "field_hidden": 8,
               "solver": {"method": "rk4", "step_size": 0.25}}

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.kl_weight = KLWeight(cfg)
        z = cfg.latent
        self.posterior = nn.Sequential(nn.Linear(cfg.d_model, cfg.posterior_hidden), nn.Tanh(),
                                       nn.Linear(cfg.posterior_hidden, 2 * z))
        self.func = MLPField(z, cfg.field_hidden)
        self.decoder = nn.Linear(z, cfg.channels)

    def forward(self, seq: Seq) -> Seq:
        cfg = self.cfg
        valid = seq.valid()                                                  # [B, L]
        summary = masked_pool(seq.x, valid, cfg.pool)                        # [B, D]
        mean, raw = self.posterior(summary).chunk(2, dim=-1)                 # 2 x [B, Z]
        std = raw.abs() + MIN_STD                                             # the authors' |·|, floored
        z0 = with_samples(mean, std, cfg.samples)[1:]                        # [K, B, Z]
        tq = self.queries(seq)                                               # [B, Q]
        b, q = tq.shape
        if cfg.start == "query":
            t0 = tq.min(1).values                                            # [B] (padding repeats the last)
        else:
            t0 = masked_pool(_times(seq)[..., None], valid, cfg.pool)[:, 0]  # [B]
        tau = tq - t0[:, None]                                               # [B, Q]
        # the mean on its own: an adaptive solver's steps would otherwise depend on the random samples
        x = self.decoder(solve_at_offsets(self.solver, self.func, mean, tau))              # [B, Q, C]
        z = solve_at_offsets(self.solver, self.func, z0.flatten(0, 1), tau.repeat(cfg.samples, 1))   # [K B, Q, Z]
        decoded = self.decoder(z).view(cfg.samples, b, q, cfg.channels)     # [K, B, Q, C]
        bound = LatentBound(decoded, gaussian_kl(mean, std).sum(-1), cfg.obs_std, self.kl_weight(), cfg.normalise)
        return Seq(x=x, t=tq, predictive=bound)                              # [B, Q, C] at z0 = μ
