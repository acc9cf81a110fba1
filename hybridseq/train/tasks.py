"""A run's config against its data: the task, and the widths the data determine.

The task comes from the dataset (`DataInfo.task`) unless the config sets ``task:`` (any registered task,
see `hybridseq.tasks`). `resolve` fills what the data determines and the config leaves out
(``model.input.channels`` and the head's ``classes`` / ``outputs`` / ``channels``) and rejects values that
disagree with the data.
"""
from __future__ import annotations

import dataclasses

import torch
from omegaconf import DictConfig, OmegaConf

from .. import registry
from ..errors import ConfigError
from ..metrics import IGNORE
from ..seq import TokenBatch
from ..spec import INPUT_WIDTH
from ..tasks import Task, get_task


def _heads_for(task: Task) -> list[str]:
    """Registered blocks that can serve as the head of ``task``."""
    names = []
    for name in registry.blocks.names():
        cls = registry.blocks.get(name)
        fields = {f.name for f in dataclasses.fields(cls.Config)}
        if cls.produces == task.port and task.width_key in fields and cls.accepts not in ("irregular", "tokens"):
            names.append(name)
    return names


def resolve(cfg: DictConfig, info) -> tuple[DictConfig, Task]:
    """A copy of ``cfg`` with ``task`` set and data-determined widths filled in, and its `Task`."""
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    name = cfg.get("task") or info.task
    task = get_task(name, "task")
    cfg.task = name
    model = cfg.get("model")
    if model is None:
        raise ConfigError("model", "missing the model section")
    if not isinstance(model, DictConfig):
        raise ConfigError("model", f"expected a mapping (d_model, input, encoder, blocks, head), got {model!r}")
    if "input" not in model or model.input is None:
        model.input = {"kind": "irregular"}
    if not isinstance(model.input, DictConfig):
        raise ConfigError("model.input", f"expected a mapping such as {{kind: irregular}}, got {model.input!r}")
    kind = model.input.get("kind", "irregular")
    vocab = getattr(info, "vocab", None)
    if (kind == "tokens") != (vocab is not None):
        raise ConfigError("model.input.kind", f"dataset '{info.name}' yields "
                          + ("tokens: set kind: tokens" if vocab is not None else "values, not tokens"), got=kind)
    if kind == "tokens":
        _fill(model.input, "vocab", vocab, "model.input", f"dataset '{info.name}' has a vocabulary of {vocab}")
    else:
        _fill(model.input, "channels", info.channels, "model.input",
              f"dataset '{info.name}' has {info.channels} channels")

    head = model.get("head")
    if not isinstance(head, DictConfig) or "type" not in head:
        raise ConfigError("model.head", f"task '{name}' needs a task head", choices=_heads_for(task))
    if not isinstance(head.type, str):
        raise ConfigError("model.head.type", f"expected a block name, got {head.type!r}", choices=_heads_for(task))
    cls = registry.blocks.get(head.type, "model.head.type")
    if cls.produces != task.port:
        raise ConfigError("model.head.type", f"head '{head.type}' produces {cls.produces} output but task "
                          f"'{name}' needs {task.port} output", choices=_heads_for(task), got=head.type)
    expected = getattr(info, task.width_key, None)
    if expected is None:
        raise ConfigError("task", f"task '{name}' needs data with '{task.width_key}', but dataset "
                          f"'{info.name}' has none (its task is '{info.task}')")
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    if task.width_key in fields:
        _fill(head, task.width_key, expected, "model.head", f"dataset '{info.name}' has {expected} {task.width_key}")
    return cfg, task


