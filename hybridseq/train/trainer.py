"""The training loop: AdamW, cosine schedule, validation each epoch, early stopping, resumable run dirs.

A run directory holds ``config.yaml`` (the resolved config: task, widths from the data, every train
default), ``metrics.jsonl`` (one record per epoch), ``best.safetensors`` (weights of the best
validation epoch), ``last.pt`` (everything needed to resume) and, when training ends,
``results.json`` (best validation and test metrics, parameter count, time per epoch, NFE, peak
memory). Every file is written atomically; only rank 0 writes.
"""
from __future__ import annotations

import math
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from ..assemble import assemble
from ..config import as_written, check_interpolations
from ..errors import ConfigError
from ..io import append_jsonl, atomic_write_text, to_json
from . import ddp
from .checkpoint import CONFIG_FILE, load_weights, run_files, save_run
from .config import as_dict, batch_size, train_config
from .ddp import pick_device
from .evaluate import autocast, evaluate, model_input, total_nfe
from .guard import check_loss, claim_run_dir, release_run_dir
from .optim import configure_optimizer
from .state import load_state, peak_memory_mb, rng_state, save_state, seed_everything, set_rng_state
from .tasks import check_output, resolve

METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
HIGHER_IS_BETTER = {"accuracy", "macro_f1"}
MIN_LR_FACTOR = 0.1          # the cosine schedule ends at this fraction of train.lr


