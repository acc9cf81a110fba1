"""Loading configs: YAML files that compose, OmegaConf interpolation, and dotlist overrides.

A file may include others with ``defaults: [a.yaml, b.yaml]`` or ``base: a.yaml`` (a string or a list),
paths relative to the including file; the includes merge first, in order, then the file itself on top.
Overrides then apply in order: ``a.b=c`` sets (creating keys as needed), ``+a.b=c`` adds a key,
``~a.b`` removes one, and list items are addressed as ``model.blocks[0].type=mamba``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Sequence

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from .errors import ConfigError

INCLUDE_KEYS = ("defaults", "base")
_INDEX = re.compile(r"\[(\d+)\]")
_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")   # 1e-3, which YAML 1.1 reads as a string


def _read(path: Path, stack: tuple[Path, ...]) -> DictConfig:
    path = path.resolve()
    if path in stack:
        chain = " -> ".join(p.name for p in (*stack, path))
        raise ConfigError(str(path), f"circular include: {chain}")
    if not path.is_file():
        raise ConfigError(str(stack[-1]) if stack else "", f"config file not found: {path}")
    try:
        cfg = OmegaConf.load(path)
    except yaml.YAMLError as err:
        raise ConfigError(str(path), f"invalid YAML: {err}") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(str(path), "a config file must hold a mapping at the top level")
    merged = OmegaConf.create()
    for key in INCLUDE_KEYS:
        includes = cfg.pop(key, None)
        if includes is None:
            continue
        if isinstance(includes, str):
            includes = [includes]
        if not isinstance(includes, (list, ListConfig)) or not all(isinstance(i, str) for i in includes):
            raise ConfigError(f"{path}:{key}", "expected a file name or a list of file names")
        for inc in includes:
            merged = OmegaConf.merge(merged, _read(path.parent / inc, (*stack, path)))
    return OmegaConf.merge(merged, cfg)


def _parse_value(text: str):
    if _FLOAT.match(text.strip()):
        number = float(text)
        return int(number) if number.is_integer() and not any(c in text for c in ".eE") else number
    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def _split_key(key: str) -> list:
    """``model.blocks[0].type`` -> ["model", "blocks", 0, "type"]."""
    parts: list = []
    for piece in key.split("."):
        name, *rest = _INDEX.split(piece)
        if name:
            parts.append(name)
        parts.extend(int(i) for i in rest if i)
    return parts


def _fmt(parts: Sequence) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def _walk(cfg, parts: list, create: bool, override: str):
    node = cfg
    for i, part in enumerate(parts):
        if isinstance(node, ListConfig):
            if not isinstance(part, int) or part >= len(node):
                raise ConfigError(_fmt(parts[: i + 1]), f"no list item {part!r} (list has {len(node)} items) "
                                  f"in override '{override}'")
        elif isinstance(node, DictConfig):
            if part not in node:
                if not create:
                    raise ConfigError(_fmt(parts[: i + 1]), f"key not found in override '{override}'",
                                      choices=[str(k) for k in node.keys()], got=part)
                node[part] = {}
        else:
            raise ConfigError(_fmt(parts[:i]), f"cannot index a value with '{part}' in override '{override}'")
        node = node[part]
    return node


def apply_overrides(cfg: DictConfig, overrides: Iterable[str]) -> DictConfig:
    """Apply dotlist ``overrides`` to ``cfg`` in place and return it."""
    for item in overrides or ():
        if item.startswith("~"):
            parts = _split_key(item[1:].split("=", 1)[0])
            _walk(cfg, parts, create=False, override=item)
            del _walk(cfg, parts[:-1], create=False, override=item)[parts[-1]]
            continue
        if "=" not in item:
            raise ConfigError("", f"override '{item}' must look like key=value, +key=value or ~key")
        key, text = item.split("=", 1)
        adding = key.startswith("+")
        parts = _split_key(key.lstrip("+"))
        if not parts:
            raise ConfigError("", f"override '{item}' has an empty key")
        parent = _walk(cfg, parts[:-1], create=True, override=item)
        if not isinstance(parent, (DictConfig, ListConfig)):
            raise ConfigError(_fmt(parts[:-1]), f"holds the value {parent!r}, not a mapping, so override "
                              f"'{item}' cannot set a key under it")
        last = parts[-1]
        if adding and isinstance(parent, DictConfig) and last in parent:
            raise ConfigError(_fmt(parts), f"'+' adds a new key but it exists already; use '{key[1:]}={text}'")
        if isinstance(parent, ListConfig):
            _walk(parent, [last], create=False, override=item)
        parent[last] = _parse_value(text)
    return cfg


def load_config(paths=None, overrides: Iterable[str] | None = None) -> DictConfig:
    """Compose the YAML file(s) ``paths`` (a path or a list; later files win) and apply ``overrides``.

    ``paths`` may also be a dict or DictConfig, used as the base config.
    """
    if isinstance(paths, (dict, DictConfig)):
        cfg = OmegaConf.create(paths)
    else:
        items = [] if paths is None else [paths] if isinstance(paths, (str, Path)) else list(paths)
        cfg = OmegaConf.create()
        for p in items:
            cfg = OmegaConf.merge(cfg, _read(Path(p), ()))
    return apply_overrides(cfg, list(overrides or ()))


def compose(paths, overrides: Iterable[str] = ()) -> DictConfig:
    """Load configs in order, then apply ``overrides``. A later item's ``model`` section replaces the
    earlier one whole (so ``EXPERIMENT.yaml MODEL.yaml`` swaps the model); other sections merge."""
    items = [paths] if isinstance(paths, (str, dict, DictConfig)) or hasattr(paths, "__fspath__") else list(paths)
    cfg = OmegaConf.create()
    for item in items:
        part = load_config(item)
        if "model" in part and "model" in cfg:
            del cfg["model"]
        cfg = OmegaConf.merge(cfg, part)
    return apply_overrides(cfg, list(overrides or ()))


def split_args(args: Iterable[str]) -> tuple[list[str], list[str]]:
    """Command-line words after the config: (more YAML files, dotlist overrides)."""
    files, overrides = [], []
    for a in args:
        (files if a.endswith((".yaml", ".yml")) and "=" not in a else overrides).append(a)
    return files, overrides