def with_placeholder_widths(cfg: DictConfig) -> DictConfig:
    """A copy of ``cfg`` in which the widths `resolve` would take from the data, where left out, hold
    placeholders (1 input channel; 2 for the head's width key), so the model can be validated without
    loading the data."""
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    model = cfg.get("model")
    if not isinstance(model, DictConfig):
        return cfg
    if not isinstance(model.get("input"), DictConfig):
        model.input = {"kind": "irregular"}
    key = INPUT_WIDTH.get(model.input.get("kind", "irregular"), "channels")
    if model.input.get(key) is None:
        model.input[key] = 1 if key == "channels" else 2
    head = model.get("head")
    if isinstance(head, DictConfig) and head.get("type") in registry.blocks.names():
        fields = {f.name for f in dataclasses.fields(registry.blocks.get(head.type, "model.head.type").Config)}
        for key in {registry.tasks.get(name).width_key for name in registry.tasks.names()} & fields:
            if head.get(key) is None:
                head[key] = 2
    return cfg


def _fill(section: DictConfig, key: str, value: int, path: str, why: str) -> None:
    """Set ``section[key] = value`` when absent; a different value is a `ConfigError`."""
    have = section.get(key)
    if have is None:
        section[key] = value
    elif have != value:
        raise ConfigError(f"{path}.{key}", f"is {have!r} but {why}; set it to {value} or leave it out to "
                          "take it from the data", got=have)


def check_lengths(model, info) -> None:
    """No block that declares a ``length_limit`` (config key, longest sequence) gets longer data."""
    for node in model.spec.nodes:
        limit = getattr(model.nodes[node.name], "length_limit", None)
        if limit is not None and info.max_len > limit[1]:
            raise ConfigError(f"{node.path}.{limit[0]}", f"is {limit[1]} but dataset '{info.name}' has sequences of "
                              f"{info.max_len}; raise it to at least {info.max_len}", got=limit[1])


def check_output(model, task: Task, info) -> None:
    """The assembled model's output width matches the data (heads without a width field included)."""
    node = model.spec.node(model.spec.output)
    expected = getattr(info, task.width_key)
    if node.width_out != expected:
        raise ConfigError(f"{node.path}", f"head '{node.type}' outputs width {node.width_out} but task "
                          f"'{task.name}' on dataset '{info.name}' needs {expected} ({task.width_key})")


def check_causal(model, task: Task, splits, length: int = 8) -> None:
    """Where a task's targets are the next input tokens (``task.causal`` and the first training sample's
    ``next`` is its ``tokens`` shifted by one), a model whose output at a position depends on later
    tokens reads the answer and trains to a meaningless loss. Probed on the assembled model: the last of
    ``length`` random tokens is changed and no earlier output may move. The blocks with ``causal: false``
    or ``bidirectional: true`` are named. Tasks whose answers are not in the input (selective copying:
    markers stand at the answer positions) may use any model."""
    info = splits.info
    length = min(length, info.max_len)                   # within any learned-position table the data fit
    if not getattr(task, "causal", False) or info.vocab is None or not len(splits.train) or length < 2:
        return
    sample = splits.train[0]
    target, shifted = sample["next"][:-1], sample["tokens"][1:]
    if not bool(((target == shifted) | (target == IGNORE)).all()):
        return

    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, info.vocab, (1, length), generator=gen)
    other = ids.clone()
    other[0, -1] = (ids[0, -1] + 1) % info.vocab
    lengths = torch.tensor([length])
    was = model.training
    model.eval()
    with torch.no_grad():
        a = model(TokenBatch(tokens=ids, lengths=lengths)).x[:, :-1]           # [1, L-1, vocab]
        b = model(TokenBatch(tokens=other, lengths=lengths)).x[:, :-1]
    model.train(was)
    moved = float((a - b).abs().max())
    if moved > 1e-5 * (1.0 + float(a.abs().max())):
        culprits = [f"{n.path} ({n.type})" for n in model.spec.nodes
                    if getattr(n.cfg, "causal", True) is False or getattr(n.cfg, "bidirectional", False) is True]
        hint = (f"; set causal: true / bidirectional: false on {', '.join(culprits)}" if culprits else
                "; some block mixes in later positions")
        raise ConfigError("task", f"'{task.name}' predicts the next token, but the model's output at earlier "
                          f"positions changes with a later token (by {moved:.3g}), so it would read the answer"
                          + hint)


__all__ = ["Task", "check_causal", "check_lengths", "check_output", "resolve", "with_placeholder_widths"]
