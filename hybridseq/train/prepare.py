"""Building a run from its config, shared by training, evaluation, ``validate`` and ``describe``.

`prepare` checks the top-level sections, loads the data (when the config has a ``data:`` section or
splits are given), resolves the task and the widths the data determine, validates every section,
seeds the random generators and assembles the model. Nothing here trains or touches a device.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from omegaconf import DictConfig, OmegaConf

from .. import registry
from ..assemble import HybridModel, assemble
from ..config import check_interpolations
from ..errors import ConfigError
from ..sections import check_sections, validate_config
from ..tasks import Task
from .config import TrainConfig, as_dict, batch_size, train_config
from .state import seed_everything
from .tasks import check_causal, check_lengths, check_output, resolve


@dataclass
class Prepared:
    cfg: DictConfig                      # resolved: task, widths from the data, every train default
    tcfg: TrainConfig
    checked: list[str]                   # the sections validated
    task: Optional[Task] = None          # None without data
    splits: Any = None                   # DataSplits, or None without data
    collate: Optional[Callable] = None
    model: Optional[HybridModel] = None  # None when prepared with build=False

    def require_data(self) -> "Prepared":
        """Itself, or a `ConfigError` at ``data`` when it was prepared without data (training and
        evaluation need it)."""
        if self.splits is None:
            raise ConfigError("data", "missing data section, e.g. {name: spirals}", choices=registry.datasets.names())
        return self

    @property
    def info(self):
        return self.splits.info

    @property
    def width(self) -> int:
        """The output width the task takes from the data (classes, outputs or channels)."""
        return getattr(self.info, self.task.width_key)

    @property
    def batch_size(self) -> int:
        return batch_size(self.tcfg, self.cfg.get("data"))


def prepare(cfg, *, splits=None, collate=None, build: bool = True) -> Prepared:
    """Everything a run needs before training, from ``cfg`` (a DictConfig or a dict).

    ``splits`` and ``collate`` replace ``hybridseq.data.load_data`` / ``collate`` (custom datasets,
    tests). With ``build=False`` the model is validated but not assembled.
    """
    cfg = check_interpolations(OmegaConf.create(cfg) if not isinstance(cfg, DictConfig) else cfg)
    check_sections(cfg)
    checked, task = [], None
    if splits is None and "data" in cfg:
        from ..data import load_data

        splits = load_data(cfg.data, "data")
        checked.append("data")
    if splits is not None:
        if collate is None:
            from ..data import collate
        cfg, task = resolve(cfg, splits.info)
    tcfg = train_config(cfg.get("train"))
    checked += validate_config(cfg)
    cfg.train = as_dict(tcfg)
    prepared = Prepared(cfg, tcfg, checked, task, splits, collate)
    if build:
        seed_everything(tcfg.seed)
        prepared.model = assemble(cfg.model)
        if task is not None:
            check_output(prepared.model, task, splits.info)
            check_lengths(prepared.model, splits.info)
            check_causal(prepared.model, task, splits)
    return prepared
