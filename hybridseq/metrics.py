"""Streaming metrics: accumulate over batches, then `compute` once.

Classification: accuracy and macro-F1 (mean over the classes that occur in the targets or the
predictions, from a confusion matrix). Regression and query-time prediction: MSE and MAE over the
observed entries (a mask selects them; padding and unobserved query values never count).
"""
from __future__ import annotations

import torch
from torch import Tensor


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
