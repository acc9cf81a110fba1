"""The ``spirals`` dataset: irregularly sampled noisy 2-D spirals, generated on the fly from a seed.

Each series follows r(t) (cos θ(t), sin θ(t)) with r(t) = r0 + growth · t and θ(t) = θ0 ± ω t, observed at
sorted uniform random times in [0, duration] (in the style of the spiral experiments of Chen et al. 2018
and Rubanova et al. 2019). Tasks: ``classify`` clockwise (0) vs anticlockwise (1); ``regress`` the pair
(ω, growth); ``interpolate`` values at held-out times inside the window; ``extrapolate`` values after the
observed part (the last ``horizon`` share of the window).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..blocks.base import choice
from ..errors import ConfigError
from ..schema import build_config
from .core import DataOptions, DataSplits, make_splits
from .transforms import sample

CLASSES = ["clockwise", "anticlockwise"]


@dataclass
class SpiralOptions(DataOptions):
    task: str = choice("classify", "regress", "interpolate", "extrapolate")
    n_train: int = 512          # series in train (validation is carved from it)
    n_test: int = 128
    points: int = 64            # observation times per series (before the irregular protocol)
    queries: int = 16           # query times per series (interpolate / extrapolate)
    horizon: float = 0.25       # extrapolate: share of the window after the last observation
    duration: float = 6.0       # length of the time window
    noise: float = 0.05         # std of the observation noise

    def validate(self, path: str) -> None:
        super().validate(path)
        for key in ("n_train", "n_test", "points", "queries"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{path}.{key}", f"must be >= 1, got {getattr(self, key)}")
        if not 0.0 < self.horizon < 1.0:
            raise ConfigError(f"{path}.horizon", f"must be in (0, 1), got {self.horizon}")
        if self.duration <= 0 or self.noise < 0:
            raise ConfigError(f"{path}.duration", "duration must be > 0 and noise >= 0")


def _spiral(t, sign, omega, growth, r0, theta0):
    """Points [.., 2] of the spirals at times t [.., N] (parameters broadcast as [.., 1])."""
    r = r0 + growth * t
    theta = theta0 + sign * omega * t
    return torch.stack([r * torch.cos(theta), r * torch.sin(theta)], dim=-1)


def generate(n: int, opts: SpiralOptions, g: torch.Generator) -> list[dict]:
    def u(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand(n, *shape, generator=g)

    sign_bit = torch.randint(0, 2, (n,), generator=g)
    sign = (2 * sign_bit - 1).float()[:, None]                        # [n, 1]: +1 anticlockwise
    omega, growth, r0, theta0 = u(0.8, 1.6, 1), u(0.1, 0.4, 1), u(0.5, 1.0, 1), u(0.0, 2 * math.pi, 1)
    span = opts.duration
    q = opts.queries
    if opts.task == "extrapolate":
        cut = span * (1.0 - opts.horizon)
        obs_t = u(0.0, cut, opts.points).sort(-1).values                # [n, P]
        query_t = u(cut, span, q).sort(-1).values                        # [n, Q]
    else:
        both = u(0.0, span, opts.points + q)                             # [n, P + Q]
        obs_t = both[:, : opts.points].sort(-1).values
        query_t = both[:, opts.points:].sort(-1).values
    obs = _spiral(obs_t, sign, omega, growth, r0, theta0)                # [n, P, 2]
    obs = obs + opts.noise * torch.randn(obs.shape, generator=g)
    query = _spiral(query_t, sign, omega, growth, r0, theta0)            # [n, Q, 2]
    out = []
    for i in range(n):
        if opts.task == "classify":
            targets = {"label": sign_bit[i]}
        elif opts.task == "regress":
            targets = {"target": torch.cat([omega[i], growth[i]])}
        else:
            targets = {"query_times": query_t[i], "query_values": query[i],
                       "query_mask": torch.ones(q, 2, dtype=torch.bool)}
        out.append(sample(obs[i], obs_t[i], **targets))
    return out


def spirals(**options) -> DataSplits:
    opts = build_config(SpiralOptions, options, "data", what="dataset 'spirals'")
    g = torch.Generator().manual_seed(opts.seed)
    train, test = generate(opts.n_train, opts, g), generate(opts.n_test, opts, g)
    classify = opts.task == "classify"
    return make_splits("spirals", opts.task, train, test, opts, classes=CLASSES if classify else None,
                       outputs=2 if opts.task == "regress" else None)
