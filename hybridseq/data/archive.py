"""The ``uea`` dataset: UEA/UCR archive problems from ``.ts`` files (Bagnall et al., 2018).

Where the files come from, in order: ``path:`` (a ``<Name>_TRAIN.ts`` file with its ``_TEST`` partner beside
it, or a folder holding such a pair); the problems shipped inside this package (BasicMotions,
JapaneseVowels); the local data folders of the optional ``aeon`` or ``sktime`` packages. Nothing is ever
downloaded here: a problem those packages would have to download first is reported with the command that
fetches it once.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from ..errors import ConfigError
from ..schema import build_config
from .core import DataOptions, DataSplits, make_splits
from .transforms import sample
from .tsfile import TSData, read_ts

EMBEDDED_DIR = Path(__file__).parent / "uea"
OPTIONAL_PACKAGES = ("aeon", "sktime")


@dataclass
class UEAOptions(DataOptions):
    dataset: Optional[str] = None   # problem name, e.g. JapaneseVowels
    path: Optional[str] = None      # a <Name>_TRAIN.ts file or a folder holding <Name>_TRAIN.ts / _TEST.ts

    def validate(self, path: str) -> None:
        super().validate(path)
        if self.dataset is None and self.path is None:
            raise ConfigError(f"{path}.dataset", "name a problem (or give data.path to your own .ts files)",
                              choices=embedded_names())


def embedded_names() -> list[str]:
    return sorted(p.name for p in EMBEDDED_DIR.iterdir() if p.is_dir())


def _pair_in(folder: Path, dataset: str | None, key: str = "data.path") -> tuple[Path, Path] | None:
    """The (train, test) files in ``folder`` (of ``dataset`` if named); ``key`` is the option that led here."""
    trains = sorted(folder.glob("*_TRAIN.ts"))
    if dataset is not None:
        trains = [p for p in trains if p.name.lower() == f"{dataset}_train.ts".lower()]
    if len(trains) > 1:
        names = [p.name[: -len("_TRAIN.ts")] for p in trains]
        raise ConfigError("data.dataset", f"folder {folder} holds several problems; name one", choices=names)
    if not trains:
        return None
    test = trains[0].with_name(trains[0].name[: -len("_TRAIN.ts")] + "_TEST.ts")
    if not test.exists():
        raise ConfigError(key, f"{trains[0]} has no partner file {test.name} beside it")
    return trains[0], test


def _from_path(path: str, dataset: str | None) -> tuple[Path, Path]:
    p = Path(path).expanduser()
    if p.is_file():
        if not p.name.upper().endswith("_TRAIN.TS"):
            raise ConfigError("data.path", f"expected a <Name>_TRAIN.ts file or a folder, got {p}", got=path)
        pair = _pair_in(p.parent, p.name[: -len("_TRAIN.ts")])
    elif p.is_dir():
        pair = _pair_in(p, dataset) or (_pair_in(p / dataset, dataset) if dataset else None)
    else:
        raise ConfigError("data.path", f"no such file or folder: {p}", got=path)
    if pair is None:
        raise ConfigError("data.path", f"no <Name>_TRAIN.ts file in {p}"
                          + (f" for dataset {dataset!r}" if dataset else ""))
    return pair


def _from_packages(dataset: str) -> tuple[Path, Path]:
    """Locate ``dataset`` in the local data folders of aeon / sktime, without importing them."""
    found = {}
    for package in OPTIONAL_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        root = Path(next(iter(spec.submodule_search_locations))) / "datasets"
        found[package] = root
        for train in root.rglob(f"{dataset}_TRAIN.ts"):
            return _pair_in(train.parent, dataset, "data.dataset")
    shipped = ", ".join(embedded_names())
    if not found:
        raise ConfigError("data.dataset", f"dataset {dataset!r} is not shipped with hybridseq (shipped: {shipped}). "
                          'To load other UEA/UCR problems by name, pip install "hybridseq[datasets]" (aeon), '
                          "or point data.path at your .ts files", choices=embedded_names(), got=dataset)
    where = " or ".join(str(r) for r in found.values())
    fetch = ("python -c \"from aeon.datasets import load_classification as f; f('%s')\"" % dataset
             if "aeon" in found
             else "python -c \"from sktime.datasets import load_UCR_UEA_dataset as f; f('%s')\"" % dataset)
    raise ConfigError("data.dataset", f"dataset {dataset!r} is not in the local data of {', '.join(found)} ({where}); "
                      f"hybridseq never downloads at run time. Fetch it once with: {fetch}, or set data.path",
                      choices=embedded_names(), got=dataset)


def locate(dataset: str | None, path: str | None) -> tuple[Path, Path]:
    """(train file, test file) for the options, looking in the order the module docstring gives."""
    if path is not None:
        return _from_path(path, dataset)
    for name in embedded_names():
        if name.lower() == dataset.lower():
            return _pair_in(EMBEDDED_DIR / name, name)
    return _from_packages(dataset)


def _samples(data: TSData, classes: list[str] | None) -> list[dict]:
    out = []
    for k, (values, times) in enumerate(zip(data.values, data.times)):
        if classes is not None:
            out.append(sample(values, times, label=torch.tensor(classes.index(data.labels[k]))))
        elif data.targets is not None:
            out.append(sample(values, times, target=torch.tensor([data.targets[k]], dtype=torch.float32)))
        else:
            raise ConfigError("data.path", f"{data.name}: the files carry no @classLabel or @targetLabel")
    return out


def uea(**options) -> DataSplits:
    """UEA/UCR problem as classification (``@classLabel``) or regression (``@targetLabel``)."""
    opts = build_config(UEAOptions, options, "data", what="dataset 'uea'")
    train_file, test_file = locate(opts.dataset, opts.path)
    train, test = read_ts(train_file), read_ts(test_file)
    if train.channels != test.channels:
        raise ConfigError("data.path", f"{train_file.name} has {train.channels} channels but {test_file.name} "
                          f"has {test.channels}")
    classes = train.class_labels
    if classes is not None and test.labels is not None:
        unknown = sorted(set(test.labels) - set(classes))
        if unknown:
            raise ConfigError("data.path", f"{test_file.name} has class labels {unknown} not in {train_file.name}")
    task = "classify" if classes is not None else "regress"
    return make_splits(train.name, task, _samples(train, classes), _samples(test, classes), opts,
                       classes=classes, outputs=None if classes is not None else 1)
