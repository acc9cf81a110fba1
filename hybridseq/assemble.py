"""Spec → `HybridModel`: an ordinary ``nn.Module`` that runs its blocks as a small DAG."""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor, nn

from . import registry
from .schema import build_config
from .seq import IrregularBatch, Seq, TokenBatch
from .spec import INPUT_NODE, ModelSpec, validate_model


def merge_features(xs: list[Tensor], how: str) -> Tensor:
    """The features of several inputs to one node, [.., D_i] each: concatenated or summed (``merge:``)."""
    if len(xs) == 1:
        return xs[0]
    return torch.cat(xs, dim=-1) if how == "concat" else torch.stack(xs).sum(0)


def _merge(items: list, how: str):
    if len(items) == 1:
        return items[0]
    return replace(items[0], x=merge_features([s.x for s in items], how))


class HybridModel(nn.Module):
    """Blocks in ``nodes`` (an ``nn.ModuleDict`` keyed by node name) run in the spec's order.

    ``forward(batch)`` takes an `IrregularBatch`, a `Seq` or a tensor ``[B, L, C]`` and returns the
    output `Seq` (``x`` is ``[B, classes]`` after a pooled task head).
    """

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.nodes = nn.ModuleDict({n.name: n.cls.build(n.cfg) for n in spec.nodes})
        self._plan = [(n.name, tuple(n.inputs), n.merge) for n in spec.nodes]
        first = spec.nodes[0]
        self._wants_irregular = first.cls.accepts == "irregular"
        self._wants_tokens = first.cls.accepts == "tokens"

    def adapt(self, batch):
        """The first block's input from ``batch``: the one place where the input kinds convert.

        A tensor [B, L, C] becomes a `Seq`; a `Seq` becomes an `IrregularBatch` (every channel observed)
        for an encoder; an `IrregularBatch` becomes a `Seq` of its observed values for a model that starts
        with a sequence block (``model.input.kind: sequence``). A model on token input takes a
        `TokenBatch` or an integer tensor [B, L] of token ids (every position valid), and nothing else.
        """
        if self._wants_tokens:
            if isinstance(batch, Tensor) and not batch.is_floating_point():
                batch = TokenBatch(tokens=batch, lengths=torch.full(batch.shape[:1], batch.shape[1],
                                                                    device=batch.device))
            if not isinstance(batch, TokenBatch):
                raise TypeError(f"a model on token input takes a TokenBatch or token ids [B, L], got "
                                f"{type(batch).__name__}")
            return batch
        if isinstance(batch, Tensor):
            batch = Seq(x=batch)
        if not isinstance(batch, (Seq, IrregularBatch)):
            raise TypeError(f"the model takes an IrregularBatch, a Seq or a tensor [B, L, C], got "
                            f"{type(batch).__name__}")
        if self._wants_irregular and isinstance(batch, Seq):
            return IrregularBatch.from_seq(batch)
        if not self._wants_irregular and isinstance(batch, IrregularBatch):
            return batch.to_seq()
        return batch

    def forward(self, batch) -> Seq:
        for block in self.nodes.values():
            block.reset_stats()
        outs = {INPUT_NODE: self.adapt(batch)}
        for name, srcs, how in self._plan:
            outs[name] = self.nodes[name](_merge([outs[s] for s in srcs], how))
        return outs[self.spec.output]

    def aux_loss(self) -> Tensor | None:
        """The sum of the blocks' auxiliary losses of the last forward (`Block.aux_loss`), or None."""
        terms = [loss for loss in (block.aux_loss() for block in self.nodes.values()) if loss is not None]
        return torch.stack(terms).sum() if terms else None

    def stats(self) -> dict[str, dict]:
        """Per-node statistics of the last forward (``nfe`` for ODE blocks, …)."""
        return {name: block.stats() for name, block in self.nodes.items() if block.stats()}


def assemble(model_cfg) -> HybridModel:
    """Validate the ``model:`` section (a DictConfig, a dict, or a `ModelSpec`) and build the model."""
    spec = model_cfg if isinstance(model_cfg, ModelSpec) else validate_model(model_cfg)
    return HybridModel(spec)


def build_block(name: str, **options) -> nn.Module:
    """One validated block by registered name, for use in plain PyTorch code, tests and benchmarks."""
    cls = registry.blocks.get(name, "type")
    return cls.build(build_config(cls.Config, options, name, what=f"block '{name}'"))


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def describe_rows(model: HybridModel) -> list[dict]:
    rows = []
    for node in model.spec.nodes:
        block = model.nodes[node.name]
        rows.append({"name": node.name, "type": node.type, "impl": getattr(block, "impl", "torch"),
                     "params": _count(block), "in": node.width_in, "out": node.width_out,
                     "inputs": ",".join(node.inputs), **block.stats()})
    return rows


def describe(model: HybridModel) -> str:
    """A per-node table: name, type, impl, params, in→out width, inputs and stats such as NFE."""
    rows = describe_rows(model)
    extra = sorted({k for r in rows for k in r} - {"name", "type", "impl", "params", "in", "out", "inputs"})
    head = ["name", "type", "impl", "params", "in→out", "inputs", *extra]
    table = [[r["name"], r["type"], r["impl"], f"{r['params']:,}", f"{r['in']}→{r['out']}", r["inputs"],
              *[str(r.get(k, "")) for k in extra]] for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in table]
    lines.append(f"total params: {_count(model):,}")
    return "\n".join(lines)
