"""Datasets for irregular time series: the data contract, transforms, the ``.ts`` reader, built-in datasets.

``load_data(cfg.data)`` returns `DataSplits` (train / val / test datasets and a `DataInfo`); `collate`
pads samples into an `IrregularBatch` and a dict of targets. Built-in datasets register through the same
``hybridseq_register_datasets`` hook as third-party ones: ``uea`` (UEA/UCR ``.ts`` files; BasicMotions and
JapaneseVowels ship inside the package), ``spirals`` (synthetic, generated from a seed) and the token
datasets ``selective_copy``, ``induction_heads`` (Mamba's recall tasks), ``listops`` (LRA's grammar) and
``stdlib_chars`` (the running Python's standard library as a byte-level text corpus).
"""
from ..hookspecs import hookimpl
from .archive import uea
from .core import (
    DataInfo,
    DataOptions,
    DataSplits,
    IrregularOptions,
    SeriesDataset,
    collate,
    collate_tokens,
    load_data,
    make_splits,
)
from .listops import listops
from .recall import induction_heads, selective_copy
from .stdlib_corpus import stdlib_chars
from .synthetic import spirals
from .tokens import GeneratedTokenOptions, TokenOptions, make_token_splits
from .tsfile import TSData, TSFormatError, read_ts


@hookimpl
def hybridseq_register_datasets(register):
    register("uea", uea)
    register("spirals", spirals)
    register("selective_copy", selective_copy)
    register("induction_heads", induction_heads)
    register("listops", listops)
    register("stdlib_chars", stdlib_chars)


__all__ = ["DataInfo", "DataOptions", "DataSplits", "IrregularOptions", "SeriesDataset", "TSData", "TSFormatError",
           "GeneratedTokenOptions", "TokenOptions", "collate", "collate_tokens", "load_data", "make_splits",
           "make_token_splits", "read_ts"]
