"""Crash-safe file writes: a kill at any moment leaves either the old file or the new one, never half.

Writes never follow a symbolic link: a rename replaces a link itself, and appending to a link is refused,
so a run writes only inside the folder it was given. JSON is strict: a non-finite number is written as
``null`` (never the bare ``NaN`` that other JSON readers reject).
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path

from .errors import ConfigError

TMP_SUFFIX = ".tmp"
STALE_TMP_S = 60.0           # a temporary file older than this is left over from a killed write


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it over ``path``. The file
    gets the permissions of an ordinary new file (0666 less the umask), not the temporary file's 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_safetensors(tensors: dict, path) -> Path:
    """Save a dict of tensors as safetensors, atomically (tensors are made contiguous CPU copies)."""
    from safetensors.torch import save

    return atomic_write_bytes(path, save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}))


def finite(obj):
    """``obj`` with every non-finite float (NaN, ±inf) inside dicts, lists and tuples replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def to_json(obj, **kwargs) -> str:
    """Strict JSON text of ``obj``: non-finite floats become null, other objects their ``str``."""
    return json.dumps(finite(obj), allow_nan=False, default=str, **kwargs)


def remove_stale_temps(folder, older_than: float = STALE_TMP_S) -> list[Path]:
    """Delete the temporary files that killed writes left in ``folder`` (not in sub-folders)."""
    folder, now, removed = Path(folder), time.time(), []
    if not folder.is_dir():
        return removed
    for tmp in folder.glob(f".*{TMP_SUFFIX}"):
        try:
            if tmp.is_file() and not tmp.is_symlink() and now - tmp.stat().st_mtime > older_than:
                tmp.unlink()
                removed.append(tmp)
        except FileNotFoundError:          # removed meanwhile by its writer
            continue
    return removed


def append_jsonl(path, record: dict) -> None:
    """Append one JSON line with a single write, flushed and fsynced.

    A kill during the write can leave a partial last line, which `read_jsonl` skips; the next append
    starts on a new line so that the record after it is whole.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (to_json(record) + "\n").encode("utf-8")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError:
        if path.is_symlink():
            raise ConfigError(str(path), "is a symbolic link; hybridseq never writes through a link "
                              "(remove it, or choose another output folder)") from None
        raise
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":          # torn last line
            line = b"\n" + line
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path) -> list[dict]:
    """All complete records of a JSON-lines file (a torn last line is ignored); [] if absent."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
