"""The validated model spec: block entries expanded (repeat, pattern), schemas checked, DAG, ports, widths.

`validate_model` turns the ``model:`` section into a `ModelSpec` or raises a `ConfigError` naming the
key path. Nothing here builds a module; the assembler does that from the spec.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from . import registry
from .errors import ConfigError
from .schema import build_config

MODEL_KEYS = ("d_model", "input", "encoder", "blocks", "head")
INPUT_KINDS = ("irregular", "sequence", "tokens")
INPUT_WIDTH = {"irregular": "channels", "sequence": "channels", "tokens": "vocab"}   # the key giving its width
STRUCTURAL = ("type", "name", "repeat", "inputs", "merge")
MERGES = ("add", "concat")
INPUT_NODE = "input"
MAX_NODES = 1024               # blocks in one model after repeat / pattern expansion


@dataclass
class NodeSpec:
    name: str                  # unique node name (module name in the model)
    type: str                  # registered block name
    cls: type
    cfg: Any                   # validated Config instance
    path: str                  # key path of its config, e.g. model.blocks[2]
    role: str                  # "encoder" | "block" | "head"
    inputs: list[str] = field(default_factory=list)
    merge: str = "add"
    width_in: int = 0
    width_out: int = 0


@dataclass
class ModelSpec:
    d_model: int
    input_kind: str
    channels: int              # input width: channels, or the vocabulary size of token input
    nodes: list[NodeSpec]      # in execution (topological) order
    output: str

    def node(self, name: str) -> NodeSpec:
        return next(n for n in self.nodes if n.name == name)


@dataclass
class _Entry:                  # one block entry after repeat / pattern expansion, before validation
    name: str
    group: str                 # name that `inputs:` of other blocks refer to (last of a group wins)
    type: str
    params: dict
    path: str
    role: str
    inputs: list | None
    merge: str
    entry_path: str = ""       # path of the entry that declared ``inputs`` (the pattern, for pattern parts)


def _container(model, path: str) -> dict:
    if isinstance(model, (DictConfig, ListConfig)):
        try:
            model = OmegaConf.to_container(model, resolve=True)
        except OmegaConfBaseException as err:
            key = getattr(err, "full_key", "") or ""
            raise ConfigError(f"{path}.{key}" if key else path, str(err).splitlines()[0]) from None
    if not isinstance(model, dict):
        raise ConfigError(path, f"expected a mapping, got {type(model).__name__}")
    return model


def _int(value, path: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(path, f"expected an integer >= {minimum}, got {value!r}")
    return value


def _entries(raw: dict, path: str, role: str, default_name: str) -> list[_Entry]:
    if not isinstance(raw, dict):
        raise ConfigError(path, f"expected a block mapping with a 'type' key, got {raw!r}")
    if "type" not in raw:
        raise ConfigError(f"{path}.type", "missing required value: every block names a registered type",
                          choices=registry.blocks.names())
    kind = raw["type"]
    if not isinstance(kind, str):
        raise ConfigError(f"{path}.type", f"expected a block name, got {kind!r}")
    name = raw.get("name", default_name)
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"{path}.name", f"expected an identifier (letters, digits, _), got {name!r}")
    repeat = _int(raw.get("repeat", 1), f"{path}.repeat")
    inputs = raw.get("inputs")
    if inputs is not None and (not isinstance(inputs, list) or not inputs):
        raise ConfigError(f"{path}.inputs", f"expected a non-empty list of block names, got {inputs!r}")
    merge = raw.get("merge", "add")
    if merge not in MERGES:
        raise ConfigError(f"{path}.merge", f"invalid value {merge!r}", choices=MERGES, got=merge)
    if kind == "pattern":
        parts = _pattern(raw, path, name)
    else:
        params = {k: v for k, v in raw.items() if k not in STRUCTURAL}
        parts = [_Entry(name, name, kind, params, path, role, None, "add")]
    if repeat * len(parts) > MAX_NODES:
        raise ConfigError(f"{path}.repeat", f"expands to {repeat * len(parts)} blocks; a model may have at most "
                          f"{MAX_NODES}", got=repeat)
    copies = []
    for r in range(repeat):
        for k, e in enumerate(parts):
            suffix = [str(r)] if repeat > 1 else []
            suffix += [str(k)] if len(parts) > 1 else []
            copies.append(_Entry("_".join([name, *suffix]), name, e.type, e.params, e.path, role, None, "add"))
    copies[0].inputs, copies[0].merge, copies[0].entry_path = inputs, merge, path
    return copies


def _pattern(raw: dict, path: str, name: str) -> list[_Entry]:
    allowed = ("pattern", "legend", *STRUCTURAL)
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"{path}.{key}", f"unknown key '{key}' for a pattern", choices=allowed, got=key)
    pattern, legend = raw.get("pattern"), raw.get("legend")
    if not isinstance(pattern, str) or not pattern:
        raise ConfigError(f"{path}.pattern", f"expected a non-empty string such as 'MM*M', got {pattern!r}")
    if not isinstance(legend, dict) or not legend:
        raise ConfigError(f"{path}.legend", "expected a mapping from pattern letters to blocks, e.g. "
                          "{M: mamba, '*': transformer}")
    if len(pattern) > MAX_NODES:
        raise ConfigError(f"{path}.pattern", f"has {len(pattern)} letters; a model may have at most {MAX_NODES} blocks")
    out = []
    for k, ch in enumerate(pattern):
        if ch not in legend:
            raise ConfigError(f"{path}.pattern", f"letter {ch!r} at position {k} has no legend entry",
                              choices=[str(c) for c in legend], got=ch)
        spec, where = legend[ch], f"{path}.legend.{ch}"
        if isinstance(spec, str):
            spec = {"type": spec}
        if not isinstance(spec, dict) or "type" not in spec or spec["type"] == "pattern":
            raise ConfigError(where, "expected a block name or a block mapping with 'type'")
        extra = [key for key in spec if key in STRUCTURAL and key != "type"]
        if extra:
            raise ConfigError(f"{where}.{extra[0]}", "structural keys belong on the pattern entry itself")
        out.append(_Entry(name, name, spec["type"], {k: v for k, v in spec.items() if k != "type"}, where,
                          "block", None, "add"))
    return out


def _resolve_inputs(entries: list[_Entry]) -> dict[str, list[str]]:
    """Each entry's input node names: its ``inputs:`` (group names resolve to a group's last node) or,
    by default, the entry before it."""
    last_of_group = {INPUT_NODE: INPUT_NODE}
    for e in entries:
        last_of_group[e.group] = e.name
        last_of_group[e.name] = e.name
    resolved, previous = {}, INPUT_NODE
    for e in entries:
        if e.inputs is None:
            resolved[e.name] = [previous]
        else:
            refs = []
            for j, ref in enumerate(e.inputs):
                if ref not in last_of_group or ref == e.group:
                    raise ConfigError(f"{e.entry_path}.inputs[{j}]", f"unknown input '{ref}'",
                                      choices=[n for n in last_of_group if n != e.group], got=ref)
                refs.append(last_of_group[ref])
            resolved[e.name] = refs
        previous = e.name
    return resolved


def _topological(entries: list[_Entry], inputs: dict[str, list[str]]) -> list[_Entry]:
    by_name = {e.name: e for e in entries}
    order, state = [], {}              # state: 1 = visiting, 2 = done

    def visit(name: str, trail: list[str]) -> None:
        if name == INPUT_NODE or state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = trail[trail.index(name):] + [name]
            raise ConfigError(f"{by_name[name].entry_path or by_name[name].path}.inputs",
                              "the block graph has a cycle: " + " -> ".join(cycle))
        state[name] = 1
        for src in inputs[name]:
            visit(src, trail + [name])
        state[name] = 2
        order.append(by_name[name])

    for e in entries:
        visit(e.name, [])
    return order


def _node(e: _Entry, srcs: list[str], merge: str, ports: dict, widths: dict, d_model: int, depth: int) -> NodeSpec:
    cls = registry.blocks.get(e.type, f"{e.path}.type")
    for src in srcs:
        port = ports[src]
        fine = port == cls.accepts or (src == INPUT_NODE and port == "sequence" and cls.accepts == "irregular")
        if not fine:
            raise ConfigError(f"{e.path}.type", f"port mismatch: block '{e.type}' accepts {cls.accepts} input, "
                              f"but '{src}' produces {port}")
    ins = [widths[s] for s in srcs]
    if merge == "add" and len(set(ins)) > 1:
        raise ConfigError(f"{e.entry_path or e.path}.inputs", "width mismatch: merge 'add' needs equal widths, got "
                          + ", ".join(f"{s}={w}" for s, w in zip(srcs, ins)) + "; use merge: concat")
    width = sum(ins) if merge == "concat" else ins[0]
    if cls.accepts == "irregular":
        inject = {"d_in": width, "d_model": d_model}
    elif cls.accepts == "tokens":
        inject = {"vocab": width, "d_model": d_model}
    else:
        inject = {"d_model": width}
    params = dict(e.params)
    fields = {f for f in cls.Config.__dataclass_fields__}
    for key, value in inject.items():
        if key not in fields:
            continue
        if key in params and params[key] != value:
            raise ConfigError(f"{e.path}.{key}", f"width mismatch: {key} is {params[key]!r} but the incoming "
                              f"stream from '{', '.join(srcs)}' gives {value}; leave it out to infer it")
        params[key] = value
    if e.role == "block" and "n_layer" in fields:       # the depth of the residual stack, unless given
        params.setdefault("n_layer", depth)
    cfg = build_config(cls.Config, params, e.path, what=f"block '{e.type}'")
    return NodeSpec(e.name, e.type, cls, cfg, e.path, e.role, list(srcs), merge, width, cls.out_width(cfg))


def validate_model(model, path: str = "model") -> ModelSpec:
    """Validate the ``model:`` section (DictConfig or dict) into a `ModelSpec`."""
    m = _container(model, path)
    for key in m:
        if key not in MODEL_KEYS:
            raise ConfigError(f"{path}.{key}", f"unknown key '{key}'", choices=MODEL_KEYS, got=key)
    if "d_model" not in m:
        raise ConfigError(f"{path}.d_model", "missing required value (the stream width, e.g. 64)")
    d_model = _int(m["d_model"], f"{path}.d_model")
    inp = m.get("input")
    if not isinstance(inp, dict):
        raise ConfigError(f"{path}.input", "expected a mapping such as {kind: irregular, channels: 6}")
    kind = inp.get("kind", "irregular")
    if kind not in INPUT_KINDS:
        raise ConfigError(f"{path}.input.kind", f"invalid value {kind!r}", choices=INPUT_KINDS, got=kind)
    width_key = INPUT_WIDTH[kind]
    for key in inp:
        if key not in ("kind", width_key):
            raise ConfigError(f"{path}.input.{key}", f"unknown key '{key}' for input kind '{kind}'",
                              choices=("kind", width_key), got=key)
    channels = _int(inp.get(width_key), f"{path}.input.{width_key}")
    blocks = m.get("blocks", [])
    if not isinstance(blocks, list):
        raise ConfigError(f"{path}.blocks", f"expected a list of blocks, got {type(blocks).__name__}")

    entries: list[_Entry] = []
    if m.get("encoder") is not None:
        entries += _entries(m["encoder"], f"{path}.encoder", "encoder", "encoder")
    for i, raw in enumerate(blocks):
        entries += _entries(raw, f"{path}.blocks[{i}]", "block", f"b{i}")
    if m.get("head") is not None:
        entries += _entries(m["head"], f"{path}.head", "head", "head")
    if not entries:
        raise ConfigError(f"{path}.blocks", "the model has no blocks")
    if len(entries) > MAX_NODES:
        raise ConfigError(f"{path}.blocks", f"the model expands to {len(entries)} blocks (repeat x pattern); "
                          f"at most {MAX_NODES} are allowed")
    seen: dict[str, str] = {}
    for e in entries:
        if e.name in seen or e.name == INPUT_NODE:
            raise ConfigError(f"{e.path}.name",
                              f"duplicate block name '{e.name}' (also at {seen.get(e.name, 'input')})")
        seen[e.name] = e.path

    inputs = _resolve_inputs(entries)
    ports = {INPUT_NODE: "sequence" if kind == "sequence" else kind}
    widths = {INPUT_NODE: channels}
    nodes, depth = [], sum(e.role == "block" for e in entries)
    for e in _topological(entries, inputs):
        node = _node(e, inputs[e.name], e.merge, ports, widths, d_model, depth)
        ports[node.name], widths[node.name] = node.cls.produces, node.width_out
        nodes.append(node)
    return ModelSpec(d_model, kind, channels, nodes, entries[-1].name)
