"""Reader for the UEA/UCR ``.ts`` time series format (sktime/aeon's text format).

A file has ``#`` (or ARFF-style ``%``) comment lines, ``@key value`` header lines (``@problemName``, ``@timeStamps``,
``@missing``, ``@univariate``, ``@dimensions``, ``@equalLength``, ``@seriesLength``,
``@classLabel true a b c`` or ``@targetLabel true``), then ``@data`` and one case per line: dimensions
separated by ``:``, values by ``,``, ``?`` (or ``NaN``) for a missing value, and the class label or
regression target as the last ``:`` field. With ``@timeStamps true`` each dimension is a list of
``(time,value)`` tuples; dimensions may have different time stamps, which become per-channel missingness.
Time stamps are numbers or ISO date-times (``2007-01-01 00:00:00``); date-times become seconds since the
case's first stamp.
Errors name the file and the line.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import torch
from torch import Tensor

COMMENT = ("#", "%")                 # comment markers ("%" as in ARFF, used by some archive files)
_BOOL_KEYS = ("timestamps", "missing", "univariate", "equallength")
_TUPLE = re.compile(r"\(([^(),]+),([^(),]+)\)")
_FIELD_SEP = re.compile(r":(?![^()]*\))")          # a ':' outside any (time,value) tuple (date-times hold ':')


class TSFormatError(ValueError):
    """A malformed ``.ts`` file; the message starts with ``file:line:``."""

    def __init__(self, path, line: int, message: str):
        self.file, self.line = str(path), line
        super().__init__(f"{path}:{line}: {message}")


@dataclass
class TSData:
    """The cases of one ``.ts`` file.

    values: one [N_i, C] float tensor per case, NaN where missing (or not observed at that time)
    times:  one [N_i] float tensor per case (0, 1, 2, ... unless the file has time stamps)
    labels: class label strings (classification) or None
    targets: float regression targets or None
    """

    name: str
    values: list[Tensor]
    times: list[Tensor]
    labels: list[str] | None
    targets: list[float] | None
    class_labels: list[str] | None
    header: dict = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return self.values[0].shape[1] if self.values else int(self.header.get("dimensions", 0))


FLOAT32_MAX = 3.4028234663852886e38   # values are float32 tensors: anything larger would become inf


def _number(text: str, path, line: int) -> float:
    text = text.strip()
    if text in ("?", "") or text.lower() == "nan":
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise TSFormatError(path, line, f"expected a number or '?', got {text!r}") from None
    if not abs(value) <= FLOAT32_MAX:
        raise TSFormatError(path, line, f"value {text!r} is not finite in float32 (|x| <= {FLOAT32_MAX:.3g}); "
                            "mark a missing value with '?'")
    return value


def _bool(value: str, key: str, path, line: int) -> bool:
    if value.lower() not in ("true", "false"):
        raise TSFormatError(path, line, f"@{key} must be true or false, got {value!r}")
    return value.lower() == "true"


def _header(key: str, rest: str, header: dict, path, line: int) -> None:
    if key in _BOOL_KEYS:
        header[key] = _bool(rest, key, path, line)
    elif key in ("dimensions", "serieslength"):
        if not rest.isdigit() or int(rest) < 1:
            raise TSFormatError(path, line, f"@{key} must be a positive integer, got {rest!r}")
        header[key] = int(rest)
    elif key == "classlabel":
        parts = rest.split()
        if not parts:
            raise TSFormatError(path, line, "@classLabel needs true/false (and the labels when true)")
        header["classlabel"] = _bool(parts[0], key, path, line)
        if header["classlabel"] and len(parts) < 2:
            raise TSFormatError(path, line, "@classLabel true must list the class labels")
        repeated = sorted({c for c in parts[1:] if parts[1:].count(c) > 1})
        if repeated:
            raise TSFormatError(path, line, f"@classLabel lists {', '.join(map(repr, repeated))} more than once")
        header["classes"] = parts[1:]
    elif key == "targetlabel":
        header["targetlabel"] = _bool(rest.split()[0] if rest else "", key, path, line)
    else:
        header[key] = rest


def _dimension(text: str, stamped: bool, path, line: int) -> tuple[list, list[float]]:
    """(times, values) of one dimension's text."""
    text = text.strip()
    if not stamped:
        values = [_number(v, path, line) for v in text.split(",")] if text else []
        return [float(i) for i in range(len(values))], values
    pairs = _TUPLE.findall(text)
    if text and _TUPLE.sub("", text).replace(",", "").strip():
        raise TSFormatError(path, line, "with @timeStamps true every value must be a (time,value) tuple")
    return [_stamp(t, path, line) for t, _ in pairs], [_number(v, path, line) for _, v in pairs]


