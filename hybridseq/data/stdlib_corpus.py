"""``stdlib_chars``: a character-level (byte-level) text corpus every machine has, the ``.py`` files of the
running Python's standard library.

Files are those under ``sysconfig.get_paths()["stdlib"]`` ending in ``.py``, outside ``site-packages``
and ``dist-packages`` (third-party code), in sorted order of their POSIX paths relative to that folder.
The split is by file, fixed by position in that order: of every 20 files the 19th goes to validation,
the 20th to test, the rest to train. Each split's files are joined (UTF-8 bytes, each file followed by a
newline) and cut into consecutive, non-overlapping windows of ``length + 1`` bytes: the first ``length``
are the input, the last ``length`` the next-token targets. The vocabulary is the 256 byte values; the
source is almost all ASCII, so bits per token are bits per character. Results are comparable across
machines with the same Python version, which `DataInfo.source` records (and ``results.json`` with it).
"""
from __future__ import annotations

import platform
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch.utils.data import Dataset

from ..errors import ConfigError
from ..schema import build_config, ranged
from .core import DataInfo, DataSplits
from .tokens import MAX_TOKENS, TokenOptions

VOCAB = 256                     # byte values
EVERY, VAL_AT, TEST_AT = 20, 18, 19      # file i goes to val when i % 20 == 18, to test when == 19
THIRD_PARTY = ("site-packages", "dist-packages")


@dataclass
class StdlibOptions(TokenOptions):
    length: int = ranged(256, ge=1, le=MAX_TOKENS)   # tokens per window
    max_chars: Optional[int] = None  # cap on the bytes of each split (the first ones); None = all

    def validate(self, path: str) -> None:
        super().validate(path)
        if self.max_chars is not None and self.max_chars <= self.length:
            raise ConfigError(f"{path}.max_chars", f"must be > length={self.length} or null, got {self.max_chars}")


def stdlib_files(root: Path | None = None) -> list[Path]:
    """The corpus's files, in the corpus's order."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    files = [p for p in root.rglob("*.py") if not set(p.relative_to(root).parts) & set(THIRD_PARTY)]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


class Windows(Dataset):
    """Consecutive windows of a byte stream: {"tokens": [L], "next": [L]} (long)."""

    def __init__(self, stream: torch.Tensor, length: int):
        self.stream, self.length = stream, length                    # [T] uint8

    def __len__(self) -> int:
        return max(0, (self.stream.numel() - 1) // (self.length + 1))

    def __getitem__(self, i: int) -> dict:
        chunk = self.stream[i * (self.length + 1): (i + 1) * (self.length + 1)].long()   # [L + 1]
        return {"tokens": chunk[:-1], "next": chunk[1:]}


def _stream(files: list[Path], cap: int | None) -> torch.Tensor:
    parts, total = [], 0
    for p in files:
        data = p.read_bytes() + b"\n"
        parts.append(data)
        total += len(data)
        if cap is not None and total >= cap:
            break
    joined = b"".join(parts)[:cap]
    return torch.frombuffer(bytearray(joined), dtype=torch.uint8)


def stdlib_chars(**options) -> DataSplits:
    opts = build_config(StdlibOptions, options, "data", what="dataset 'stdlib_chars'")
    files = stdlib_files()
    by_split = {"train": [], "val": [], "test": []}
    for i, p in enumerate(files):
        by_split["val" if i % EVERY == VAL_AT else "test" if i % EVERY == TEST_AT else "train"].append(p)
    parts = {k: Windows(_stream(v, opts.max_chars), opts.length) for k, v in by_split.items()}
    source = {"python": platform.python_version(), "implementation": platform.python_implementation(),
              "files": len(files), **{f"{k}_files": len(v) for k, v in by_split.items()}}
    info = DataInfo(name="stdlib_chars", channels=1, task="lm", max_len=opts.length, vocab=VOCAB, source=source,
                    text="utf8_bytes")
    return DataSplits(parts["train"], parts["val"], parts["test"], info=info, options=opts)
