"""Validating one section of config against a dataclass schema, with errors that name the key path.

Besides types and ``choice`` fields, every number is checked for what a run can use, so a setting that
would train to NaN (or climb the loss) is a `ConfigError` before anything is built:

- every float is finite and, unless zero, representable in float32 (the model's dtype): no ``.nan``,
  ``.inf``, ``1e400`` or ``1e-320`` (a field whose default is ``inf``, meaning "no limit", takes ``inf``);
- every int fits in int64 (seeds and sizes reach torch as int64);
- a bool field takes a bool (or OmegaConf's words for one, ``true``/``off`` ...), not a number: OmegaConf
  would read ``3`` as true;
- a field's range comes from its own ``ranged(...)`` metadata, else from `COMMON_RANGES`, the ranges of
  field names that mean the same thing in every block, built in or from a plugin (``dropout`` in
  [0, 1), ``heads`` >= 1, ``time_unit`` > 0 ...).
"""
from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, NamedTuple

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException, ValidationError

from .errors import ConfigError

FLOAT32_TINY = 1.1754943508222875e-38     # smallest normal float32: below it a value is 0 in the model
FLOAT32_MAX = 3.4028234663852886e38
INT64_MAX = 2**63 - 1


class Range(NamedTuple):
    """Bounds of a number; None = unbounded on that side."""
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def check(self, value, where: str) -> None:
        for bound, ok in ((self.ge, lambda b: value >= b), (self.gt, lambda b: value > b),
                          (self.le, lambda b: value <= b), (self.lt, lambda b: value < b)):
            if bound is not None and not ok(bound):
                raise ConfigError(where, f"must be {self.describe()}, got {value!r}", got=value)

    def describe(self) -> str:
        low = f">= {self.ge}" if self.ge is not None else f"> {self.gt}" if self.gt is not None else ""
        high = f"<= {self.le}" if self.le is not None else f"< {self.lt}" if self.lt is not None else ""
        return " and ".join(p for p in (low, high) if p)


def ranged(default=dataclasses.MISSING, *, ge=None, gt=None, le=None, lt=None, finite: bool = True, **kwargs):
    """A dataclass field whose value must lie in the given bounds (``finite=False`` lets a float be inf)."""
    metadata = {**kwargs.pop("metadata", {}), "range": Range(ge, gt, le, lt), "finite": finite}
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


_POSITIVE, _SEED = Range(gt=0), Range(ge=0, le=INT64_MAX)
_COUNT = _POSITIVE                                # counts and widths (ints): > 0
COMMON_RANGES: dict[str, Range] = {
    **dict.fromkeys(("d_model", "d_in", "d_out", "d_state", "d_conv", "expand", "heads", "hidden", "hyper_hidden",
                     "field_width", "key_width", "head_dim", "n_groups", "chunk_size", "reference_points",
                     "quadrature", "rank", "steps", "layers", "t_embed", "classes", "outputs", "channels"), _COUNT),
    **dict.fromkeys(("time_features", "dt_rank", "num_workers"), Range(ge=0)),
    **dict.fromkeys(("mlp_ratio", "hidden_ratio", "time_unit", "dt_min", "dt_max", "dt_floor", "time", "rtol",
                     "atol", "step_size", "lr", "grad_clip", "diffusion_max", "speed_max", "reaction_max",
                     "duration", "horizon"), _POSITIVE),
    **dict.fromkeys(("dropout", "residual_dropout", "drop", "channel_drop", "val_fraction"), Range(ge=0, lt=1)),
    **dict.fromkeys(("weight_decay", "noise"), Range(ge=0)),
    "seed": _SEED,
}
"""Ranges of field names that mean the same in every schema; a field's own ``ranged(...)`` wins."""


