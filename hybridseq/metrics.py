"""Streaming metrics: accumulate over batches, then `compute` once.

Classification: accuracy and macro-F1 (mean over the classes that occur in the targets or the
predictions, from a confusion matrix). Regression and query-time prediction: MSE and MAE over the
observed entries (a mask selects them; padding and unobserved query values never count). Language
modelling: mean cross-entropy per target token (nats), perplexity, bits per token (bits per character on a
character-level corpus) and the share of target tokens predicted exactly (argmax).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE = -100                  # target id of positions that carry no target (padding, context)


class ClassifyMeter:
    """Confusion matrix of predicted vs true classes, plus the summed loss."""

    def __init__(self, classes: int):
        self.confusion = torch.zeros(classes, classes, dtype=torch.long)   # [true, predicted]
        self.loss_sum, self.count = 0.0, 0

    def update(self, logits: Tensor, label: Tensor, loss: float) -> None:
        k = self.confusion.shape[0]
        pred = logits.argmax(-1).cpu()                                       # [B]
        flat = label.cpu() * k + pred                                        # [B] index into k*k
        self.confusion += torch.bincount(flat, minlength=k * k).view(k, k)
        self.loss_sum += loss * label.shape[0]
        self.count += label.shape[0]

    def compute(self) -> dict:
        c = self.confusion.double()
        tp = c.diag()
        support, predicted = c.sum(1), c.sum(0)
        present = (support + predicted) > 0
        f1 = 2 * tp / (support + predicted).clamp_min(1)
        return {"loss": self.loss_sum / max(self.count, 1),
                "accuracy": float(tp.sum() / c.sum().clamp_min(1)),
                "macro_f1": float(f1[present].mean()) if present.any() else 0.0}


class ErrorMeter:
    """Squared and absolute errors summed over the entries where ``mask`` is True."""

    def __init__(self):
        self.sq, self.abs, self.entries = 0.0, 0.0, 0
        self.loss_sum, self.count = 0.0, 0

    def update(self, pred: Tensor, target: Tensor, mask: Tensor | None, loss: float) -> None:
        diff = (pred.float() - target.float()).detach()
        m = torch.ones_like(diff, dtype=torch.bool) if mask is None else mask.bool()
        self.sq += float((diff.square() * m).sum())
        self.abs += float((diff.abs() * m).sum())
        self.entries += int(m.sum())
        self.loss_sum += loss * target.shape[0]
        self.count += target.shape[0]

    def compute(self) -> dict:
        n = max(self.entries, 1)
        return {"loss": self.loss_sum / max(self.count, 1), "mse": self.sq / n, "mae": self.abs / n}


class TokenMeter:
    """Summed cross-entropy and exact predictions over the target tokens (ids other than `IGNORE`)."""

    def __init__(self):
        self.nll, self.correct, self.tokens = 0.0, 0, 0

    def update(self, logits: Tensor, target: Tensor) -> None:
        logits, target = logits.detach().float().flatten(0, 1), target.flatten()      # [B*L, V], [B*L]
        keep = target != IGNORE
        self.nll += float(F.cross_entropy(logits[keep], target[keep], reduction="sum"))
        self.correct += int((logits[keep].argmax(-1) == target[keep]).sum())
        self.tokens += int(keep.sum())

    def compute(self) -> dict:
        loss = self.nll / max(self.tokens, 1)
        return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "bits_per_token": loss / math.log(2),
                "accuracy": self.correct / max(self.tokens, 1)}
