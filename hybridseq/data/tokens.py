"""Token datasets: the options they share and `make_token_splits`, their `make_splits`.

A token sample is a dict with "tokens" [N] long and a target: "label" (classify) or "next" [N] long (the
token each position must predict, `IGNORE` where none; the ``lm`` task). The irregular-series options of
`DataOptions` (drop protocols, time normalisation, standardisation) do not apply to tokens: a drop is
refused rather than ignored.

A dataset whose tokens spell text names its codec in `DataInfo.text` (a key of `TEXT_CODECS`); training
records it in the run directory, so ``hybridseq generate`` can encode a prompt and decode what it samples.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from ..schema import ranged
from .core import DataInfo, DataOptions, DataSplits, SeriesDataset, _pick, _split, val_fraction

MAX_TOKENS = 2**20             # longest sequence a token dataset generates
MAX_SEQUENCES = 2**24          # most sequences in one split


class Utf8Bytes:
    """Text as its UTF-8 bytes, one token per byte value (a vocabulary of 256)."""

    vocab = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")     # a cut multi-byte character shows as U+FFFD


TEXT_CODECS = {"utf8_bytes": Utf8Bytes()}


@dataclass
class TokenOptions(DataOptions):
    def validate(self, path: str) -> None:
        super().validate(path)
        for key in ("drop", "channel_drop"):
            if getattr(self.irregular, key) != 0.0:
                raise ConfigError(f"{path}.irregular.{key}", "token datasets have no time points to drop; "
                                  "leave it at 0", got=getattr(self.irregular, key))


@dataclass
class GeneratedTokenOptions(TokenOptions):
    n_train: int = ranged(2048, ge=1, le=MAX_SEQUENCES)   # sequences in train (validation is carved from it)
    n_test: int = ranged(512, ge=1, le=MAX_SEQUENCES)


def make_token_splits(name: str, task: str, train: list[dict], test: list[dict], opts: DataOptions, *,
                      vocab: int, classes: list[str] | None = None) -> DataSplits:
    """Validation carved from ``train`` (seeded, stratified by class for classification); the `DataInfo`."""
    keep, val = _split(train, val_fraction(opts.val_fraction, len(train)), opts.seed, classes is not None)
    parts = {"train": _pick(train, keep), "val": _pick(train, val), "test": test}
    max_len = max(s["tokens"].shape[0] for v in parts.values() for s in v)
    info = DataInfo(name=name, channels=1, task=task, classes=len(classes) if classes is not None else None,
                    max_len=max_len, class_names=list(classes) if classes is not None else None, vocab=vocab)
    return DataSplits(*(SeriesDataset(parts[k]) for k in ("train", "val", "test")), info=info, options=opts)