def check_number(f: dataclasses.Field, value, where: str) -> None:
    """The general checks on one field's numeric value (see the module docstring)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            default = f.default if isinstance(f.default, float) else 0.0
            unbounded = not math.isnan(value) and math.isinf(default)     # inf as the default means "no limit"
            if f.metadata.get("finite", True) and not unbounded:
                raise ConfigError(where, f"must be a finite number, got {value!r}", got=value)
        elif value != 0 and not FLOAT32_TINY <= abs(value) <= FLOAT32_MAX:
            raise ConfigError(where, f"{value!r} is outside the float32 range the model computes in "
                              f"({FLOAT32_TINY:.3g} to {FLOAT32_MAX:.3g} in magnitude, or 0)", got=value)
    elif abs(value) > INT64_MAX:
        raise ConfigError(where, f"{value} does not fit in a 64-bit integer", got=value)
    bounds = f.metadata.get("range", COMMON_RANGES.get(f.name))
    if bounds is not None:
        bounds.check(value, where)


def _join(path: str, key: str) -> str:
    if not key:
        return path
    return f"{path}{key}" if key.startswith("[") else f"{path}.{key}" if path else key


def _keys_at(base, key: str) -> list[str]:
    """Valid keys of the mapping that holds dotted ``key`` inside the structured config ``base``."""
    parent = key.rpartition(".")[0]
    node = OmegaConf.select(base, parent) if parent else base
    return [str(k) for k in node.keys()] if OmegaConf.is_dict(node) else []


def _numbers(f: dataclasses.Field, value, where: str) -> None:
    """`check_number` on a value, or on each number of a list / dict field."""
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _numbers(f, item, f"{where}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            _numbers(f, item, _join(where, str(key)))
    else:
        check_number(f, value, where)


def check_choices(obj: Any, path: str) -> None:
    """Run ``choice`` checks, ``validate(path)`` methods and the number checks over a config instance,
    recursively. A schema's own ``validate`` runs before the number checks, so its messages win; if it
    fails on a value the number checks reject (a division by a zero count, say), their error is raised."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        where = _join(path, f.name)
        options = f.metadata.get("choices")
        if options is not None and value not in options:
            raise ConfigError(where, f"invalid value {value!r}", choices=options, got=value)
        if dataclasses.is_dataclass(value):
            check_choices(value, where)
    if callable(getattr(obj, "validate", None)):
        try:
            obj.validate(path)
        except ConfigError:
            raise
        except Exception:
            _check_numbers(obj, path)
            raise
    _check_numbers(obj, path)


def _check_numbers(obj: Any, path: str) -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if not dataclasses.is_dataclass(value):
            _numbers(f, value, _join(path, f.name))


def _check_bools(schema: type, values, path: str) -> None:
    """Refuse a number given for a bool field of ``schema`` (recursively into nested schemas): OmegaConf
    converts any int to a bool, so ``teacher_forcing: 3`` would silently mean true."""
    if not (dataclasses.is_dataclass(schema) and hasattr(values, "keys")):
        return
    try:
        hints = typing.get_type_hints(schema)
    except (NameError, TypeError):       # an unresolvable annotation: OmegaConf reports what it can
        return
    for f in dataclasses.fields(schema):
        if f.name not in values:
            continue
        value, hint, where = values[f.name], hints.get(f.name), _join(path, f.name)
        if hint in (bool, bool | None) and isinstance(value, (int, float)) and not isinstance(value, bool):
            raise ConfigError(where, f"expected true or false, got {value!r}", choices=["true", "false"], got=value)
        _check_bools(hint, value, where)


def build_config(schema: type, values: dict, path: str, *, what: str = "block") -> Any:
    """Merge ``values`` onto dataclass ``schema`` and return a validated instance of it."""
    for old, new in getattr(schema, "renamed", {}).items():      # keys a schema renamed: say the new name
        if old in values:
            raise ConfigError(_join(path, old), f"'{old}' was renamed to '{new}'; write {new}: {values[old]}",
                              got=old)
    _check_bools(schema, values, path)
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
