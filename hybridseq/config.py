"""Loading configs: YAML files that compose, OmegaConf interpolation, and dotlist overrides.

A file may include others with ``defaults: [a.yaml, b.yaml]`` or ``base: a.yaml`` (a string or a list),
paths relative to the including file; the includes merge first, in order, then the file itself on top.
Each file is read once per load however often it is included; includes nest at most
``MAX_INCLUDE_DEPTH`` deep. Overrides then apply in order: ``a.b=c`` sets (creating keys as needed),
``+a.b=c`` adds a key, ``++a.b=c`` sets or adds, ``~a.b`` removes one, and list items are addressed as
``model.blocks[0].type=mamba`` or ``model.blocks.0.type=mamba``.

Numbers follow YAML 1.2: ``16:00`` is the string it looks like (YAML 1.1 reads it as 960, base 60), and
``1e-3`` is a float. Every interpolation (``${train.seed}``, ``${oc.env:VAR}``) is checked once the config
is composed, so a broken one is a `ConfigError` naming its key. The value of an environment variable is
never shown in an error, and `as_written` keeps interpolations as written in what a run saves.
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf._yaml import get_yaml_loader
from omegaconf.errors import OmegaConfBaseException

from . import shipped
from .errors import ConfigError, add_secret, redact

INCLUDE_KEYS = ("defaults", "base")
MAX_INCLUDE_DEPTH = 32
_INDEX = re.compile(r"\[(\d+)\]")
_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")   # 1e-3, which YAML 1.1 reads as a string
_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")


class _Loader(get_yaml_loader()):
    """OmegaConf's safe loader without YAML 1.1's base-60 numbers (``16:00`` stays a string)."""

    def resolve(self, kind, value, implicit):
        tag = super().resolve(kind, value, implicit)
        if kind is yaml.ScalarNode and implicit[0] and ":" in value and tag in _NUMBER_TAGS:
            return "tag:yaml.org,2002:str"
        return tag


_UNSET = object()


def _env(name: str, default=_UNSET):
    """``oc.env`` (``${oc.env:NAME}`` or ``${oc.env:NAME,default}``) that remembers the values it hands
    out, so that errors can hide them."""
    value = os.environ.get(name)
    if value is None:
        if default is _UNSET:
            raise KeyError(f"environment variable '{name}' is not set")
        return None if default is None else str(default)
    add_secret(value)
    return value


with warnings.catch_warnings():     # OmegaConf 2.4 renames the call; 2.3 has only this one
    warnings.simplefilter("ignore")
    OmegaConf.register_new_resolver("oc.env", _env, replace=True, use_cache=False)


def _parse_file(path: Path) -> DictConfig:
    """One YAML file as a DictConfig; problems are `ConfigError`s naming the file (never its content)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(str(path), f"not a UTF-8 text file (byte {err.start} cannot be decoded); "
                          "save the config as UTF-8") from None
    except OSError as err:
        raise ConfigError(str(path), f"cannot read: {err.strerror or err}") from None
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "cannot parse"
        raise ConfigError(str(path), f"invalid YAML{where}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), "a config file must hold a YAML mapping (key: value lines) at the top level, "
                          f"not a {type(data).__name__}")
    try:
        return OmegaConf.create(data)
    except OmegaConfBaseException as err:
        raise ConfigError(str(path), str(err).splitlines()[0]) from None


def _read(path: Path, stack: tuple[Path, ...], cache: dict) -> DictConfig:
    path = path.resolve()
    if path in stack:
        chain = " -> ".join(p.name for p in (*stack, path))
        raise ConfigError(str(path), f"circular include: {chain}")
    if len(stack) >= MAX_INCLUDE_DEPTH:
        raise ConfigError(str(stack[-1]), f"includes nest deeper than {MAX_INCLUDE_DEPTH} files "
                          f"({stack[0].name} -> ... -> {path.name}); flatten the chain")
    if path in cache:
        return cache[path]
    if not path.is_file():
        raise ConfigError(str(stack[-1]) if stack else "", f"config file not found: {path}")
    cfg = _parse_file(path)
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
            merged = OmegaConf.merge(merged, _read(path.parent / inc, (*stack, path), cache))
    cache[path] = OmegaConf.merge(merged, cfg)
    return cache[path]


