"""Running a sweep: an executor trains the runs; the driver (this process) alone records each result.

Each run trains into ``<out>/runs/<variant>-seed<k>-<run_id>/`` (a normal run directory, so an interrupted
run resumes from its last epoch). The driver composes each run's config and hands it to the executor
with the run directory (`Task`), so a worker needs neither the sweep file nor the base config files.
A run that raises is recorded with its error and the sweep goes on. Only the driver appends to the
results store, one line per run, so a kill at any moment loses at most the runs in flight; a re-run
skips every run already recorded.

Executors: `InProcess` (``workers=0``), `ProcessPool` (spawned worker processes on this machine) and
`hybridseq.ablate.ray_executor.RayExecutor` (Ray tasks, on this machine or a cluster). Each is a
context manager whose ``map(tasks)`` yields ``(record, progress)`` as runs finish, in any order;
``record`` is None for a progress report alone.
"""
from __future__ import annotations

import multiprocessing
import os
import socket
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import yaml
from omegaconf import OmegaConf

from ..io import atomic_write_text
from ..train.guard import claim_run_dir, exit_with_parent, release_run_dir
from .resources import gpu_of
from .store import ResultStore
from .sweep import Run, Sweep, check_runs

TRACEBACK_LINES = 15     # lines of traceback kept in a failure record


@dataclass
class Task:
    """One run as an executor receives it: plain data, picklable, with no path to the sweep's files."""
    run: Run
    config: dict              # the composed config (OmegaConf container, unresolved)
    run_dir: str


def failure(err: BaseException) -> dict:
    tail = traceback.format_exception(type(err), err, err.__traceback__)
    lines = "".join(tail).rstrip().splitlines()[-TRACEBACK_LINES:]
    return {"status": "failed", "error": {"type": type(err).__name__, "message": str(err),
                                          "traceback": "\n".join(lines)}}


def failed_record(task: Task, err: BaseException) -> dict:
    """The record of a run whose worker never returned (it died, or its machine was lost)."""
    return {**task.run.as_dict(), "run_dir": task.run_dir, **failure(err), "wall_s": None}


