"""Evaluation: a model's loss and metrics over a loader, and scoring a saved run (its checkpoint with its
config, optionally on changed data, on one split)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from ..assemble import HybridModel
from ..config import apply_overrides
from ..errors import ConfigError
from ..io import atomic_write_text, to_json
from .checkpoint import load_run
from .config import batch_size, train_config
from .ddp import pick_device
from .tasks import Task, check_output, resolve

SPLITS = ("train", "val", "test")


def model_input(model: HybridModel, batch):
    """What ``model`` takes from a collated `IrregularBatch`: itself, or a `Seq` of observed values
    (unobserved entries zeroed) when the model's input kind is ``sequence``."""
    if model.spec.input_kind == "sequence":
        observed = batch.mask & batch.valid[..., None]                       # [B, N, C]
        return batch.seq(torch.where(observed, batch.values, torch.zeros_like(batch.values)))
    return batch


def autocast(device: torch.device, bf16: bool):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda")


@torch.no_grad()
def evaluate(model: HybridModel, task: Task, loader, width: int, device: torch.device, bf16: bool = False) -> dict:
    """Loss and the task's metrics of ``model`` over ``loader``; also the mean NFE per forward."""
    was_training = model.training
    model.eval()
    meter, nfe, steps = task.meter(width), 0.0, 0
    for batch, targets in loader:
        batch, targets = batch.to(device), {k: v.to(device) for k, v in targets.items()}
        with autocast(device, bf16):
            pred = model(model_input(model, batch)).x
        loss = task.loss(pred, targets)
        task.update(meter, pred, targets, float(loss))
        nfe, steps = nfe + total_nfe(model), steps + 1
    model.train(was_training)
    return {**meter.compute(), "nfe": nfe / max(steps, 1)}


def total_nfe(model: HybridModel) -> int:
    return sum(int(s.get("nfe", 0)) for s in model.stats().values())


def eval_file_name(split: str, name: str = "best", overrides=(), data_overrides=()) -> str:
    """``eval_<split>.json`` for the plain checkpoint; a digest of what differs otherwise."""
    changes = [*overrides, *(f"data.{d}" for d in data_overrides)] + ([f"checkpoint={name}"] if name != "best" else [])
    if not changes:
        return f"eval_{split}.json"
    digest = hashlib.sha1("\n".join(changes).encode()).hexdigest()[:8]
    return f"eval_{split}-{digest}.json"


def evaluate_run(run_dir, data_overrides=(), split: str = "test", name: str = "best", *, overrides=(),
                 splits=None, collate=None, write: bool = True) -> dict:
    """Metrics of run ``run_dir``'s ``name`` checkpoint on ``split``.

    ``data_overrides`` are ``key=value`` items applied under ``data.`` (e.g. ``irregular.drop=0.7`` to
    score at another drop ratio); ``overrides`` are full dotlist items applied to the saved config before
    the model is built, e.g. ``model.blocks[0].steps=16`` for a continuous-depth head evaluated at another
    depth (they must keep every parameter's shape). The result is also written to ``eval_<split>.json``
    (``eval_<split>-<digest>.json`` when any override is given, so that scores under other settings do
    not overwrite each other; the file records its overrides).
    """
    if split not in SPLITS:
        raise ConfigError("--split", f"invalid value {split!r}", choices=SPLITS, got=split)
    cfg, model = load_run(run_dir, name, list(overrides))
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
              "overrides": list(overrides), "data_overrides": list(data_overrides), **metrics}
    if write:
        atomic_write_text(Path(run_dir) / eval_file_name(split, name, overrides, data_overrides), to_json(result, indent=2))
    return result