def _parse_value(text: str):
    if _FLOAT.match(text.strip()):
        number = float(text)
        return int(number) if number.is_integer() and not any(c in text for c in ".eE") else number
    try:
        return yaml.load(text, Loader=_Loader) if text != "" else ""
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
            if isinstance(part, str) and part.isdigit():      # model.blocks.0 addresses a list item too
                part = parts[i] = int(part)
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
            raise ConfigError("", f"override '{item}' must look like key=value, +key=value, ++key=value or ~key")
        key, text = item.split("=", 1)
        adding = key.startswith("+") and not key.startswith("++")      # ++key=value: set or add
        parts = _split_key(key.lstrip("+"))
        if not parts:
            raise ConfigError("", f"override '{item}' has an empty key")
        parent = _walk(cfg, parts[:-1], create=True, override=item)
        if not isinstance(parent, (DictConfig, ListConfig)):
            raise ConfigError(_fmt(parts[:-1]), f"holds the value {parent!r}, not a mapping, so override "
                              f"'{item}' cannot set a key under it")
        last = parts[-1]
        if adding and isinstance(parent, DictConfig) and last in parent:
            raise ConfigError(_fmt(parts), f"'+' adds a new key but it exists already; use '{key[1:]}={text}' "
                              f"(or '+{key}={text}' to set it whether or not it exists)")
        if isinstance(parent, ListConfig):
            _walk(parent, parts[-1:], create=False, override=item)
            last = int(last)
        try:
            parent[last] = _parse_value(text)
        except OmegaConfBaseException as err:
            raise ConfigError(_fmt(parts), f"{str(err).splitlines()[0]} in override '{item}'") from None
    return cfg


def check_interpolations(cfg: DictConfig) -> DictConfig:
    """Resolve every interpolation of ``cfg`` once; a broken one is a `ConfigError` naming its key."""
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as err:
        key = str(getattr(err, "full_key", "") or "")
        reason = str(err).splitlines()[0]
        raise ConfigError(key, f"interpolation cannot be resolved: {reason}") from None
    return cfg


def as_written(resolved, written) -> DictConfig:
    """``resolved`` with every value that ``written`` gives as an interpolation (``${model.d_model}``,
    ``${oc.env:TOKEN}``) put back as written, the way Hydra saves a job's config: what a run saves shows
    where values came from and never holds an environment variable's value. Loading it resolves them
    again."""
    def merge(new, old):
        if isinstance(old, str) and "${" in old:
            return old
        if isinstance(new, dict) and isinstance(old, dict):
            return {k: merge(v, old.get(k)) for k, v in new.items()}
        if isinstance(new, list) and isinstance(old, list) and len(new) == len(old):
            return [merge(v, o) for v, o in zip(new, old)]
        return new

    def plain(cfg):
        return OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, (DictConfig, ListConfig)) else cfg

    new, old = plain(resolved), plain(written)
    return OmegaConf.create(merge(new, old))


def printable(cfg: DictConfig, resolve: bool = True) -> str:
    """``cfg`` as YAML for people to read: interpolations resolved (``resolve``), except those that read
    an environment variable, which stay as written so that no secret is echoed."""
    written = OmegaConf.to_container(cfg, resolve=False)
    if not resolve:
        return OmegaConf.to_yaml(written)

    def keep_env(new, old):
        if isinstance(old, str) and "oc.env" in old:
            return old
        if isinstance(new, dict) and isinstance(old, dict):
            return {k: keep_env(v, old.get(k)) for k, v in new.items()}
        if isinstance(new, list) and isinstance(old, list):
            return [keep_env(v, o) for v, o in zip(new, old)]
        return new

    resolved = OmegaConf.to_container(check_interpolations(cfg), resolve=True)
    return redact(OmegaConf.to_yaml(keep_env(resolved, written)))


def _load(paths, cache: dict) -> DictConfig:
    if isinstance(paths, (dict, DictConfig)):
        try:
            return OmegaConf.create(paths)
        except OmegaConfBaseException as err:
            raise ConfigError("", str(err).splitlines()[0]) from None
    items = [] if paths is None else [paths] if isinstance(paths, (str, Path)) else list(paths)
    cfg = OmegaConf.create()
    for p in items:
        cfg = OmegaConf.merge(cfg, _read(shipped.locate(p), (), cache))
    return cfg


def load_config(paths=None, overrides: Iterable[str] | None = None) -> DictConfig:
    """Compose the YAML file(s) ``paths`` (a path or a list; later files win) and apply ``overrides``.

    ``paths`` may also be a dict or DictConfig, used as the base config.
    """
    return check_interpolations(apply_overrides(_load(paths, {}), list(overrides or ())))


def compose(paths, overrides: Iterable[str] = ()) -> DictConfig:
    """Load configs in order, then apply ``overrides``. A later item's ``model`` section replaces the
    earlier one whole (so ``EXPERIMENT.yaml MODEL.yaml`` swaps the model); other sections merge."""
    items = [paths] if isinstance(paths, (str, dict, DictConfig)) or hasattr(paths, "__fspath__") else list(paths)
    cfg, cache = OmegaConf.create(), {}
    for item in items:
        part = _load(item, cache)
        if "model" in part and "model" in cfg:
            del cfg["model"]
        cfg = OmegaConf.merge(cfg, part)
    return check_interpolations(apply_overrides(cfg, list(overrides or ())))


def split_args(args: Iterable[str]) -> tuple[list[str], list[str]]:
    """Command-line words after the config: (more YAML files, dotlist overrides)."""
    files, overrides = [], []
    for a in args:
        (files if a.endswith((".yaml", ".yml")) and "=" not in a else overrides).append(a)
    return files, overrides
