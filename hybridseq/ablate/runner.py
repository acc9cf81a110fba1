"""Running a sweep: worker processes (spawned) train the runs; the parent records each result.

Each run trains into ``<out>/runs/<variant>-seed<k>-<run_id>/`` (a normal run directory, so an
interrupted run resumes from its last epoch). A run that raises is recorded with its error and the sweep
goes on. Only the parent process appends to ``results.jsonl``, one line per run, so a kill at any moment
loses at most the runs in flight; a re-run skips every run already recorded. A worker process that dies
(killed, out of memory) breaks the whole pool; its runs are then tried again one by one, each in a fresh
worker, so only the run that kills its worker is recorded as failed.
"""
from __future__ import annotations

import multiprocessing
import os
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import yaml

from ..io import atomic_write_text
from ..train.guard import claim_run_dir, exit_with_parent, release_run_dir
from .store import ResultStore
from .sweep import Run, Sweep, check_runs, shard

TRACEBACK_LINES = 15     # lines of traceback kept in a failure record


def failure(err: BaseException) -> dict:
    tail = traceback.format_exception(type(err), err, err.__traceback__)
    lines = "".join(tail).rstrip().splitlines()[-TRACEBACK_LINES:]
    return {"status": "failed", "error": {"type": type(err).__name__, "message": str(err),
                                          "traceback": "\n".join(lines)}}


def run_one(sweep: Sweep, run: Run, out_dir: str, threads: int | None = None) -> dict:
    """Train one run of ``sweep`` (in a worker process); never raises: errors become the record."""
    import torch

    from ..train.checkpoint import RunDir
    from ..train.trainer import train

    if threads:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    run_dir = Path(out_dir) / "runs" / run.dir_name
    record = {**run.as_dict(), "run_dir": str(run_dir)}
    try:
        cfg = sweep.config(run)
        results = train(cfg, run_dir, resume=RunDir(run_dir).holds_run(), progress=False)
        record.update(status="ok", **results)
    except Exception as err:  # a failing run is data for the summary, not the end of the sweep
        record.update(failure(err))
    record["wall_s"] = time.perf_counter() - start
    return record


def _line(k: int, total: int, record: dict, metric: str | None) -> str:
    head = f"[{k}/{total}] {record['variant']} seed {record['seed']}:"
    if record["status"] != "ok":
        err = record["error"]
        return f"{head} FAILED {err['type']}: {err['message'].splitlines()[0] if err['message'] else ''}"
    key = metric if metric in record else next((m for m in record if m.startswith("test_") and m != "test_loss"), None)
    value = f" {key} {record[key]:.4f}" if key else ""
    return f"{head} ok{value} ({record['wall_s']:.1f}s)"


def run_sweep(sweep: Sweep, out_dir, *, workers: int = 1, shard_spec: str | None = None,
              retry_failed: bool = False, echo=print, force: bool = False) -> list[dict]:
    """Run the sweep's unfinished runs (of shard ``shard_spec``) with ``workers`` processes.

    ``workers=0`` runs in this process (no isolation; handy for debugging). Returns the latest record
    of every run of this shard that has one.
    """
    mine = shard(sweep.runs(), shard_spec)
    check_runs(sweep, mine)
    out = Path(out_dir)
    claim_run_dir(out, force=force)          # refuses a folder of the user's own files and a live sweep
    atomic_write_text(out / "sweep.yaml", yaml.safe_dump(sweep.as_dict(), sort_keys=False))
    store = ResultStore(out)
    done = store.finished(retry_failed)
    todo = [r for r in mine if r.run_id not in done]
    if len(todo) < len(mine):
        echo(f"{len(mine) - len(todo)} of {len(mine)} runs already recorded in {store.path}; running {len(todo)}")
    threads = max(1, (os.cpu_count() or 1) // max(workers, 1))
    done_count = 0

    def finish(record: dict) -> None:
        nonlocal done_count
        store.append(record)
        done_count += 1
        echo(_line(done_count, len(todo), record, sweep.metric))

    if workers <= 0:
        for run in todo:
            finish(run_one(sweep, run, str(out)))
    elif todo:
        ctx = multiprocessing.get_context("spawn")
        crashed = []
        with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=ctx, initializer=exit_with_parent,
                                 initargs=(os.getpid(),)) as pool:
            futures = {pool.submit(run_one, sweep, run, str(out), threads): run for run in todo}
            for fut in as_completed(futures):
                run = futures[fut]
                try:
                    record = fut.result()
                except BrokenProcessPool:     # a worker died: every run in flight or queued fails with it
                    crashed.append(run)
                    continue
                except Exception as err:      # the run could not reach its worker or come back from it
                    record = {**run.as_dict(), **failure(err), "wall_s": None}
                finish(record)
        for run in crashed:                   # alone in a fresh worker each: only the run that kills it fails
            with ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=exit_with_parent,
                                     initargs=(os.getpid(),)) as pool:
                try:
                    record = pool.submit(run_one, sweep, run, str(out), threads).result()
                except Exception as err:
                    record = {**run.as_dict(), **failure(err), "wall_s": None}
            finish(record)
    release_run_dir(out)
    latest = store.latest()
    return [latest[r.run_id] for r in mine if r.run_id in latest]