def _stamp(text: str, path, line: int) -> float | datetime:
    """A time stamp: a finite number or an ISO date-time (missing stamps are errors)."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            raise TSFormatError(path, line, f"time stamp {text!r} is neither a number nor a date-time") from None
    if not abs(value) <= FLOAT32_MAX:
        raise TSFormatError(path, line, f"time stamp {text!r} is neither a number nor a date-time: it is not "
                            "finite in float32")
    return value


def _seconds(dims: list[tuple[list, list[float]]], path, line: int) -> list[tuple[list[float], list[float]]]:
    """Date-time stamps of a case -> seconds since its first stamp; numeric stamps stay as they are."""
    stamps = [t for times, _ in dims for t in times]
    dated = sum(isinstance(t, datetime) for t in stamps)
    if dated == 0:
        return dims
    if dated < len(stamps):
        raise TSFormatError(path, line, "time stamps mix numbers and date-times")
    origin = min(stamps)
    return [([(t - origin).total_seconds() for t in times], values) for times, values in dims]


def _case(dims: list[tuple[list[float], list[float]]], stamped: bool) -> tuple[Tensor, Tensor]:
    """Merge per-dimension (times, values) into values [N, C] (NaN where absent) and times [N]."""
    if not stamped:                                    # times 0..n-1: dimensions share the grid
        n = max(len(v) for _, v in dims)
        values = torch.full((n, len(dims)), math.nan)
        for c, (_, vals) in enumerate(dims):
            values[: len(vals), c] = torch.tensor(vals)
        return values, torch.arange(n, dtype=torch.float32)
    grid = sorted({t for times, _ in dims for t in times})
    index = {t: i for i, t in enumerate(grid)}
    values = torch.full((len(grid), len(dims)), math.nan)
    for c, (times, vals) in enumerate(dims):
        for t, v in zip(times, vals):
            values[index[t], c] = v
    return values, torch.tensor(grid, dtype=torch.float32)


def read_ts(path) -> TSData:
    """Parse one ``.ts`` file; raises `TSFormatError` naming the file and line on malformed input."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as err:
        raise TSFormatError(path, 0, f"cannot read: {err.strerror or err}") from None
    header: dict = {}
    values, times, labels, targets = [], [], [], []
    in_data, first_data = False, 0
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text or text.startswith(COMMENT):
            continue
        if not in_data:
            if not text.startswith("@"):
                raise TSFormatError(path, number, f"expected an @key header line or @data before the data, "
                                    f"got {text[:40]!r}")
            key, _, rest = text[1:].partition(" ")
            key = key.lower()
            if key == "data":
                in_data, first_data = True, number
            else:
                _header(key, rest.strip(), header, path, number)
            continue
        fields = _FIELD_SEP.split(text)
        labelled = header.get("classlabel") or header.get("targetlabel")
        label = fields.pop().strip() if labelled else None
        if not fields:                                   # only the label's field: a labelled line lacks its label
            raise TSFormatError(path, number, f"expected the values, then ':' and the label; got {text[:40]!r}")
        dims = header.setdefault("dimensions", len(fields))          # without @dimensions the first case decides
        if len(fields) != dims:
            then = ", then ':' and the label" if labelled else ""
            raise TSFormatError(path, number, f"expected {dims} dimension(s) separated by ':'{then}, "
                                f"got {len(fields)}")
        per_dim = [_dimension(f, bool(header.get("timestamps")), path, number) for f in fields]
        per_dim = _seconds(per_dim, path, number)
        lengths = {len(v) for _, v in per_dim}
        if header.get("equallength") and not header.get("timestamps"):
            want = header.get("serieslength", next(iter(lengths)))
            if lengths != {want}:
                raise TSFormatError(path, number, f"@equalLength true with series length {want}, but this case has "
                                    f"length(s) {sorted(lengths)}")
        if max(lengths) == 0:
            raise TSFormatError(path, number, "empty case (no values)")
        v, t = _case(per_dim, bool(header.get("timestamps")))
        if bool(torch.isnan(v).all()):
            raise TSFormatError(path, number, "every value of this case is missing ('?'); remove the case")
        values.append(v)
        times.append(t)
        if header.get("classlabel"):
            if label not in header["classes"]:
                raise TSFormatError(path, number, f"class label {label!r} is not declared in @classLabel "
                                    f"({' '.join(header['classes'])})")
            labels.append(label)
        elif header.get("targetlabel"):
            targets.append(_number(label, path, number))
    if not in_data:
        raise TSFormatError(path, len(lines), "no @data line found")
    if not values:
        raise TSFormatError(path, first_data, "no cases after @data")
    return TSData(name=str(header.get("problemname", path.stem)), values=values, times=times,
                  labels=labels if header.get("classlabel") else None,
                  targets=targets if header.get("targetlabel") else None,
                  class_labels=list(header["classes"]) if header.get("classlabel") else None, header=header)
