"""The data contract: `load_data` -> `DataSplits` (train/val/test datasets + `DataInfo`), and `collate`.

Every dataset factory builds its raw train/test samples and hands them to `make_splits`, which applies
the options all datasets share, in this order: the splits and the drop of ``irregular.drop`` of the time
points of every series, by the protocol named in ``irregular.protocol`` (see `PROTOCOLS`; the default's
validation split is 20% of train when that is at least 30 cases, else none: the trainer then keeps the
last epoch's weights); the time scale taken from train; ``irregular.channel_drop`` of single entries
(every draw made once, seeded, so the same seed gives the same data); time normalisation (train times map
to [0, 1]); standardisation of values with train statistics.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .. import registry
from ..errors import ConfigError
from ..metrics import IGNORE
from ..seq import IrregularBatch, TokenBatch
from . import transforms as T

AUTO_VAL_FRACTION = 0.2    # data.val_fraction: null takes this share of train for validation ...
MIN_VAL_CASES = 30         # ... when it holds at least this many cases; fewer make best-epoch selection noise
_SPLIT_STREAM = {"train": 1, "val": 2, "test": 3}   # one generator stream per split for the drop protocol
PROTOCOLS = {
    # the dataset's own train/test split, a seeded (stratified) validation share carved from train, and
    # ⌊N·f⌋ of each series' N points dropped (Chen et al. 2023, PhysioPro's mask_ts dataset)
    "contiformer2023": "archive split; each series of N points loses floor(N*drop) of them",
    # train and test merged (in that order), ⌊L·f⌋ positions of the longest length L dropped from every
    # series with one generator, then a seeded stratified 70/15/15 split (Kidger et al. 2020, datasets/uea.py)
    "kidger2020": "train+test merged and re-split 70/15/15; floor(L*drop) positions of the longest length L dropped",
}
KIDGER_SPLIT = (0.7, 0.5)                  # train share; then the val share of the rest (test: the others)


@dataclass
class IrregularOptions:
    drop: float = 0.0           # fraction of time points removed from every series (0.3 / 0.5 / 0.7 protocol)
    channel_drop: float = 0.0   # probability of hiding each remaining (time, channel) entry
    seed: int = 0               # seed of both draws (kidger2020 with seed 56789 draws the authors' positions)
    protocol: str = field(default="contiformer2023", metadata={"choices": tuple(PROTOCOLS)})

    def validate(self, path: str) -> None:
        for key in ("drop", "channel_drop"):
            value = getattr(self, key)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{path}.{key}", f"must be in [0, 1), got {value!r}", got=value)


@dataclass
class DataOptions:
    """Options every dataset accepts; a dataset's schema subclasses this."""

    batch_size: int = 32
    val_fraction: Optional[float] = None   # share of train held out for validation (seeded); None = auto
    seed: int = 0               # seed of the validation split (and of synthetic generation)
    irregular: IrregularOptions = field(default_factory=IrregularOptions)
    normalise_time: bool = True  # map train observation times to [0, 1]
    standardise: bool = True    # per-channel standardisation with train statistics

    def validate(self, path: str) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"{path}.batch_size", f"must be >= 1, got {self.batch_size}", got=self.batch_size)
        if self.val_fraction is not None and not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"{path}.val_fraction", f"must be in [0, 1) or null (auto), got {self.val_fraction}")


@dataclass
class DataInfo:
    name: str
    channels: int
    task: str                        # a registered task: classify | regress | interpolate | extrapolate | …
    classes: Optional[int] = None    # number of classes (classify)
    outputs: Optional[int] = None    # regression target width (regress)
    max_len: int = 0                 # longest series over all splits
    class_names: Optional[list] = None
    vocab: Optional[int] = None      # vocabulary size of token data (None: the data are values)
    source: Optional[dict] = None    # what the data were built from, for results.json (e.g. Python version)
    text: Optional[str] = None       # how token ids spell text: a name in data.tokens.TEXT_CODECS


