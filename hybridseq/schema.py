"""Validating one section of config against a dataclass schema, with errors that name the key path."""
from __future__ import annotations

import dataclasses
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException, ValidationError

from .errors import ConfigError


def _join(path: str, key: str) -> str:
    if not key:
        return path
    return f"{path}{key}" if key.startswith("[") else f"{path}.{key}" if path else key


def _keys_at(base, key: str) -> list[str]:
    """Valid keys of the mapping that holds dotted ``key`` inside the structured config ``base``."""
    parent = key.rpartition(".")[0]
    node = OmegaConf.select(base, parent) if parent else base
    return [str(k) for k in node.keys()] if OmegaConf.is_dict(node) else []


def check_choices(obj: Any, path: str) -> None:
    """Run ``choice`` checks and ``validate(path)`` methods over a config instance, recursively."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        where = _join(path, f.name)
        options = f.metadata.get("choices")
        if options is not None and value not in options:
            raise ConfigError(where, f"invalid value {value!r}", choices=options, got=value)
        if dataclasses.is_dataclass(value):
            check_choices(value, where)
    if callable(getattr(obj, "validate", None)):
        obj.validate(path)


def build_config(schema: type, values: dict, path: str, *, what: str = "block") -> Any:
    """Merge ``values`` onto dataclass ``schema`` and return a validated instance of it."""
    for old, new in getattr(schema, "renamed", {}).items():      # keys a schema renamed: say the new name
        if old in values:
            raise ConfigError(_join(path, old), f"'{old}' was renamed to '{new}'; write {new}: {values[old]}",
                              got=old)
    base = OmegaConf.structured(schema)
    try:
        merged = OmegaConf.merge(base, values)
    except ConfigKeyError as err:
        key = str(err.full_key or err.key)
        bad = key.split(".")[-1]
        raise ConfigError(_join(path, key), f"unknown key '{bad}' for {what}",
                          choices=_keys_at(base, key), got=bad) from None
    except ValidationError as err:
        first = str(err.msg).splitlines()[0] if err.msg else str(err)
        raise ConfigError(_join(path, str(err.full_key or err.key)), first) from None
    except OmegaConfBaseException as err:
        raise ConfigError(_join(path, str(getattr(err, "full_key", "") or "")), str(err).splitlines()[0]) from None
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        raise ConfigError(_join(path, missing[0]), f"missing required value for {what}"
                          + (f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else ""))
    try:
        obj = OmegaConf.to_object(merged)
    except MissingMandatoryValue as err:  # pragma: no cover - caught above
        raise ConfigError(_join(path, str(err.full_key)), "missing required value") from None
    except (TypeError, ValueError) as err:
        raise ConfigError(path, str(err)) from None
    check_choices(obj, path)
    return obj
