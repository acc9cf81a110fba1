"""Experiment loggers: ``train.loggers: [tensorboard]`` sends each epoch's record (the line written to
``metrics.jsonl``) to the tracking tools named there, and at the end the run's settings with its final
metrics (hyperparameters). Loggers come from the ``hybridseq_register_loggers`` hook, so a plugin adds
W&B, MLflow and the like; the built-in one is ``tensorboard`` (``pip install "hybridseq[tensorboard]"``),
which writes ``<run>/tensorboard/``.

A logger factory is called as ``factory(run_dir=Path, config=dict, first_epoch=int)`` on the process that
writes the run directory, once training starts: ``config`` is the config as saved in ``config.yaml``
(interpolations as written, so no secret reaches a tracking server), ``first_epoch`` is 1, or the next
epoch when a run resumes. It returns an object with ``log_epoch(epoch: int, scalars: dict[str, float])``,
``log_hparams(hparams: dict[str, float | int | str | bool], metrics: dict[str, float])`` and ``close()``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from . import registry
from .errors import ConfigError
from .hookspecs import hookimpl

TENSORBOARD_DIR = "tensorboard"
NOT_SCALARS = ("epoch", "best")                      # record keys that are no measurement


def check_names(names, path: str = "train.loggers") -> None:
    """A `ConfigError` at the first name that no plugin registered as a logger."""
    for i, name in enumerate(names):
        if name not in registry.loggers:
            raise ConfigError(f"{path}[{i}]", f"unknown logger {name!r}", choices=registry.loggers.names(),
                              got=name)


def scalars(record: dict) -> dict[str, float]:
    """The finite numbers of an epoch record (losses, metrics, learning rate, time, NFE, memory)."""
    return {k: float(v) for k, v in record.items() if k not in NOT_SCALARS and isinstance(v, (int, float))
            and not isinstance(v, bool) and math.isfinite(v)}


def flatten(cfg, prefix: str = "") -> dict[str, float | int | str | bool]:
    """A nested config as dotted keys (``train.lr``); lists and nulls become their JSON text."""
    out = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = json.dumps(value, default=str)
    return out


class Loggers:
    """The loggers of one run, opened by name; each call goes to every one of them."""

    def __init__(self, names, run_dir, config: dict, first_epoch: int):
        check_names(names)
        self.items, self.config = [], config
        if run_dir is None:
            return
        for name in dict.fromkeys(names):
            factory = registry.loggers.get(name, "train.loggers")
            self.items.append(factory(run_dir=Path(run_dir), config=config, first_epoch=first_epoch))

    def epoch(self, record: dict) -> None:
        for item in self.items:
            item.log_epoch(int(record["epoch"]), scalars(record))

    def finish(self, results: dict) -> None:
        if not self.items:
            return
        metrics = {k: v for k, v in scalars(results).items()
                   if k.startswith(("test_", "val_")) or k in ("best_epoch", "epochs", "params")}
        hparams = flatten(self.config)
        for item in self.items:
            item.log_hparams(hparams, metrics)

    def close(self) -> None:
        for item in self.items:
            item.close()
        self.items = []


class TensorBoard:
    """Scalars per epoch and the hyperparameters with the final metrics, in ``<run>/tensorboard/``."""

    def __init__(self, run_dir: Path, first_epoch: int):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("train.loggers", "the tensorboard logger needs the tensorboard package: "
                              'pip install "hybridseq[tensorboard]"') from None
        path = run_dir / TENSORBOARD_DIR
        if path.is_symlink():
            raise ConfigError("train.loggers", f"{path} is a symbolic link; hybridseq never writes through one")
        # purge_step: a resumed run drops the events of epochs it trains again (logged before a kill)
        self.writer = SummaryWriter(str(path), purge_step=first_epoch if first_epoch > 1 else None)

    def log_epoch(self, epoch: int, scalars: dict[str, float]) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, epoch)
        self.writer.flush()

    def log_hparams(self, hparams: dict, metrics: dict[str, float]) -> None:
        # run_name ".": the hyperparameters sit beside the scalars instead of in a time-stamped folder
        self.writer.add_hparams(hparams, {f"hparam/{k}": v for k, v in metrics.items()}, run_name=".")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _tensorboard(*, run_dir: Path, config: dict, first_epoch: int) -> TensorBoard:
    return TensorBoard(run_dir, first_epoch)


@hookimpl
def hybridseq_register_loggers(register):
    register("tensorboard", _tensorboard)
