"""Autoregressive generation from a causal model on token input, one position at a time.

`Decoder` runs a `HybridModel` position by position with a state per node: each block steps through its
own ``allocate_state(batch_size, device, dtype)`` / ``step(x_t, state, gap) -> (y_t, state)``: the SSM
backbones and ``gru`` through their recurrence (a state of fixed size: constant memory per token), a
``causal: true`` ``transformer``, ``ode_transformer`` (one per Runge–Kutta stage) and ``pde_attention``
through a cache of past keys and values, position-wise blocks (the ``lm`` head, ``mlp``) through
`PositionWise`, and the token ``embedding`` through `EmbeddingStep` below. A block that has no such mode
(it sees the whole sequence, or is not causal) is a `ConfigError` naming its key path, before anything
runs. Stepping gives the same logits as the full pass (tests/test_generate.py).

`generate` feeds the prompt, then samples: greedy at temperature 0, else from softmax(logits / T),
optionally restricted to the ``top_k`` most likely tokens.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from . import registry
from .assemble import HybridModel, merge_features
from .blocks.encoders.embedding import Embedding
from .errors import ConfigError
from .spec import INPUT_NODE, NodeSpec


class EmbeddingStep:
    """The token embedding at one position: token ids [B] -> [B, D]; the state is the position index.
    Adds the learned position vector, or the time encoding of ``index / max_len``, as its full pass does."""

    def __init__(self, block: Embedding):
        self.block = block

    def allocate_state(self, batch_size: int, device=None, dtype=None) -> dict:
        return {"index": 0}

    def step(self, ids: Tensor, state: dict, gap: Tensor | None = None) -> tuple[Tensor, dict]:
        block, i = self.block, state["index"]
        x = block.token(ids)                                                    # [B, D]
        if block.cfg.positions == "learned":
            x = x + block.position.weight[i]
        elif block.cfg.positions == "time":
            t = torch.full(ids.shape, i / block.cfg.max_len, dtype=x.dtype, device=ids.device)   # [B]
            x = x + block.time_proj(block.time(t))
        return x, {"index": i + 1}


def steppable_blocks() -> list[str]:
    """Registered blocks that can run step by step (some only with a setting, e.g. ``causal: true``)."""
    return [n for n in registry.blocks.names()
            if registry.blocks.get(n) is Embedding or callable(getattr(registry.blocks.get(n), "step", None))]


def _stepper(block, node: NodeSpec):
    if isinstance(block, Embedding):
        return EmbeddingStep(block)
    if callable(getattr(block, "step", None)) and callable(getattr(block, "allocate_state", None)):
        return block
    raise ConfigError(f"{node.path}.type", f"block '{node.type}' has no step-by-step mode, so this model cannot "
                      f"generate token by token; blocks that step: {', '.join(steppable_blocks())}")


class Decoder:
    """``model`` (on token input, ending in per-position logits) evaluated one position at a time.

    ``init_state(batch_size)`` gives the state before the first token; ``step(tokens [B], state)`` gives the
    logits [B, vocab] that the full pass computes at that position, and the state after it.
    """

    def __init__(self, model: HybridModel):
        spec = model.spec
        if spec.input_kind != "tokens":
            raise ConfigError("model.input.kind", f"generation needs a model on token input, got '{spec.input_kind}'",
                              choices=("tokens",), got=spec.input_kind)
        head = spec.node(spec.output)
        if head.cls.produces != "sequence":
            raise ConfigError(f"{head.path}.type", f"generation needs logits at every position (an lm head), but "
                              f"'{head.type}' produces {head.cls.produces} output", choices=("lm",), got=head.type)
        self.model, self.vocab = model, head.width_out
        self.nodes = [(n, _stepper(model.nodes[n.name], n)) for n in spec.nodes]
        self.init_state(1)                                       # a block without a causal mode fails here
        limits = [(n, getattr(model.nodes[n.name], "length_limit", None)) for n in spec.nodes]
        self.limits = [(f"{n.path}.{lim[0]}", lim[1]) for n, lim in limits if lim is not None]

    def init_state(self, batch_size: int) -> dict:
        p = next(self.model.parameters())
        state = {}
        for node, stepper in self.nodes:
            try:
                state[node.name] = stepper.allocate_state(batch_size, p.device, p.dtype)
            except RuntimeError as err:                          # e.g. bidirectional, or causal: false
                raise ConfigError(node.path, f"block '{node.type}' cannot generate token by token: {err}") from None
        return state

    def step(self, tokens: Tensor, state: dict) -> tuple[Tensor, dict]:
        outs, new = {INPUT_NODE: tokens}, {}
        for node, stepper in self.nodes:
            x = merge_features([outs[s] for s in node.inputs], node.merge)
            outs[node.name], new[node.name] = stepper.step(x, state[node.name])
        return outs[self.model.spec.output], new                 # [B, vocab]


def sample(logits: Tensor, temperature: float, top_k: int | None, generator: torch.Generator | None) -> Tensor:
    """Next tokens [B] from logits [B, V]: argmax at temperature 0, else a draw from softmax(logits / T)
    over the ``top_k`` largest logits (all when None)."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]                        # [B, 1]
        logits = logits.masked_fill(logits < kth, -math.inf)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)


def check_options(max_new_tokens: int, temperature: float, top_k: int | None, vocab: int) -> None:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ConfigError("--max-new-tokens", f"must be an integer >= 1, got {max_new_tokens!r}")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ConfigError("--temperature", f"must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and not 1 <= top_k <= vocab:
        raise ConfigError("--top-k", f"must be in [1, {vocab}] (the vocabulary), got {top_k!r}")


@torch.no_grad()
def generate(model: HybridModel, prompt: Tensor, max_new_tokens: int, *, temperature: float = 1.0,
             top_k: int | None = None, generator: torch.Generator | None = None,
             decoder: Decoder | None = None) -> Tensor:
    """``max_new_tokens`` tokens [B, N] sampled after ``prompt`` (token ids [B, P], P >= 1), in eval mode."""
    decoder = decoder or Decoder(model)
    check_options(max_new_tokens, temperature, top_k, decoder.vocab)
    if prompt.dim() != 2 or prompt.shape[1] < 1 or prompt.is_floating_point():
        raise ConfigError("--prompt", f"expected at least one token id per row [B, P], got shape {list(prompt.shape)}")
    if int(prompt.min()) < 0 or int(prompt.max()) >= decoder.vocab:
        raise ConfigError("--prompt-ids", f"token ids must be in [0, {decoder.vocab}) (the model's vocabulary), "
                          f"got {int(prompt.min())}..{int(prompt.max())}")
    reads = prompt.shape[1] + max_new_tokens - 1                 # the last sampled token is never read
    for key, limit in decoder.limits:
        if reads > limit:
            raise ConfigError("--max-new-tokens", f"a prompt of {prompt.shape[1]} and {max_new_tokens} new tokens "
                              f"make the model read {reads} positions, more than {key}={limit}")
    was_training = decoder.model.training
    decoder.model.eval()
    try:
        state = decoder.init_state(prompt.shape[0])
        for i in range(prompt.shape[1]):
            logits, state = decoder.step(prompt[:, i], state)
        out = []
        for i in range(max_new_tokens):
            out.append(sample(logits, temperature, top_k, generator))          # [B]
            if i + 1 < max_new_tokens:
                logits, state = decoder.step(out[-1], state)
    finally:
        decoder.model.train(was_training)
    return torch.stack(out, 1)                                                 # [B, N]
