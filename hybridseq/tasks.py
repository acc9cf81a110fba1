"""Learning tasks: each pairs a loss with its metric meter, the metric it selects on and that metric's
direction, and says what the model's task head must produce. Tasks are registered like blocks, through
``hybridseq_register_tasks``; the built-in ones below use the same hook.

| task          | head produces                    | loss                      | metrics             |
|---------------|----------------------------------|---------------------------|---------------------|
| `classify`    | pooled logits [B, classes]       | cross-entropy             | accuracy, macro_f1  |
| `regress`     | pooled values [B, outputs]       | MSE                       | mse, mae            |
| `interpolate` | sequence [B, Q, channels]        | MSE over observed queries | mse, mae            |
| `extrapolate` | sequence [B, Q, channels]        | MSE over observed queries | mse, mae            |
| `lm`          | sequence [B, L, vocab] logits    | cross-entropy per target  | perplexity, bits_per_token, accuracy |

`lm` reads ``targets["next"]`` [B, L]: the token each position must predict (`IGNORE` where none).

A head that defines a likelihood of the targets (``Seq.predictive``, e.g. `latent_ode`, `mtand`) replaces
the loss: `Task.objective` hands it the values the task scores (`Task.scored`) and minimises its bound.
"""
from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor

from . import registry
from .errors import ConfigError
from .hookspecs import hookimpl
from .metrics import IGNORE, ClassifyMeter, ErrorMeter, TokenMeter
from .seq import Seq


class Task:
    """Base class of a learning task; the registered name is passed to the constructor.

    Class attributes: ``port`` (what the head must produce: ``"pooled"`` | ``"sequence"``),
    ``width_key`` (the head's config field, and the `DataInfo` attribute, giving the output width),
    ``monitor`` (the validation metric that selects the best epoch and drives early stopping) and
    ``maximize`` (the metrics of `meter` where higher is better; every other one is lower-better).
    """

    port: ClassVar[str] = "pooled"
    width_key: ClassVar[str]
    monitor: ClassVar[str]
    maximize: ClassVar[frozenset] = frozenset()

    def __init__(self, name: str):
        self.name = name

    def higher_is_better(self, metric: str) -> bool:
        return metric in self.maximize

    def loss(self, pred: Tensor, targets: dict) -> Tensor:
        """The training loss of a batch: ``pred`` is the head's output ``x``, ``targets`` the collated dict."""
        raise NotImplementedError

    def objective(self, out: Seq, targets: dict) -> tuple[Tensor, dict]:
        """The loss of a batch from the head's whole output, and the terms reported beside the metrics.

        When the head returns a predictive distribution (``out.predictive``) its ``score`` of the values in
        `scored` gives the loss and the terms (e.g. ``elbo``, ``kl``); otherwise `loss` of ``out.x``, no terms.
        """
        if out.predictive is None:
            return self.loss(out.x, targets), {}
        terms = dict(out.predictive.score(*self.scored(targets)))
        return terms.pop("loss"), terms

    def scored(self, targets: dict) -> tuple[Tensor, Tensor | None]:
        """(values, observed mask or None) that a head's predictive distribution scores."""
        raise ConfigError("model.head.type", f"task '{self.name}' has no values for the head's likelihood to score; "
                          "use a head without one (a likelihood head fits interpolate / extrapolate)")

    def meter(self, width: int):
        """A fresh metric accumulator: ``update(...)`` per batch (through `update`), then ``compute() -> dict``."""
        raise NotImplementedError

    def update(self, meter, pred: Tensor, targets: dict, loss: float) -> None:
        raise NotImplementedError


class Classify(Task):
    width_key, monitor, maximize = "classes", "accuracy", frozenset({"accuracy", "macro_f1"})

    def loss(self, pred, targets):
        return F.cross_entropy(pred.float(), targets["label"])

    def meter(self, width):
        return ClassifyMeter(width)

    def update(self, meter, pred, targets, loss):
        meter.update(pred, targets["label"], loss)


class Regress(Task):
    width_key, monitor = "outputs", "mse"

    def loss(self, pred, targets):
        return F.mse_loss(pred.float(), targets["target"].float())

    def meter(self, width):
        return ErrorMeter()

    def update(self, meter, pred, targets, loss):
        meter.update(pred, targets["target"], None, loss)


class QueryTask(Task):
    """Values at query times (``interpolate`` inside the observed window, ``extrapolate`` after it)."""

    port, width_key, monitor = "sequence", "channels", "mse"
    maximize = frozenset({"elbo", "iwae", "log_likelihood"})        # terms of a likelihood head's bound

    def scored(self, targets):
        return targets["query_values"], targets["query_mask"]

    def loss(self, pred, targets):
        pred = pred.float()
        mask = targets["query_mask"].to(pred.dtype)                               # [B, Q, C]
        err = (pred - targets["query_values"].float()).square() * mask
        return err.sum() / mask.sum().clamp_min(1.0)

    def meter(self, width):
        return ErrorMeter()

    def update(self, meter, pred, targets, loss):
        meter.update(pred, targets["query_values"], targets["query_mask"], loss)


class LanguageModel(Task):
    """Causal language modelling: cross-entropy of each position's logits against its target token."""

    port, width_key, monitor, maximize = "sequence", "vocab", "perplexity", frozenset({"accuracy"})
    causal = True          # the model must not see later tokens (checked on the assembled model)

    def loss(self, pred, targets):
        return F.cross_entropy(pred.float().flatten(0, 1), targets["next"].flatten(), ignore_index=IGNORE)

    def meter(self, width):
        return TokenMeter()

    def update(self, meter, pred, targets, loss):
        meter.update(pred, targets["next"])


def get_task(name: str, path: str = "task") -> Task:
    """The registered task ``name``, or a `ConfigError` at ``path`` listing the tasks."""
    return registry.tasks.get(name, path)(name)


@hookimpl
def hybridseq_register_tasks(register):
    register("classify", Classify)
    register("regress", Regress)
    register("interpolate", QueryTask)
    register("extrapolate", QueryTask)
    register("lm", LanguageModel)
