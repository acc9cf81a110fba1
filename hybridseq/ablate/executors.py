"""Choosing the executor of a sweep from the command-line options (see `runner` for what an executor is)."""
from __future__ import annotations

from ..errors import ConfigError
from .resources import cpu_budget, default_workers, threads_per_worker, visible_gpus
from .runner import InProcess, ProcessPool
from .sweep import Sweep

EXECUTORS = ("local", "ray")


def make_executor(kind: str, sweep: Sweep, *, workers: int | None = None, threads: int | None = None,
                  address: str | None = None):
    """The executor ``kind`` ("local": this machine's worker processes, ``workers=0`` in this process;
    "ray": Ray tasks with the sweep's resources, on ``address`` or a Ray started here)."""
    if kind == "ray":
        from .ray_executor import RayExecutor

        if workers is not None:
            raise ConfigError("--workers", "worker processes are for --executor local; on Ray, "
                              "resources.cpus_per_run and gpus_per_run set how many runs share the cluster")
        return RayExecutor(sweep.resources, address, threads)
    if kind != "local":
        raise ConfigError("--executor", f"unknown executor {kind!r}", choices=EXECUTORS, got=kind)
    if address:
        raise ConfigError("--address", "an address is for --executor ray")
    if workers == 0:
        return InProcess(threads)
    gpus = visible_gpus()
    workers = default_workers(gpus, cpu_budget()) if workers is None else workers
    if workers < 0:
        raise ConfigError("--workers", f"expected a number >= 0, got {workers}")
    return ProcessPool(workers, threads_per_worker(workers, threads), gpus)
