"""Sweeps on Ray: each run is a Ray task reserving the sweep's ``resources`` (CPUs, GPUs).

Ray tasks rather than Ray Tune trials: the driver must stay the only writer of the sweep's results store
and run directories must stay ordinary hybridseq run directories, while Tune keeps its own experiment
folder, trial names and result logs. A task is what a run is (a function of its config that returns a
record); Ray schedules it by resources over the cluster and re-runs it, up to
``resources.max_retries`` times, when its worker process or its node is lost (a run that raises is not
retried: its error is its record). Hyperparameter search (``tune:``) drives the same executors from the
driver, so it needs no Tune either.

Ray sets ``CUDA_VISIBLE_DEVICES`` of a task to the GPUs it reserved; its torch threads are
``cpus_per_run`` (rounded up). On a cluster, every node needs hybridseq (and the plugins the sweep uses)
installed, and the output folder must be on a filesystem every node mounts, as the runs write their run
directories there; the results store is written by the driver alone.
"""
from __future__ import annotations

import math
from typing import Iterator

from ..errors import ConfigError
from .resources import Resources, cpu_budget
from .runner import Task, failed_record, run_task

PROGRESS_S = 60.0        # a progress line at least this often while runs are in flight
INSTALL = "pip install 'hybridseq[ray]'"


def _ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor", f"ray is not installed; install it with: {INSTALL}") from None
    return ray


class RayExecutor:
    """Runs as Ray tasks on the cluster at ``address`` (``auto``, ``HOST:PORT``, ``ray://…``), or on a Ray
    started here for the sweep (no address). A Ray already initialised in this process is used as is."""

    def __init__(self, resources: Resources, address: str | None = None, threads: int | None = None):
        self.resources, self.address = resources, address
        self.threads = threads or resources.threads
        self.ray = _ray()
        self.started = False

    def __enter__(self):
        ray = self.ray
        if not ray.is_initialized():
            if self.address:
                ray.init(address=self.address, log_to_driver=False)
            else:                           # a fresh local Ray over this process's cores
                ray.init(address="local", num_cpus=cpu_budget(), include_dashboard=False, log_to_driver=False)
            self.started = True
        try:
            self._check()
        except BaseException:
            self.__exit__()
            raise
        self.remote = ray.remote(run_task).options(
            num_cpus=self.resources.cpus_per_run, num_gpus=self.resources.gpus_per_run,
            max_retries=self.resources.max_retries, retry_exceptions=False)
        return self

    def _check(self) -> None:
        """A run must fit the cluster as a whole, or it would wait forever; count how many fit at once."""
        total = self.ray.cluster_resources()
        for key, need, name in (("CPU", self.resources.cpus_per_run, "cpus_per_run"),
                                ("GPU", self.resources.gpus_per_run, "gpus_per_run")):
            if need > total.get(key, 0):
                raise ConfigError(f"sweep.resources.{name}", f"a run asks for {need:g} {key}s but the Ray cluster "
                                  f"has {total.get(key, 0):g} in all, so no run could ever start")
        self.slots = min(math.floor(total.get(key, 0) / need) for key, need in
                         (("CPU", self.resources.cpus_per_run), ("GPU", self.resources.gpus_per_run)) if need > 0)

    def __exit__(self, *exc):
        if self.started:
            self.ray.shutdown()
            self.started = False
        return False

    def _progress(self, left: int) -> str:
        running = min(left, self.slots)    # what the cluster's resources let run at once
        return f"running {running}, queued {left - running}"

    def map(self, tasks: list[Task]) -> Iterator[tuple[dict | None, str]]:
        ray = self.ray
        refs = {self.remote.remote(task, self.threads): task for task in tasks}
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1, timeout=PROGRESS_S)
                if not done:
                    yield None, self._progress(len(pending))
                for ref in done:
                    try:
                        record = ray.get(ref)
                    except ray.exceptions.RayError as err:   # retries spent: worker or node lost for good
                        record = failed_record(refs[ref], err)
                    yield record, self._progress(len(pending))
        finally:
            for ref in pending:                # the driver stops: nothing it would not record keeps running
                ray.cancel(ref, force=True)
