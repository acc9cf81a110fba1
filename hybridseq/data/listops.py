"""``listops``: nested list operations in the grammar of the Long Range Arena generator (Tay et al. 2021,
after Nangia & Bowman 2018), generated from a seed.

An expression is a digit 0–9 or ``[OP a b … ]`` with OP one of MAX, MIN, MED (median, rounded down) and
SM (sum modulo 10) over 2…``max_args`` sub-expressions. Trees grow as LRA's do: below ``max_depth`` a node
is an operation with probability ``VALUE_P`` (else a digit), at ``max_depth`` always a digit; trees whose
token count falls outside [``min_length``, ``max_length``] are drawn again. The label is the value (10
classes). Tokens: the ten digits, the four opening ``[OP`` and the closing ``]`` (LRA's strings also carry
parentheses, which hold no information and are left out).
"""
from __future__ import annotations

import random
import statistics
from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ..schema import build_config, ranged
from .core import DataSplits
from .tokens import GeneratedTokenOptions, make_token_splits

OPERATORS = {"MAX": max, "MIN": min, "MED": lambda xs: int(statistics.median(xs)), "SM": lambda xs: sum(xs) % 10}
VOCAB = [str(d) for d in range(10)] + [f"[{op}" for op in OPERATORS] + ["]"]
CLOSE = VOCAB.index("]")
VALUE_P = 0.25                 # LRA: a node below max_depth is an operation when a uniform draw is <= this
MAX_LENGTH = 2048              # the longest sequences LRA uses (2,000 tokens) fit
MAX_NESTING = 100              # bound on max_depth and max_args (recursion depth, loop sizes)
ATTEMPTS = 1000                # draws per accepted sample before giving up on the length window


@dataclass
class ListOpsOptions(GeneratedTokenOptions):
    min_length: int = 500        # LRA: 500
    max_length: int = 2000       # LRA: 2000; at most 2048
    max_depth: int = ranged(10, ge=1, le=MAX_NESTING)   # LRA: 10
    max_args: int = ranged(10, ge=2, le=MAX_NESTING)    # LRA: 10

    def validate(self, path: str) -> None:
        super().validate(path)
        if not 1 <= self.max_length <= MAX_LENGTH:
            raise ConfigError(f"{path}.max_length", f"must be in [1, {MAX_LENGTH}], got {self.max_length}")
        if not 1 <= self.min_length <= self.max_length:
            raise ConfigError(f"{path}.min_length", f"must be in [1, max_length={self.max_length}], "
                              f"got {self.min_length}")


def tree(rng: random.Random, depth: int, opts: ListOpsOptions) -> tuple[list[int], int]:
    """(token ids, value) of one random expression whose root sits at ``depth`` (the root is depth 1)."""
    if depth >= opts.max_depth or rng.random() > VALUE_P:
        digit = rng.randrange(10)
        return [digit], digit
    name = rng.choice(list(OPERATORS))
    ids, values = [VOCAB.index(f"[{name}")], []
    for _ in range(rng.randint(2, opts.max_args)):
        sub, value = tree(rng, depth + 1, opts)
        ids += sub
        values.append(value)
    return ids + [CLOSE], OPERATORS[name](values)


def samples(n: int, opts: ListOpsOptions, rng: random.Random) -> list[dict]:
    out = []
    while len(out) < n:
        for _ in range(ATTEMPTS):
            ids, value = tree(rng, 1, opts)
            if opts.min_length <= len(ids) <= opts.max_length:
                break
        else:
            raise ConfigError("data.min_length", f"no expression of {opts.min_length}..{opts.max_length} tokens in "
                              f"{ATTEMPTS} draws with max_depth={opts.max_depth}, max_args={opts.max_args}")
        out.append({"tokens": torch.tensor(ids, dtype=torch.long), "label": value})
    return out


def listops(**options) -> DataSplits:
    opts = build_config(ListOpsOptions, options, "data", what="dataset 'listops'")
    rng = random.Random(opts.seed)
    train, test = samples(opts.n_train, opts, rng), samples(opts.n_test, opts, rng)
    return make_token_splits("listops", "classify", train, test, opts, vocab=len(VOCAB),
                             classes=[str(d) for d in range(10)])