def run_task(task: Task, threads: int | None = None) -> dict:
    """Train one run (in a worker); never raises: errors become the record. ``threads`` sets torch's
    intra-op threads. The record says where it ran (``worker``: host, pid, threads, visible GPUs)."""
    import torch

    from ..train.checkpoint import RunDir
    from ..train.trainer import train

    if threads:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    run_dir = Path(task.run_dir)
    record = {**task.run.as_dict(), "run_dir": str(run_dir),
              "worker": {"host": socket.gethostname(), "pid": os.getpid(), "threads": torch.get_num_threads(),
                         "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}}
    try:
        results = train(OmegaConf.create(task.config), run_dir, resume=RunDir(run_dir).holds_run(),
                        progress=False)
        record.update(status="ok", **results)
    except Exception as err:  # a failing run is data for the summary, not the end of the sweep
        record.update(failure(err))
    record["wall_s"] = time.perf_counter() - start
    return record


class InProcess:
    """Runs one after another in this process (no isolation; handy for debugging)."""

    def __init__(self, threads: int | None = None):
        self.threads = threads

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def map(self, tasks: list[Task]) -> Iterator[tuple[dict, str]]:
        for k, task in enumerate(tasks):
            yield run_task(task, self.threads), f"running 0, queued {len(tasks) - k - 1}"


def _init_worker(slots, gpus: list[str], threads: int, parent: int) -> None:
    """Each spawned worker takes the next slot: its GPU (round robin) and its thread count, set in the
    environment before torch first touches CUDA or OpenMP; it exits when the driver ``parent`` dies."""
    exit_with_parent(parent)
    gpu = gpu_of(slots.get(), gpus)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    os.environ["OMP_NUM_THREADS"] = str(threads)


class ProcessPool:
    """Spawned worker processes on this machine, each with ``threads`` torch threads and, when ``gpus``
    are listed, one GPU of its own (round robin when there are more workers than GPUs).

    A worker that dies (killed, out of memory) breaks the whole pool; its runs are then tried again one
    by one, each in a fresh worker, so only the run that kills its worker is recorded as failed."""

    def __init__(self, workers: int, threads: int, gpus: list[str] = ()):
        self.workers, self.threads, self.gpus = workers, threads, list(gpus)
        self.ctx = multiprocessing.get_context("spawn")
        self.pool = None

    def _pool(self, workers: int) -> ProcessPoolExecutor:
        slots = self.ctx.Queue()
        for k in range(workers):
            slots.put(k)
        return ProcessPoolExecutor(max_workers=workers, mp_context=self.ctx, initializer=_init_worker,
                                   initargs=(slots, self.gpus, self.threads, os.getpid()))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
        return False

    def map(self, tasks: list[Task]) -> Iterator[tuple[dict, str]]:
        if not tasks:
            return
        if self.pool is None:
            self.pool = self._pool(self.workers)
        futures = {self.pool.submit(run_task, task, self.threads): task for task in tasks}
        crashed = []
        left = len(futures)
        for fut in as_completed(futures):
            task = futures[fut]
            left -= 1
            try:
                record = fut.result()
            except BrokenProcessPool:     # a worker died: every run in flight or queued fails with it
                crashed.append(task)
                continue
            except Exception as err:      # the run could not reach its worker or come back from it
                record = failed_record(task, err)
            yield record, f"running {min(left, self.workers)}, queued {max(left - self.workers, 0)}"
        if crashed:
            self.pool.shutdown(cancel_futures=True)
            self.pool = None
        for k, task in enumerate(crashed):   # alone in a fresh worker each: only the run that kills it fails
            with self._pool(1) as pool:
                try:
                    record = pool.submit(run_task, task, self.threads).result()
                except Exception as err:
                    record = failed_record(task, err)
            yield record, f"running 0, queued {len(crashed) - k - 1} (retried alone)"


def _line(k: int, total: int, failed: int, record: dict, metric: str | None, progress: str) -> str:
    tune = record.get("tune")
    trial = f" ({'selected ' * ('trials' in tune)}trial {tune['trial']})" if tune else ""
    head = f"[{k}/{total}{f', {failed} failed' if failed else ''}] {record['variant']} seed {record['seed']}{trial}:"
    tail = f" | {progress}" if progress else ""
    if record["status"] != "ok":
        err = record["error"]
        return f"{head} FAILED {err['type']}: {err['message'].splitlines()[0] if err['message'] else ''}{tail}"
    key = metric if metric in record else next((m for m in record if m.startswith("test_") and m != "test_loss"), None)
    value = f" {key} {record[key]:.4f}" if key else ""
    return f"{head} ok{value} ({record['wall_s']:.1f}s){tail}"


class Driver:
    """Hands unfinished runs to an executor and records what comes back (the store's only writer)."""

    def __init__(self, sweep: Sweep, out_dir, executor, *, part: str | None = None, retry_failed: bool = False,
                 echo=print):
        self.sweep, self.out, self.executor, self.echo = sweep, Path(out_dir), executor, echo
        self.store = ResultStore(out_dir, part)
        self.retry_failed = retry_failed

    def run(self, runs: list[Run], notes: dict[str, dict] | None = None) -> dict[str, dict]:
        """Train those of ``runs`` not yet recorded (none without an executor); ``notes`` (run id ->
        fields) are added to their records. Returns the latest record of each of ``runs`` that has one."""
        latest = self.store.latest()
        if self.executor is None:
            return {r.run_id: latest[r.run_id] for r in runs if r.run_id in latest}
        done = {rid for rid, r in latest.items() if r.get("status") == "ok" or not self.retry_failed}
        unique = list({r.run_id: r for r in runs}.values())     # two trials may propose the same setting
        todo = [r for r in unique if r.run_id not in done]
        if len(todo) < len(unique):
            self.echo(f"{len(unique) - len(todo)} of {len(unique)} runs already recorded in {self.out}; "
                      f"running {len(todo)}")
        atomic_write_text(self.out / "sweep.yaml", yaml.safe_dump(self.sweep.as_dict(), sort_keys=False))
        tasks = [Task(r, OmegaConf.to_container(self.sweep.config(r)), str(self.out / "runs" / r.dir_name))
                 for r in todo]
        count = failed = 0
        for record, progress in self.executor.map(tasks):
            if record is None:
                self.echo(f"[{count}/{len(tasks)}{f', {failed} failed' if failed else ''}] {progress}")
                continue
            record = {**record, **(notes or {}).get(record["run_id"], {})}
            self.store.append(record)
            latest[record["run_id"]] = record
            count += 1
            failed += record["status"] != "ok"
            self.echo(_line(count, len(tasks), failed, record, self.sweep.metric, progress))
        return {r.run_id: latest[r.run_id] for r in runs if r.run_id in latest}


def run_sweep(sweep: Sweep, out_dir, executor, runs: list[Run] | None = None, *, part: str | None = None,
              retry_failed: bool = False, echo=print, force: bool = False) -> list[dict]:
    """Run the unfinished ones of ``runs`` (default: the whole sweep) with ``executor``; a ``part``
    records into its own results file. ``force`` writes into a non-empty folder that is not a hybridseq
    output folder. Returns the latest record of each run that has one."""
    runs = sweep.runs() if runs is None else runs
    check_runs(sweep, runs)
    claim_run_dir(out_dir, force=force)          # refuses a folder of the user's own files and a live sweep
    try:
        with executor:
            driver = Driver(sweep, out_dir, executor, part=part, retry_failed=retry_failed, echo=echo)
            if sweep.tune is not None:
                from .search import tune_sweep

                return tune_sweep(sweep, driver, echo)
            latest = driver.run(runs)
    finally:
        release_run_dir(out_dir)
    return [latest[r.run_id] for r in runs if r.run_id in latest]

