"""What the latent-variable query heads (`latent_ode`, `mtand`) share: their config, the Gaussian posterior
q(z | x) with its KL to the N(0, I) prior, reparameterised samples, and the bound that scores the targets.

With K samples z_k ~ q(z | x) per series b and the decoded observation means ŷ_k, the Gaussian observation
model of fixed std σ (``obs_std``) gives, over the observed target entries (q, c) of the series,

    log p_kb = Σ_qc log N(y_bqc; ŷ_kbqc, σ²),      KL_b = Σ_j KL(N(μ_bj, s_bj²) ‖ N(0, 1)),
    w_kb = log p_kb - β KL_b,   ELBO_b = (1/K) Σ_k w_kb,   IWAE_b = log (1/K) Σ_k exp(w_kb)

(β = ``kl_weight``; the KL inside the IWAE sum is the closed form, as both papers' code has it). The loss is
-mean_b IWAE_b, which is -mean_b ELBO_b for K = 1. ``kl_warmup: N`` ramps β linearly from 0 over the first N
training steps (both authors' code anneals it, as 1 - 0.99^n after a short wait); evaluation always scores
with the full β, so validation losses stay comparable across epochs. ``normalise: true`` divides log p and KL
by the series' number of observed target entries (mTAN's ``--norm``), so series of different sizes weigh
alike.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ...errors import ConfigError
from .query import QueryHead

LOG_2PI = math.log(2 * math.pi)
MIN_STD = 1.0e-4             # floor of a posterior std, so that log s and the KL stay finite


def at_least_one(cfg, path: str, keys) -> None:
    """ConfigError at ``path.key`` for the first of ``keys`` whose value in ``cfg`` is below 1."""
    for key in keys:
        value = getattr(cfg, key)
        if value < 1:
            raise ConfigError(f"{path}.{key}", f"must be >= 1, got {value}", got=value)


@dataclass
class LatentConfig(QueryHead.Config):
    latent: int = 16             # size of the latent state z
    samples: int = 3             # K, samples of z per series; K > 1 trains the IWAE bound
    obs_std: float = 0.01        # σ, fixed std of the Gaussian observation model (both papers: 0.01)
    kl_weight: float = 1.0       # β, weight of the KL term
    normalise: bool = False      # divide both terms by the series' number of observed target entries
    kl_warmup: int = 0           # training steps over which β ramps linearly from 0 (0: no warm-up)

    def validate(self, path: str) -> None:
        at_least_one(self, path, ("latent", "samples"))
        if self.kl_warmup < 0:
            raise ConfigError(f"{path}.kl_warmup", f"must be >= 0 (training steps), got {self.kl_warmup}",
                              got=self.kl_warmup)
        if not (math.isfinite(self.obs_std) and self.obs_std > 0):
            raise ConfigError(f"{path}.obs_std", f"must be a finite number > 0, got {self.obs_std}", got=self.obs_std)
        if not (math.isfinite(self.kl_weight) and self.kl_weight >= 0):
            raise ConfigError(f"{path}.kl_weight", f"must be a finite number >= 0, got {self.kl_weight}",
                              got=self.kl_weight)


class KLWeight(nn.Module):
    """β of the bound: ``kl_weight``, ramped linearly from 0 over the first ``kl_warmup`` training steps.
    Each call in training mode counts one step (kept in the state dict, so a resumed run continues the
    ramp); in eval mode it is the full β."""

    def __init__(self, cfg: LatentConfig):
        super().__init__()
        self.weight, self.warmup = cfg.kl_weight, cfg.kl_warmup
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def forward(self) -> float:
        if not self.training or self.warmup == 0:
            return self.weight
        done = int(self.steps)
        self.steps += 1
        return self.weight * min(1.0, done / self.warmup)


def gaussian_kl(mean: Tensor, std: Tensor) -> Tensor:
    """KL(N(mean, std²) ‖ N(0, 1)) per entry."""
    return 0.5 * (mean.square() + std.square() - 1.0) - torch.log(std)


def with_samples(mean: Tensor, std: Tensor, samples: int) -> Tensor:
    """[1 + K, *mean.shape]: the posterior mean, then K reparameterised draws mean + std · ε, ε ~ N(0, I)."""
    eps = torch.randn((samples, *mean.shape), dtype=mean.dtype, device=mean.device)
    return torch.cat([mean[None], mean + std * eps])


@dataclass
class LatentBound:
    """A latent-variable head's predictive distribution (its ``Seq.predictive``): the decoded means of K
    samples of z and the posterior's KL, which score the targets by the bound of the module docstring."""

    decoded: Tensor              # [K, B, Q, C] observation means, one per sample of z
    kl: Tensor                   # [B] KL(q(z | x) ‖ N(0, I)), summed over the latent entries
    obs_std: float
    kl_weight: float = 1.0
    normalise: bool = False

    def score(self, values: Tensor, mask: Tensor | None) -> dict:
        """``loss`` (-IWAE) and the per-series means of ``iwae``, ``elbo``, ``log_likelihood`` and ``kl``
        for targets values [B, Q, C] observed where mask [B, Q, C] (None: everywhere)."""
        decoded, values = self.decoded.float(), values.float()
        m = torch.ones_like(values) if mask is None else mask.to(values.dtype)     # [B, Q, C]
        var = self.obs_std ** 2
        density = -0.5 * ((values - decoded).square() / var + math.log(var) + LOG_2PI)   # [K, B, Q, C]
        log_p = (density * m).sum((-2, -1))                                        # [K, B]
        kl = self.kl.float()                                                       # [B]
        if self.normalise:
            entries = m.sum((-2, -1)).clamp_min(1.0)                               # [B]
            log_p, kl = log_p / entries, kl / entries
        weights = log_p - self.kl_weight * kl                                      # [K, B]
        iwae = torch.logsumexp(weights, 0) - math.log(weights.shape[0])            # [B]
        return {"loss": -iwae.mean(), "iwae": iwae.mean().detach(), "elbo": weights.mean().detach(),
                "log_likelihood": log_p.mean().detach(), "kl": kl.mean().detach()}