class Trainer:
    """Builds data, model and optimizer from a config; `fit` trains, `test` scores the best weights.

    ``splits`` (an object with ``train``/``val``/``test``/``info``) and ``collate`` replace
    ``hybridseq.data.load_data`` / ``collate`` (custom datasets, tests). ``on_epoch_end(epoch, record)``
    is called after each epoch's state is saved.
    """

    def __init__(self, cfg, run_dir=None, *, splits=None, collate=None, resume: bool = False,
                 compile: bool | None = None, progress: bool | None = None, on_epoch_end=None,
                 force: bool = False):
        cfg = check_interpolations(OmegaConf.create(cfg) if not isinstance(cfg, DictConfig) else cfg)
        if splits is None or collate is None:
            from .. import data

            splits = splits if splits is not None else data.load_data(cfg.get("data"), "data")
            collate = collate or data.collate
        self.splits, self.collate, self.info, self.on_epoch_end = splits, collate, splits.info, on_epoch_end
        self.cfg, self.task = resolve(cfg, self.info)
        self.tcfg = t = train_config(self.cfg.get("train"))
        t.compile = t.compile if compile is None else compile
        t.progress = t.progress if progress is None else progress
        self.cfg.train = as_dict(t)
        self.saved_cfg = as_written(self.cfg, cfg)        # what config.yaml holds: interpolations as written
        self.batch_size = batch_size(t, self.cfg.get("data"))
        self.monitor = t.monitor or self.task.monitor
        self.higher = self.monitor in HIGHER_IS_BETTER if t.monitor else self.task.higher_is_better
        self.width = getattr(self.info, self.task.width_key)
        self.has_val = self.splits.val is not None and len(self.splits.val) > 0
        self.select = t.select if t.select != "auto" else ("best" if self.has_val else "last")
        self._check_selection(t)

        self.device = pick_device(t.device)
        self.dist = ddp.setup(self.device)
        if self.device.type == "cuda" and self.dist.active:
            self.device = torch.device(self.dist.device)
        if self.batch_size % self.dist.world:
            raise ConfigError("train.batch_size", f"{self.batch_size} is not divisible by the {self.dist.world} "
                              "processes; the global batch is split evenly across them")
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.resume, self.force = resume, force
        self._check_run_dir()

        seed_everything(t.seed)
        self.model = assemble(self.cfg.model)
        if t.init_from:                                   # fine-tuning; a resumed state replaces these
            load_weights(self.model, self._init_weights(t.init_from), "train.init_from")
        self.model.to(self.device)
        check_output(self.model, self.task, self.info)
        self.net = self.model
        if self.dist.active:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=ids, find_unused_parameters=t.find_unused_parameters)
        if t.compile:
            unsafe = sorted({n.type for n in self.model.spec.nodes if not n.cls.compile_safe})
            if unsafe:
                warnings.warn(f"train.compile: blocks {unsafe} are not compile_safe; running uncompiled")
            else:
                self.net = torch.compile(self.net)
        self.opt = configure_optimizer(self.model, t.lr, t.weight_decay)
        per_rank = math.ceil(len(self.splits.train) / self.dist.world)
        self.steps_per_epoch = math.ceil(per_rank / (self.batch_size // self.dist.world))
        if t.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, t.max_steps_per_epoch)
        total = max(1, self.steps_per_epoch * t.epochs)

        def factor(step: int) -> float:
            if t.scheduler == "constant":
                return 1.0
            return MIN_LR_FACTOR + (1 - MIN_LR_FACTOR) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))

        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, factor)
        self.state = {"epoch": 0, "best": None, "best_epoch": None, "bad_epochs": 0, "stopped": False,
                      "history": []}
        if resume and self.run_dir is not None:
            self._restore()

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
    def _init_weights(path: str) -> Path:
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
    def _check_run_dir(self) -> None:
        if self.run_dir is None:
            return
        saved = self.run_dir / CONFIG_FILE
        if not self.resume and (self.run_dir / "last.pt").exists():
            raise ConfigError("--out", f"{self.run_dir} already holds a run; pass --resume to continue it "
                              "or choose another --out")
        if self.resume and saved.is_file():
            old = OmegaConf.to_container(OmegaConf.load(saved), resolve=True)
            new = OmegaConf.to_container(self.cfg, resolve=True)
            for key in ("task", "model", "data"):
                if old.get(key) != new.get(key):
                    raise ConfigError(key, f"differs from the config of the run being resumed in {self.run_dir}; "
                                      "only the train section may change on --resume")
        if self.dist.main:
            claim_run_dir(self.run_dir, force=self.force)

    def _restore(self) -> None:
        state = load_state(self.run_dir)
        if state is None:
            return
        self.model.load_state_dict(state.pop("model"))
        self.opt.load_state_dict(state.pop("optimizer"))
        self.sched.load_state_dict(state.pop("scheduler"))
        set_rng_state(state.pop("rng"))
        self.state = state
        if self.dist.main:   # records written after the saved state (a kill in between) are dropped
            atomic_write_text(self.run_dir / METRICS_FILE, "".join(
                to_json(r) + "\n" for r in state["history"]))

    def _write(self, fn, name: str | None, *args) -> None:
        """``fn(run_dir / name, *args)`` (or ``fn(run_dir, *args)``) on rank 0 when there is a run dir."""
        if self.run_dir is not None and self.dist.main:
            fn(self.run_dir / name if name else self.run_dir, *args)

    # -- training --------------------------------------------------------------------------------
    def _loader(self, dataset, epoch: int | None) -> DataLoader:
        """Training (``epoch`` given: this rank's shuffled share) or evaluation (in order) loader."""
        t = self.tcfg
        if epoch is None:
            return DataLoader(dataset, batch_size=self.batch_size, shuffle=False, collate_fn=self.collate,
                              num_workers=t.num_workers)
        sampler = DistributedSampler(dataset, num_replicas=self.dist.world, rank=self.dist.rank, shuffle=True,
                                     seed=t.seed)
        sampler.set_epoch(epoch)
        gen = torch.Generator().manual_seed(t.seed * 7919 + epoch)
        return DataLoader(dataset, batch_size=self.batch_size // self.dist.world, sampler=sampler,
                          collate_fn=self.collate, num_workers=t.num_workers, generator=gen)

    def _train_epoch(self, epoch: int) -> dict:
        t, device = self.tcfg, self.device
        self.net.train()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        loader = self._loader(self.splits.train, epoch)
        bar = tqdm(loader, total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{t.epochs}", leave=False,
                   disable=not (t.progress and self.dist.main), dynamic_ncols=True)
        loss_sum, nfe_sum, steps = 0.0, 0.0, 0
        for batch, targets in bar:
            batch, targets = batch.to(device), {k: v.to(device) for k, v in targets.items()}
            with self._unused_parameters_hint(), autocast(device, t.bf16):
                pred = self.net(model_input(self.model, batch)).x
            loss = self.task.loss(pred, targets)
            value = check_loss(loss, self.model, model_input(self.model, batch), targets, epoch + 1, steps + 1)
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

    def _validate(self) -> dict:
        metrics = None
        if self.dist.main:
            metrics = evaluate(self.model, self.task, self._loader(self.splits.val, None), self.width, self.device,
                               self.tcfg.bf16)
            if self.monitor not in metrics:
                raise ConfigError("train.monitor", f"unknown metric {self.monitor!r}", choices=metrics,
                                  got=self.monitor)
        return ddp.broadcast(metrics, self.dist)

    def fit(self) -> dict:
        """Train until ``train.epochs`` or early stopping; then score the best weights on the test split."""
        t, s = self.tcfg, self.state
        self._write(atomic_write_text, CONFIG_FILE, OmegaConf.to_yaml(self.saved_cfg))
        if self.dist.main and t.progress:
            params = sum(p.numel() for p in self.model.parameters())
            tqdm.write(f"{self.task.name} on {self.info.name}: {params:,} parameters, device {self.device}, "
                       f"{self.dist.world} process(es), from epoch {s['epoch'] + 1} of {t.epochs}"
                       + (f" -> {self.run_dir}" if self.run_dir else ""))
        while s["epoch"] < t.epochs and not s["stopped"]:
            epoch, start = s["epoch"], time.perf_counter()
            record = {"epoch": epoch + 1, **self._train_epoch(epoch)}
            if self.has_val:
                val = self._validate()
                record.update({f"val_{k}": v for k, v in val.items() if k != "nfe"})
            improved = self._improved(record)
            if improved:
                s.update(best=record.get(f"val_{self.monitor}"), best_epoch=epoch + 1, bad_epochs=0)
                self._write(save_run, None, self.saved_cfg, self.model, "best")
            else:
                s["bad_epochs"] += 1
            s["stopped"] = bool(t.patience and s["bad_epochs"] >= t.patience)
            mem, kind = peak_memory_mb(self.device)
            record.update(epoch_time=time.perf_counter() - start, peak_mem_mb=mem, mem_kind=kind, best=improved)
            s["history"].append(record)
            s["epoch"] = epoch + 1
            self._write(self._save, None, record)
            if self.dist.main and t.progress:
                tqdm.write(format_record(record, self.monitor))
            if self.on_epoch_end is not None:
                self.on_epoch_end(epoch + 1, record)
        return self.finish()

    def _improved(self, record: dict) -> bool:
        """Whether this epoch's weights become the selected ones (every epoch under ``select: last``)."""
        if self.select == "last":
            return True
        best, score = self.state["best"], record[f"val_{self.monitor}"]
        return best is None or (score > best if self.higher else score < best)

    def _save(self, run_dir: Path, record: dict) -> None:
        save_state(run_dir, {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                                  "scheduler": self.sched.state_dict(), "rng": rng_state(), **self.state})
        append_jsonl(run_dir / METRICS_FILE, record)

    def finish(self) -> dict:
        """Load the selected weights, score them on the test split and write ``results.json``.

        ``best_epoch`` is the epoch whose weights were selected: the best validation epoch, or the last
        one under ``select: last`` (the rule when there is no validation split)."""
        s, hist = self.state, self.state["history"]
        if self.run_dir is not None and (self.run_dir / "best.safetensors").is_file():
            load_weights(self.model, self.run_dir / "best.safetensors", str(self.run_dir / "best.safetensors"))
        best = next((r for r in hist if r["epoch"] == s["best_epoch"]), {})
        results = {"task": self.task.name, "monitor": f"val_{self.monitor}" if self.has_val else None,
                   "selection": "best_val" if self.select == "best" else "last_epoch",
                   "val_cases": len(self.splits.val) if self.has_val else 0, "epochs": s["epoch"],
                   "best_epoch": s["best_epoch"], "stopped_early": s["stopped"],
                   "params": sum(p.numel() for p in self.model.parameters()),
                   "time_per_epoch": sum(r["epoch_time"] for r in hist) / max(len(hist), 1),
                   "nfe": sum(r["nfe"] for r in hist) / max(len(hist), 1),
                   "peak_mem_mb": max((r["peak_mem_mb"] for r in hist), default=0.0),
                   "mem_kind": hist[-1]["mem_kind"] if hist else None, "device": str(self.device),
                   "world_size": self.dist.world, **{k: v for k, v in best.items() if k.startswith("val_")}}
        if self.splits.test is not None and len(self.splits.test) and self.dist.main:
            test = evaluate(self.model, self.task, self._loader(self.splits.test, None), self.width, self.device,
                            self.tcfg.bf16)
            results.update({f"test_{k}": v for k, v in test.items() if k != "nfe"})
        results["curves"] = {k: [r.get(k) for r in hist] for k in ("train_loss", f"val_{self.monitor}", "val_loss")
                             if any(k in r for r in hist)}
        self._write(atomic_write_text, RESULTS_FILE, to_json(results, indent=2))
        return results

    def close(self) -> None:
        if self.run_dir is not None and self.dist.main:
            release_run_dir(self.run_dir)
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
