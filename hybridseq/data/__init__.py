"""Datasets for irregular time series: the data contract, transforms, the ``.ts`` reader, built-in datasets.

``load_data(cfg.data)`` returns `DataSplits` (train / val / test datasets and a `DataInfo`); `collate`
pads samples into an `IrregularBatch` and a dict of targets. Built-in datasets register through the same
``hybridseq_register_datasets`` hook as third-party ones: ``uea`` (UEA/UCR ``.ts`` files; BasicMotions and
JapaneseVowels ship inside the package) and ``spirals`` (synthetic, generated from a seed).
"""
from ..hookspecs import hookimpl
from .archive import uea
from .core import DataInfo, DataOptions, DataSplits, IrregularOptions, SeriesDataset, collate, load_data, make_splits
from .synthetic import spirals
from .tsfile import TSData, TSFormatError, read_ts


@hookimpl
def hybridseq_register_datasets(register):
    register("uea", uea)
    register("spirals", spirals)


__all__ = ["DataInfo", "DataOptions", "DataSplits", "IrregularOptions", "SeriesDataset", "TSData", "TSFormatError",
           "collate", "load_data", "make_splits", "read_ts"]