class SeriesDataset(Dataset):
    """A list of samples: dicts with "values" [N, C], "times" [N], "mask" [N, C] and targets."""

    def __init__(self, samples: list[dict]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        return self.samples[i]


@dataclass
class DataSplits:
    train: SeriesDataset
    val: SeriesDataset
    test: SeriesDataset
    info: DataInfo
    options: Optional[DataOptions] = None

    def loader(self, split: str, *, batch_size: int | None = None, shuffle: bool | None = None,
               generator: torch.Generator | None = None) -> DataLoader:
        """A DataLoader over ``split`` that yields ``(IrregularBatch, targets)`` via `collate`."""
        size = batch_size or (self.options.batch_size if self.options else 32)
        return DataLoader(getattr(self, split), batch_size=size, collate_fn=collate, generator=generator,
                          shuffle=(split == "train") if shuffle is None else shuffle)


def _pad(tensors: list[Tensor], fill=0) -> Tensor:
    """Stack [N_i, ...] tensors into [B, max N, ...] padded with ``fill``."""
    n = max(t.shape[0] for t in tensors)
    out = tensors[0].new_full((len(tensors), n, *tensors[0].shape[1:]), fill)
    for i, t in enumerate(tensors):
        out[i, : t.shape[0]] = t
    return out


def _pad_times(times: list[Tensor]) -> Tensor:
    """[B, max N] times; padding repeats each series' last time so times never decrease."""
    out = _pad(times)
    for i, t in enumerate(times):
        out[i, t.shape[0]:] = t[-1]
    return out


def collate_tokens(samples: list[dict]) -> tuple[TokenBatch, dict[str, Tensor]]:
    """Pad token samples ("tokens" [N] long, optional "times" [N], and "label" or "next" [N]) at the end:
    ``(TokenBatch, targets)``; padded positions of ``targets["next"]`` hold `IGNORE`."""
    lengths = torch.tensor([s["tokens"].shape[0] for s in samples], dtype=torch.long)
    times = _pad_times([s["times"] for s in samples]) if "times" in samples[0] else None
    batch = TokenBatch(tokens=_pad([s["tokens"] for s in samples]), lengths=lengths, times=times)
    targets = {}
    if "label" in samples[0]:
        targets["label"] = torch.stack([torch.as_tensor(s["label"], dtype=torch.long) for s in samples])
    if "next" in samples[0]:
        targets["next"] = _pad([s["next"] for s in samples], IGNORE)                   # [B, L]
    return batch, targets


def collate(samples: list[dict]) -> tuple[IrregularBatch | TokenBatch, dict[str, Tensor]]:
    """Pad samples to the batch's longest series: ``(IrregularBatch, targets)``, or ``(TokenBatch,
    targets)`` for token samples (`collate_tokens`)."""
    if "tokens" in samples[0]:
        return collate_tokens(samples)
    lengths = torch.tensor([s["times"].shape[0] for s in samples], dtype=torch.long)
    query = _pad_times([s["query_times"] for s in samples]) if "query_times" in samples[0] else None
    batch = IrregularBatch(values=_pad([s["values"] for s in samples]), times=_pad_times([s["times"] for s in samples]),
                           mask=_pad([s["mask"] for s in samples], False), lengths=lengths, query_times=query)
    targets = {}
    if "label" in samples[0]:
        targets["label"] = torch.stack([torch.as_tensor(s["label"], dtype=torch.long) for s in samples])
    if "target" in samples[0]:
        targets["target"] = torch.stack([s["target"] for s in samples]).float()     # [B, K]
    if query is not None:
        targets["query_values"] = _pad([s["query_values"] for s in samples])         # [B, Q, C]
        targets["query_mask"] = _pad([s["query_mask"] for s in samples], False)      # [B, Q, C]
    return batch, targets


def val_fraction(option: float | None, n_train: int) -> float:
    """The share of ``n_train`` cases to validate on: ``option``, or the automatic rule when it is None."""
    if option is not None:
        return option
    return AUTO_VAL_FRACTION if round(n_train * AUTO_VAL_FRACTION) >= MIN_VAL_CASES else 0.0


def _split(samples: list[dict], fraction: float, seed: int, stratify: bool,
           total: int | None = None) -> tuple[list[int], list[int]]:
    """Indices (kept, taken) with ``fraction`` of ``samples`` taken at random, per class when ``stratify``.

    Each class gives ``round(n_c * fraction)``, or, when ``total`` is given, ⌊n_c * fraction⌋ plus one
    for the classes with the largest remainders until exactly ``total`` are taken."""
    g = torch.Generator().manual_seed(seed)
    groups: dict = {}
    for i, s in enumerate(samples):
        groups.setdefault(int(s["label"]) if stratify else 0, []).append(i)
    keys = sorted(groups)
    shares = [len(groups[k]) * fraction for k in keys]
    takes = [round(x) for x in shares] if total is None else [int(x) for x in shares]
    if total is not None:
        by_remainder = sorted(range(len(keys)), key=lambda c: takes[c] - shares[c])
        for c in by_remainder[:total - sum(takes)]:
            takes[c] += 1
    taken = []
    for key, take in zip(keys, takes):
        idx = groups[key]
        taken += [idx[j] for j in torch.randperm(len(idx), generator=g)[:take].tolist()]
    chosen = set(taken)
    return [i for i in range(len(samples)) if i not in chosen], sorted(taken)


def _pick(samples: list[dict], idx: list[int]) -> list[dict]:
    return [samples[i] for i in idx]


def _contiformer_splits(train, test, opts: DataOptions, stratify: bool) -> tuple[dict, dict]:
    """(raw parts, parts after the drop): the archive split, validation carved from train."""
    keep, val = _split(train, val_fraction(opts.val_fraction, len(train)), opts.seed, stratify)
    raw = {"train": _pick(train, keep), "val": _pick(train, val), "test": test}
    if opts.irregular.drop == 0.0:
        return raw, raw
    dropped = {}
    for split, samples in raw.items():
        g = torch.Generator().manual_seed(opts.irregular.seed * 1000 + _SPLIT_STREAM[split])
        dropped[split] = [T.drop_points(s, opts.irregular.drop, g) for s in samples]
    return raw, dropped


def _kidger_splits(train, test, opts: DataOptions, stratify: bool) -> tuple[dict, dict]:
    """(raw parts, parts after the drop): train + test merged, dropped on one grid, re-split 70/15/15."""
    merged = train + test
    dropped = merged
    if opts.irregular.drop > 0.0:
        grid = max(s["times"].shape[0] for s in merged)
        g = torch.Generator().manual_seed(opts.irregular.seed)
        dropped = [T.drop_grid_points(s, opts.irregular.drop, grid, g) for s in merged]
    share, val_share = KIDGER_SPLIT
    n_rest = len(merged) - int(len(merged) * share)
    keep, rest = _split(merged, 1.0 - share, opts.seed, stratify, total=n_rest)
    rest_samples = _pick(merged, rest)
    n_val = int(len(rest) * val_share)
    test_in, val_in = _split(rest_samples, val_share, opts.seed + 1, stratify, total=n_val)
    idx = {"train": keep, "val": [rest[i] for i in val_in], "test": [rest[i] for i in test_in]}
    return ({k: _pick(merged, v) for k, v in idx.items()}, {k: _pick(dropped, v) for k, v in idx.items()})


def _channel_drop(samples: list[dict], opts: IrregularOptions, split: str) -> list[dict]:
    if opts.channel_drop == 0.0:
        return samples
    g = torch.Generator().manual_seed(opts.seed * 1000 + 10 + _SPLIT_STREAM[split])
    return [T.drop_channels(s, opts.channel_drop, g) for s in samples]


def make_splits(name: str, task: str, train: list[dict], test: list[dict], opts: DataOptions, *,
                classes: list[str] | None = None, outputs: int | None = None) -> DataSplits:
    """Apply the shared options (see the module docstring) to raw samples and describe the result."""
    splitter = _kidger_splits if opts.irregular.protocol == "kidger2020" else _contiformer_splits
    raw, parts = splitter(train, test, opts, stratify=classes is not None)
    if not raw["train"]:
        raise ConfigError("data.val_fraction", f"{opts.val_fraction} leaves no series of '{name}' to train on; "
                          "lower it", got=opts.val_fraction)
    if not raw["test"]:
        raise ConfigError("data", f"dataset '{name}' has no test series")
    offset = min(float(s["times"][0]) for s in raw["train"])
    span = max(float(s["times"][-1]) for s in raw["train"]) - offset
    parts = {k: _channel_drop(v, opts.irregular, k) for k, v in parts.items()}
    if opts.normalise_time and span > 0:
        parts = {k: [T.rescale_times(s, offset, span) for s in v] for k, v in parts.items()}
    if opts.standardise:
        mean, std = T.channel_stats(parts["train"])
        parts = {k: [T.standardise(s, mean, std) for s in v] for k, v in parts.items()}
    max_len = max(s["times"].shape[0] for v in parts.values() for s in v)
    info = DataInfo(name=name, channels=train[0]["values"].shape[1], task=task,
                    classes=len(classes) if classes is not None else None, outputs=outputs, max_len=max_len,
                    class_names=list(classes) if classes is not None else None)
    return DataSplits(*(SeriesDataset(parts[k]) for k in ("train", "val", "test")), info=info, options=opts)


def load_data(data_cfg, path: str = "data") -> DataSplits:
    """Build the splits of the dataset named by ``data_cfg.name`` from the rest of the section."""
    if data_cfg is None:
        raise ConfigError(path, "missing data section, e.g. {name: spirals}", choices=registry.datasets.names())
    section = OmegaConf.to_container(data_cfg, resolve=True) if isinstance(data_cfg, DictConfig) else data_cfg
    if not isinstance(section, dict):
        raise ConfigError(path, f"expected a mapping with a dataset 'name', got {data_cfg!r}")
    section = dict(section)
    if "name" not in section:
        raise ConfigError(f"{path}.name", "missing required value: the dataset to load",
                          choices=registry.datasets.names())
    name = section.pop("name")
    if not isinstance(name, str):
        raise ConfigError(f"{path}.name", f"expected a dataset name, got {name!r}", choices=registry.datasets.names())
    factory = registry.datasets.get(name, f"{path}.name")
    return factory(**section)
