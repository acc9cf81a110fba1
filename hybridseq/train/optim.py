"""The optimiser: AdamW over parameter groups that decay only what should be decayed, and its schedule.

Following nanoGPT and mamba_ssm, weight decay applies to weight matrices and embeddings (parameters
with two or more dimensions) only. Norm weights, biases and every other vector are not decayed, and a
block excludes any further parameter by marking it: ``param._no_weight_decay = True`` (mamba_ssm's
mark, used for ``A_log``), or ``param._optim = {"lr": 1e-3, "weight_decay": 0.0}`` for its own
hyperparameters (the state-spaces/s4 mark, used for an SSM's Λ, P, B and log Δ).
`hybridseq.blocks.layers.no_weight_decay` and `own_lr` set them.
"""
from __future__ import annotations

import math

import torch
from torch import nn

MIN_LR_FACTOR = 0.1          # the cosine schedule ends at this fraction of train.lr


def decays(p: nn.Parameter) -> bool:
    """Whether ``p`` is decayed by default: a matrix or embedding not marked otherwise."""
    return p.ndim >= 2 and not getattr(p, "_no_weight_decay", False)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters grouped by their hyperparameters: ``[{"params": [...], "weight_decay": .., ..}]``.

    Groups come in the order their first parameter appears, so the layout is the same on every rank
    and on resume.
    """
    groups: dict[tuple, list] = {}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        hp = {"weight_decay": weight_decay if decays(p) else 0.0, **getattr(p, "_optim", {})}
        groups.setdefault(tuple(sorted(hp.items())), []).append(p)
    return [{"params": params, **dict(key)} for key, params in groups.items()]


def configure_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW at ``lr`` over `param_groups` (a group's own ``lr`` mark wins over ``lr``)."""
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr)


def lr_schedule(opt: torch.optim.Optimizer, kind: str, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """``train.scheduler`` over ``total`` optimizer steps: ``cosine`` from lr down to `MIN_LR_FACTOR` · lr,
    or ``constant``."""
    def factor(step: int) -> float:
        if kind == "constant":
            return 1.0
        return MIN_LR_FACTOR + (1 - MIN_LR_FACTOR) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)
