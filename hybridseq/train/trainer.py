"""The training loop: AdamW over parameter groups, a schedule, validation, early stopping, resumable run dirs.

`Trainer` builds a run with `prepare` (data, task, config, model), places it on its device (and under
DDP or ``torch.compile`` when asked), and takes its optimiser from `configure_optimizer`, its selection
rule from `EarlyStopping` and its files from `RunDir` (see ``checkpoint.py`` for what a run directory
holds). `fit` is the loop. Only rank 0 writes.
"""
from __future__ import annotations

import math
import time
import warnings
from contextlib import contextmanager

import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from ..config import as_written
from ..errors import ConfigError
from ..loggers import Loggers
from . import ddp
from .checkpoint import RunDir, load_weights, run_files
from .ddp import pick_device
from .evaluate import autocast, evaluate, total_nfe
from .guard import check_loss, claim_run_dir, release_run_dir
from .optim import configure_optimizer, lr_schedule
from .prepare import prepare
from .state import peak_memory_mb, rng_state, set_rng_state
from .stopping import EarlyStopping


class Trainer:
    """Builds data, model and optimizer from a config; `fit` trains, then scores the selected weights.

    ``splits`` (an object with ``train``/``val``/``test``/``info``) and ``collate`` replace
    ``hybridseq.data.load_data`` / ``collate`` (custom datasets, tests). ``on_epoch_end(epoch, record)``
    is called after each epoch's state is saved.
    """

    def __init__(self, cfg, run_dir=None, *, splits=None, collate=None, resume: bool = False,
                 compile: bool | None = None, progress: bool | None = None, on_epoch_end=None,
                 force: bool = False):
        self.prep = p = prepare(cfg, splits=splits, collate=collate).require_data()
        t = self.tcfg = p.tcfg
        t.compile = t.compile if compile is None else compile
        t.progress = t.progress if progress is None else progress
        p.cfg.train.compile, p.cfg.train.progress = t.compile, t.progress
        self.cfg, self.task, self.splits, self.model = p.cfg, p.task, p.splits, p.model
        self.on_epoch_end, self.batch_size, self.force = on_epoch_end, p.batch_size, force
        self.saved_cfg = as_written(self.cfg, cfg)        # what config.yaml holds: interpolations as written
        self.has_val = self.splits.val is not None and len(self.splits.val) > 0
        self.monitor = t.monitor or self.task.monitor
        self.select = t.select if t.select != "auto" else ("best" if self.has_val else "last")
        self._check_selection(t)
        self.stopping = EarlyStopping(self.monitor, self.task.higher_is_better(self.monitor), self.select,
                                      t.patience)

        self.device = pick_device(t.device)
        self.dist = ddp.setup(self.device)
        if self.device.type == "cuda" and self.dist.active:
            self.device = torch.device(self.dist.device)
        if self.batch_size % self.dist.world:
            raise ConfigError("train.batch_size", f"{self.batch_size} is not divisible by the {self.dist.world} "
                              "processes; the global batch is split evenly across them")
        self.run = RunDir(run_dir, writer=self.dist.main)
        self._check_run_dir(resume)
        if t.init_from:                                   # fine-tuning; a resumed state replaces these
            load_weights(self.model, self._init_weights(t.init_from), "train.init_from")
        self.model.to(self.device)
        self.net = self._wrap(t)
        self.opt = configure_optimizer(self.model, t.lr, t.weight_decay)
        per_rank = math.ceil(len(self.splits.train) / self.dist.world)
        self.steps_per_epoch = math.ceil(per_rank / (self.batch_size // self.dist.world))
        if t.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, t.max_steps_per_epoch)
        self.sched = lr_schedule(self.opt, t.scheduler, max(1, self.steps_per_epoch * t.epochs))
        self.epoch, self.history, self.loggers = 0, [], Loggers((), None, {}, 1)   # opened by fit
        if resume:
            self._restore()

    def _wrap(self, t):
        """The module that trains: the model, under DDP across processes, compiled when asked."""
        net = self.model
        if self.dist.active:
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = torch.nn.parallel.DistributedDataParallel(net, device_ids=ids,
                                                            find_unused_parameters=t.find_unused_parameters)
        if t.compile:
            unsafe = sorted({n.type for n in self.model.spec.nodes if not n.cls.compile_safe})
            if unsafe:
                warnings.warn(f"train.compile: blocks {unsafe} are not compile_safe; running uncompiled",
                              stacklevel=3)
            else:
                net = torch.compile(net)
        return net

    def _check_selection(self, t) -> None:
        """Best-epoch selection and early stopping need a validation split to judge epochs on."""
        if self.has_val:
            return
        why = (f"there is no validation split ({len(self.splits.train)} training cases; data.val_fraction=null "
               f"holds out 20% only when that is at least 30 cases; set data.val_fraction to force one)")
        if t.select == "best":
            raise ConfigError("train.select", f"'best' needs a validation split, but {why}", choices=("auto", "last"))
        if t.patience:
            raise ConfigError("train.patience", f"early stopping needs a validation split, but {why}; set "
                              "train.patience=null to train every epoch and keep the last", got=t.patience)

    @staticmethod
    def _init_weights(path: str):
        try:
            return run_files(path)[0]
        except FileNotFoundError as err:
            raise ConfigError("train.init_from", str(err), got=path) from None

    @contextmanager
    def _unused_parameters_hint(self):
        """DDP reports parameters left without gradient at the next forward; name the setting."""
        try:
            yield
        except RuntimeError as err:
            if self.dist.active and "find_unused_parameters" in str(err):
                raise ConfigError("train.find_unused_parameters", "some model parameters got no gradient in "
                                  "a training step (a node whose output nothing uses, or a block that skips "
                                  "parameters), which data-parallel training must be told: set "
                                  "train.find_unused_parameters=true") from err
            raise

    # -- run directory ---------------------------------------------------------------------------
    def _check_run_dir(self, resume: bool) -> None:
        if not resume and self.run.holds_run():
            raise ConfigError("--out", f"{self.run} already holds a run; pass --resume to continue it "
                              "or choose another --out")
        old = self.run.saved_config() if resume else None
        if old is not None:
            new = OmegaConf.to_container(self.cfg, resolve=True)
            for key in ("task", "model", "data"):
                if old.get(key) != new.get(key):
                    raise ConfigError(key, f"differs from the config of the run being resumed in {self.run}; "
                                      "only the train section may change on --resume")
        if self.run and self.dist.main:
            claim_run_dir(self.run.path, force=self.force)

    def _restore(self) -> None:
        state = self.run.load_state()
        if state is None:
            return
        self.model.load_state_dict(state.pop("model"))
        self.opt.load_state_dict(state.pop("optimizer"))
        self.sched.load_state_dict(state.pop("scheduler"))
        set_rng_state(state.pop("rng"))
        self.epoch, self.history = state.pop("epoch"), state.pop("history")
        self.stopping.load_state_dict(state)
        self.run.rewrite_metrics(self.history)   # records written after the saved state (a kill) are dropped

    def _state(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "rng": rng_state(), "epoch": self.epoch,
                "history": self.history, **self.stopping.state_dict()}

    # -- training --------------------------------------------------------------------------------
    def _loader(self, dataset, epoch: int | None) -> DataLoader:
        """Training (``epoch`` given: this rank's shuffled share) or evaluation (in order) loader."""
        t, collate = self.tcfg, self.prep.collate
        if epoch is None:
            return DataLoader(dataset, batch_size=self.batch_size, shuffle=False, collate_fn=collate,
                              num_workers=t.num_workers)
        sampler = DistributedSampler(dataset, num_replicas=self.dist.world, rank=self.dist.rank, shuffle=True,
                                     seed=t.seed)
        sampler.set_epoch(epoch)
        gen = torch.Generator().manual_seed(t.seed * 7919 + epoch)
        return DataLoader(dataset, batch_size=self.batch_size // self.dist.world, sampler=sampler,
                          collate_fn=collate, num_workers=t.num_workers, generator=gen)

    def _train_epoch(self, epoch: int) -> dict:
        t, device = self.tcfg, self.device
        self.net.train()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        bar = tqdm(self._loader(self.splits.train, epoch), total=self.steps_per_epoch, leave=False,
                   desc=f"epoch {epoch + 1}/{t.epochs}", disable=not (t.progress and self.dist.main),
                   dynamic_ncols=True)
        loss_sum, nfe_sum, steps = 0.0, 0.0, 0
        for batch, targets in bar:
            batch, targets = batch.to(device), {k: v.to(device) for k, v in targets.items()}
            with self._unused_parameters_hint(), autocast(device, t.bf16, t.bf16_cpu):
                out = self.net(batch)
            loss, _ = self.task.objective(out, targets)        # the task's loss, or the head's bound
            aux = self.model.aux_loss()                      # blocks' auxiliary losses (Block.aux_loss)
            loss = loss if aux is None else loss + aux
            value = check_loss(loss, self.model, batch, targets, epoch + 1, steps + 1)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if t.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
            self.opt.step()
            self.sched.step()
            loss_sum, nfe_sum, steps = loss_sum + value, nfe_sum + total_nfe(self.model), steps + 1
            bar.set_postfix(loss=f"{loss_sum / steps:.4f}")
            if steps >= self.steps_per_epoch:
                break
        bar.close()
        return {"train_loss": ddp.mean(loss_sum / max(steps, 1), self.dist),
                "nfe": ddp.mean(nfe_sum / max(steps, 1), self.dist), "lr": self.sched.get_last_lr()[0]}

    def _score(self, dataset) -> dict:
        """The task's metrics (and mean NFE) of the model on ``dataset``, computed on rank 0."""
        return evaluate(self.model, self.task, self._loader(dataset, None), self.prep.width, self.device,
                        self.tcfg.bf16, self.tcfg.bf16_cpu)

    def _validate(self) -> dict:
        metrics = None
        if self.dist.main:
            metrics = self._score(self.splits.val)
            if self.monitor not in metrics:
                raise ConfigError("train.monitor", f"unknown metric {self.monitor!r}", choices=metrics,
                                  got=self.monitor)
        return ddp.broadcast(metrics, self.dist)

    def fit(self) -> dict:
        """Train until ``train.epochs`` or early stopping; then score the selected weights on the test split."""
        t = self.tcfg
        self.run.write_config(self.saved_cfg)
        self.run.write_vocabulary(self.prep.info)
        self.loggers = Loggers(t.loggers, self.run.path if self.run.writes else None,
                               OmegaConf.to_container(self.saved_cfg, resolve=False), self.epoch + 1)
        self._announce()
        while self.epoch < t.epochs and not self.stopping.stopped:
            start = time.perf_counter()
            record = {"epoch": self.epoch + 1, **self._train_epoch(self.epoch)}
            if self.has_val:
                record.update({f"val_{k}": v for k, v in self._validate().items() if k != "nfe"})
            improved = self.stopping.step(self.epoch + 1, record)
            if improved:
                self.run.save_weights(self.model)
            mem, kind = peak_memory_mb(self.device)
            record.update(epoch_time=time.perf_counter() - start, peak_mem_mb=mem, mem_kind=kind, best=improved)
            self.history.append(record)
            self.epoch += 1
            self.run.save_epoch(self._state(), record)
            self.loggers.epoch(record)
            if self.dist.main and t.progress:
                tqdm.write(format_record(record, self.monitor))
            if self.on_epoch_end is not None:
                self.on_epoch_end(self.epoch, record)
        return self.finish()

    def _announce(self) -> None:
        if self.dist.main and self.tcfg.progress:
            params = sum(p.numel() for p in self.model.parameters())
            tqdm.write(f"{self.task.name} on {self.prep.info.name}: {params:,} parameters, device {self.device}, "
                       f"{self.dist.world} process(es), from epoch {self.epoch + 1} of {self.tcfg.epochs}"
                       + (f" -> {self.run}" if self.run else ""))

    def finish(self) -> dict:
        """Load the selected weights, score them on the test split and write ``results.json``.

        ``best_epoch`` is the epoch whose weights were selected: the best validation epoch, or the last
        one under ``select: last`` (the rule when there is no validation split)."""
        hist, stop = self.history, self.stopping
        self.run.load_selected(self.model, self.device)
        best = next((r for r in hist if r["epoch"] == stop.best_epoch), {})
        results = {"task": self.task.name, "monitor": f"val_{self.monitor}" if self.has_val else None,
                   "selection": "best_val" if self.select == "best" else "last_epoch",
                   "val_cases": len(self.splits.val) if self.has_val else 0, "epochs": self.epoch,
                   "best_epoch": stop.best_epoch, "stopped_early": stop.stopped,
                   "params": sum(p.numel() for p in self.model.parameters()),
                   "time_per_epoch": sum(r["epoch_time"] for r in hist) / max(len(hist), 1),
                   "nfe": sum(r["nfe"] for r in hist) / max(len(hist), 1),
                   "peak_mem_mb": max((r["peak_mem_mb"] for r in hist), default=0.0),
                   "mem_kind": hist[-1]["mem_kind"] if hist else None, "device": str(self.device),
                   "world_size": self.dist.world, **{k: v for k, v in best.items() if k.startswith("val_")}}
        if getattr(self.prep.info, "source", None):
            results["data_source"] = dict(self.prep.info.source)
        if self.splits.test is not None and len(self.splits.test) and self.dist.main:
            results.update({f"test_{k}": v for k, v in self._score(self.splits.test).items() if k != "nfe"})
        results["curves"] = {k: [r.get(k) for r in hist] for k in ("train_loss", f"val_{self.monitor}", "val_loss")
                             if any(k in r for r in hist)}
        self.run.write_results(results)
        self.loggers.finish(results)
        return results

    def close(self) -> None:
        self.loggers.close()
        if self.run and self.dist.main:
            release_run_dir(self.run.path)
        ddp.teardown(self.dist)


def format_record(record: dict, monitor: str) -> str:
    keys = ["train_loss", "val_loss", f"val_{monitor}"] + [k for k in record if k.startswith("val_")
                                                          and k not in ("val_loss", f"val_{monitor}")]
    parts = [f"epoch {record['epoch']:>3}"] + [f"{k} {record[k]:.4f}" for k in keys if k in record]
    parts += [f"{record['epoch_time']:.1f}s", f"nfe {record['nfe']:.0f}", f"mem {record['peak_mem_mb']:.0f}MB"]
    return "  ".join(parts) + ("  *" if record.get("best") else "")


def train(cfg, run_dir=None, **kwargs) -> dict:
    """Train ``cfg`` (a config, see `Trainer`) into ``run_dir``; returns the final results."""
    trainer = Trainer(cfg, run_dir, **kwargs)
    try:
        return trainer.fit()
    finally:
        trainer.close()
