"""The data that flows between blocks."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import Tensor


def _prefix(lengths: Tensor, n: int) -> Tensor:
    """[B, n] bool, True at the first ``lengths[b]`` positions of each row."""
    return torch.arange(n, device=lengths.device)[None, :] < lengths[:, None]


def _moved(obj, device, dtype):
    """A copy of dataclass ``obj`` with its tensors on ``device`` and its float tensors in ``dtype``."""
    changes = {}
    for f in fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, Tensor):
            changes[f.name] = v.to(device=device, dtype=dtype if v.is_floating_point() else None)
    return replace(obj, **changes)


@dataclass
class Seq:
    """A batch of sequences on the model's stream.

    x:       [B, L, D] features (or [B, D] once pooled by a task head)
    t:       [B, L] real observation times, or None for a regular grid
    mask:    [B, L] bool, True at valid (non-padded) positions, or None when all are valid
    query_t: [B, Q] times at which a task head should predict (interpolation / extrapolation)
    predictive: what a head that defines a likelihood of its targets returns beside its prediction ``x``:
             an object with ``score(values, mask) -> dict`` of scalar tensors, ``"loss"`` among them (e.g.
             the latent-variable heads' bound, `hybridseq.blocks.tasks.variational`); None otherwise.
             The task scores its targets with it (`Task.objective`).
    """

    x: Tensor
    t: Tensor | None = None
    mask: Tensor | None = None
    query_t: Tensor | None = None
    predictive: Any = None

    def valid(self) -> Tensor:
        """[B, L] bool mask of valid positions (all True when ``mask`` is None)."""
        if self.mask is not None:
            return self.mask
        return torch.ones(self.x.shape[:2], dtype=torch.bool, device=self.x.device)

    def to(self, device=None, dtype=None) -> "Seq":
        return _moved(self, device, dtype)


@dataclass
class IrregularBatch:
    """What datasets yield for irregularly sampled data; each channel may be missing independently.

    values:      [B, N, C] observations (anything at unobserved entries; blocks must ignore it)
    times:       [B, N] observation times, increasing along N within each series' valid prefix
    mask:        [B, N, C] bool, True where a channel was observed
    lengths:     [B] long, number of valid time points per series (the rest is padding)
    query_times: [B, Q] optional times at which a task head predicts
    """

    values: Tensor
    times: Tensor
    mask: Tensor
    lengths: Tensor
    query_times: Tensor | None = None

    @property
    def valid(self) -> Tensor:
        """[B, N] bool, True at the non-padded time points."""
        return _prefix(self.lengths, self.values.shape[1])

    @property
    def observed(self) -> Tensor:
        """[B, N, C] bool, True where a channel was observed at a non-padded time point."""
        return self.mask & self.valid[..., None]

    def observed_values(self) -> Tensor:
        """[B, N, C] the values, 0 wherever `observed` is False (nothing padding or a hidden channel holds
        can leak through)."""
        return torch.where(self.observed, self.values, torch.zeros_like(self.values))

    def seq(self, x: Tensor) -> Seq:
        """The `Seq` of features ``x`` [B, N, D] placed at this batch's observation times."""
        return Seq(x=x, t=self.times, mask=self.valid, query_t=self.query_times)

    def to_seq(self) -> Seq:
        """This batch as a sequence for a model without an encoder: the observed values [B, N, C]
        (unobserved ones 0) at the observation times."""
        return self.seq(self.observed_values())

    @classmethod
    def from_seq(cls, seq: Seq) -> "IrregularBatch":
        """A regular batch seen as an irregular one: every channel observed at every valid step."""
        b, n, c = seq.x.shape
        valid = seq.valid()
        times = seq.t if seq.t is not None else torch.arange(n, dtype=seq.x.dtype, device=seq.x.device).expand(b, n)
        mask = valid[:, :, None].expand(b, n, c)
        return cls(values=seq.x, times=times, mask=mask, lengths=valid.sum(1), query_times=seq.query_t)

    def to(self, device=None, dtype=None) -> "IrregularBatch":
        return _moved(self, device, dtype)


@dataclass
class TokenBatch:
    """What token datasets yield: integer token ids, padded at the end.

    tokens:  [B, L] long token ids (anything at padded positions; blocks must ignore it)
    lengths: [B] long, number of valid tokens per sequence
    times:   [B, L] optional observation times of the tokens (None: positions 0, 1, ..)
    """

    tokens: Tensor
    lengths: Tensor
    times: Tensor | None = None

    @property
    def valid(self) -> Tensor:
        """[B, L] bool, True at the non-padded positions."""
        return _prefix(self.lengths, self.tokens.shape[1])

    def seq(self, x: Tensor) -> Seq:
        """The `Seq` of features ``x`` [B, L, D] at this batch's positions (and times, when given)."""
        return Seq(x=x, t=self.times, mask=self.valid)

    def to(self, device=None, dtype=None) -> "TokenBatch":
        return _moved(self, device, dtype)
