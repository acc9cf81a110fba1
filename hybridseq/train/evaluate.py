"""Scoring a saved run: reload its checkpoint with its config, optionally on changed data, on one split."""
from __future__ import annotations

import json
from pathlib import Path

from ..config import apply_overrides
from ..errors import ConfigError
from ..io import atomic_write_text
from .checkpoint import load_run
from .config import batch_size, train_config
from .tasks import check_output, resolve
from .trainer import evaluate, pick_device

SPLITS = ("train", "val", "test")


def evaluate_run(run_dir, data_overrides=(), split: str = "test", name: str = "best", *, splits=None,
                 collate=None, write: bool = True) -> dict:
    """Metrics of run ``run_dir``'s ``name`` checkpoint on ``split``.

    ``data_overrides`` are ``key=value`` items applied under ``data.`` (e.g. ``irregular.drop=0.7`` to
    score at another drop ratio). The result is also written to ``eval_<split>.json`` in the run dir.
    """
    if split not in SPLITS:
        raise ConfigError("--split", f"invalid value {split!r}", choices=SPLITS, got=split)
    cfg, model = load_run(run_dir, name)
    apply_overrides(cfg, [f"data.{item.lstrip('+')}" for item in data_overrides])
    if splits is None or collate is None:
        from .. import data

        splits = splits if splits is not None else data.load_data(cfg.get("data"), "data")
        collate = collate or data.collate
    cfg, task = resolve(cfg, splits.info)
    check_output(model, task, splits.info)
    tcfg = train_config(cfg.get("train"))
    dataset = getattr(splits, split)
    if dataset is None or not len(dataset):
        raise ConfigError("--split", f"dataset '{splits.info.name}' has no {split} split")
    from torch.utils.data import DataLoader

    device = pick_device(tcfg.device)
    loader = DataLoader(dataset, batch_size=batch_size(tcfg, cfg.get("data")), collate_fn=collate)
    metrics = evaluate(model.to(device), task, loader, getattr(splits.info, task.width_key), device, tcfg.bf16)
    result = {"run": str(run_dir), "checkpoint": name, "split": split, "task": task.name,
              "data_overrides": list(data_overrides), **metrics}
    if write:
        atomic_write_text(Path(run_dir) / f"eval_{split}.json", json.dumps(result, indent=2))
    return result
