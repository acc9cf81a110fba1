"""Evaluation: a model's loss and metrics over a loader, and scoring a saved run (its checkpoint with its
config, optionally on changed data, on one split)."""
from __future__ import annotations

import torch

from ..assemble import HybridModel
from ..config import apply_overrides, load_config
from ..errors import ConfigError
from ..tasks import Task
from .checkpoint import RunDir, load_weights, run_files
from .ddp import pick_device
from .prepare import prepare

SPLITS = ("train", "val", "test")


def autocast(device: torch.device, bf16: bool, cpu: bool = False):
    """bfloat16 autocast when ``bf16``, on CUDA (and on CPU when ``cpu``: ``train.bf16_cpu``)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                          enabled=bf16 and (device.type == "cuda" or cpu))


@torch.no_grad()
def evaluate(model: HybridModel, task: Task, loader, width: int, device: torch.device, bf16: bool = False,
             bf16_cpu: bool = False) -> dict:
    """Loss and the task's metrics of ``model`` over ``loader``; also the mean NFE per forward, and the
    per-series mean of each term of a likelihood head's bound (`Task.objective`: ``elbo``, ``kl``, …)."""
    was_training = model.training
    model.eval()
    meter, nfe, steps = task.meter(width), 0.0, 0
    term_sums, cases = {}, 0
    for batch, targets in loader:
        batch, targets = batch.to(device), {k: v.to(device) for k, v in targets.items()}
        with autocast(device, bf16, bf16_cpu):
            out = model(batch)
        loss, terms = task.objective(out, targets)
        task.update(meter, out.x, targets, float(loss))
        n = out.x.shape[0]
        for key, value in terms.items():
            term_sums[key] = term_sums.get(key, 0.0) + float(value) * n
        nfe, steps, cases = nfe + total_nfe(model), steps + 1, cases + n
    model.train(was_training)
    return {**meter.compute(), **{k: v / cases for k, v in term_sums.items()}, "nfe": nfe / max(steps, 1)}


def total_nfe(model: HybridModel) -> int:
    return sum(int(s.get("nfe", 0)) for s in model.stats().values())


def evaluate_run(run_dir, data_overrides=(), split: str = "test", name: str = RunDir.SELECTED, *, overrides=(),
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
    weights, config = run_files(run_dir, name)
    cfg = load_config(config, list(overrides))
    apply_overrides(cfg, [f"data.{item.lstrip('+')}" for item in data_overrides])
    prep = prepare(cfg, splits=splits, collate=collate).require_data()
    load_weights(prep.model, weights, "overrides" if overrides else str(weights))
    dataset = getattr(prep.splits, split)
    if dataset is None or not len(dataset):
        raise ConfigError("--split", f"dataset '{prep.info.name}' has no {split} split")
    from torch.utils.data import DataLoader

    device = pick_device(prep.tcfg.device)
    loader = DataLoader(dataset, batch_size=prep.batch_size, collate_fn=prep.collate)
    metrics = evaluate(prep.model.to(device), prep.task, loader, prep.width, device, prep.tcfg.bf16,
                       prep.tcfg.bf16_cpu)
    result = {"run": str(run_dir), "checkpoint": name, "split": split, "task": prep.task.name,
              "overrides": list(overrides), "data_overrides": list(data_overrides), **metrics}
    if write:
        run = RunDir(run_dir)
        changes = [*overrides, *(f"data.{d}" for d in data_overrides)]
        changes += [f"checkpoint={name}"] if name != RunDir.SELECTED else []
        run.write_json(run.evaluation(split, changes), result)
    return result
