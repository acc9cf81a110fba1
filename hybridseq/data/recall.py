"""Synthetic recall tasks of the Mamba paper (Gu & Dao 2023, §4.1), generated from a seed.

Token ids: 0 is the blank (selective copying's filler) or the trigger (induction heads), 1 the copy
marker (selective copying), the rest data tokens. Both are ``lm`` tasks whose loss counts only the
answer positions.

``selective_copy``: ``tokens`` data tokens at random, sorted positions of a context of ``length``
blanks, followed by ``tokens`` markers; at the i-th marker the model must output the i-th data token.
The random spacing is what makes it *selective*: an LTI convolution cannot tell data from filler by
position alone. Sequence length ``length + tokens``.

``induction_heads``: ``length`` random data tokens in which the trigger occurs once at a random place,
followed by a data token ``x``; the sequence ends with the trigger again, and its answer is ``x``
(associative recall of the token that followed, Olsson et al. 2022).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ..metrics import IGNORE
from ..schema import build_config, ranged
from .core import DataSplits
from .tokens import MAX_TOKENS, GeneratedTokenOptions, make_token_splits

BLANK, MARKER, TRIGGER = 0, 1, 0


@dataclass
class SelectiveCopyOptions(GeneratedTokenOptions):
    # context length (the paper's setting; the sequence adds `tokens` markers)
    length: int = ranged(4096, ge=1, le=MAX_TOKENS)
    vocab: int = ranged(16, ge=3, le=MAX_TOKENS)      # vocabulary size, the blank and the marker included
    tokens: int = 16             # data tokens to memorise and copy

    def validate(self, path: str) -> None:
        super().validate(path)
        if self.vocab < 3:
            raise ConfigError(f"{path}.vocab", f"must be >= 3 (blank, marker, data), got {self.vocab}")
        if not 1 <= self.tokens <= self.length:
            raise ConfigError(f"{path}.tokens", f"must be in [1, length={self.length}], got {self.tokens}")


@dataclass
class InductionOptions(GeneratedTokenOptions):
    # sequence length, the final trigger included (paper: trained at 256)
    length: int = ranged(256, ge=4, le=MAX_TOKENS)
    vocab: int = ranged(16, ge=2, le=MAX_TOKENS)      # vocabulary size, the trigger included

    def validate(self, path: str) -> None:
        super().validate(path)
        if self.vocab < 2:
            raise ConfigError(f"{path}.vocab", f"must be >= 2 (trigger, data), got {self.vocab}")
        if self.length < 4:
            raise ConfigError(f"{path}.length", f"must be >= 4, got {self.length}")


def copy_samples(n: int, opts: SelectiveCopyOptions, g: torch.Generator) -> list[dict]:
    length, m = opts.length, opts.tokens
    out = []
    for _ in range(n):
        data = torch.randint(2, opts.vocab, (m,), generator=g)                  # [M]
        where = torch.randperm(length, generator=g)[:m].sort().values           # [M] sorted positions
        tokens = torch.full((length + m,), BLANK, dtype=torch.long)
        tokens[where], tokens[length:] = data, MARKER
        target = torch.full_like(tokens, IGNORE)
        target[length:] = data                                                   # answer at each marker
        out.append({"tokens": tokens, "next": target})
    return out


def induction_samples(n: int, opts: InductionOptions, g: torch.Generator) -> list[dict]:
    length = opts.length
    out = []
    for _ in range(n):
        tokens = torch.randint(1, opts.vocab, (length,), generator=g)           # [L] data tokens
        p = int(torch.randint(0, length - 2, (1,), generator=g))                # trigger, then its key
        tokens[p], tokens[-1] = TRIGGER, TRIGGER
        target = torch.full_like(tokens, IGNORE)
        target[-1] = tokens[p + 1]
        out.append({"tokens": tokens, "next": target})
    return out


def selective_copy(**options) -> DataSplits:
    opts = build_config(SelectiveCopyOptions, options, "data", what="dataset 'selective_copy'")
    g = torch.Generator().manual_seed(opts.seed)
    train, test = copy_samples(opts.n_train, opts, g), copy_samples(opts.n_test, opts, g)
    return make_token_splits("selective_copy", "lm", train, test, opts, vocab=opts.vocab)


def induction_heads(**options) -> DataSplits:
    opts = build_config(InductionOptions, options, "data", what="dataset 'induction_heads'")
    g = torch.Generator().manual_seed(opts.seed)
    train, test = induction_samples(opts.n_train, opts, g), induction_samples(opts.n_test, opts, g)
    return make_token_splits("induction_heads", "lm", train, test, opts, vocab=opts.vocab)
