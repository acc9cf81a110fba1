"""What one machine gives a sweep: CPU cores (this process's affinity, not the whole node), torch threads
per worker, and the GPUs the workers share out; and the sweep file's ``resources:`` section (what one run
asks of an engine such as Ray).

A job started by a scheduler on 4 cores of a 64-core node sees 4 in ``os.sched_getaffinity``; an
``OMP_NUM_THREADS`` set by the user or the scheduler is the thread count of each worker; ``--threads``
wins over both. With several GPUs visible, worker ``k`` sees only GPU ``k mod n`` (its own
``CUDA_VISIBLE_DEVICES``), so the workers spread over the GPUs instead of all landing on ``cuda:0``.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

from ..errors import ConfigError

MAX_DEFAULT_WORKERS = 4      # small models gain more from processes than from threads, up to a point


def cpu_budget() -> int:
    """The CPU cores this process may run on (its affinity mask), or the machine's count without one."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def visible_gpus(environ=None) -> list[str]:
    """GPU ids the workers may use: the entries of ``CUDA_VISIBLE_DEVICES`` when it is set (empty or
    ``-1``: none), otherwise every device torch sees."""
    environ = os.environ if environ is None else environ
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        ids = [d.strip() for d in listed.split(",") if d.strip()]
        return [] if not ids or ids[0] == "-1" else ids
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def default_workers(gpus: list[str], budget: int) -> int:
    """One worker per GPU when there are GPUs; else one per core, at most `MAX_DEFAULT_WORKERS`."""
    return len(gpus) if gpus else max(1, min(budget, MAX_DEFAULT_WORKERS))


def threads_per_worker(workers: int, threads: int | None = None, environ=None, budget: int | None = None) -> int:
    """Torch threads of each worker: ``threads`` if given, else a positive ``OMP_NUM_THREADS``, else the
    cores of `cpu_budget` shared evenly by the workers (at least one)."""
    if threads is not None:
        if threads < 1:
            raise ConfigError("--threads", f"expected a positive number of threads, got {threads}")
        return threads
    omp = (os.environ if environ is None else environ).get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) > 0:
        return int(omp)
    return max(1, (cpu_budget() if budget is None else budget) // max(workers, 1))


def gpu_of(slot: int, gpus: list[str]) -> str | None:
    """The GPU of worker ``slot``: round robin over ``gpus``."""
    return gpus[slot % len(gpus)] if gpus else None


@dataclass
class Resources:
    """What one run reserves on an engine (``resources:`` in a sweep file)."""
    cpus_per_run: float = 1.0        # also the run's torch threads (rounded up)
    gpus_per_run: float = 0.0        # fractions share a GPU between runs
    max_retries: int = 3             # attempts after a lost worker or node (a run that raises is not retried)

    @property
    def threads(self) -> int:
        return max(1, math.ceil(self.cpus_per_run))

    def as_dict(self) -> dict:
        return asdict(self)


def parse_resources(raw) -> Resources:
    if raw is None:
        return Resources()
    if not isinstance(raw, dict):
        raise ConfigError("sweep.resources",
                          f"expected a mapping such as {{cpus_per_run: 2, gpus_per_run: 1}}, got {raw!r}")
    keys = tuple(Resources.__dataclass_fields__)
    for key, value in raw.items():
        if key not in keys:
            raise ConfigError(f"sweep.resources.{key}", f"unknown key '{key}'", choices=keys, got=key)
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not number or value < 0 or (key == "max_retries" and not isinstance(value, int)):
            kind = "a non-negative integer" if key == "max_retries" else "a non-negative number"
            raise ConfigError(f"sweep.resources.{key}", f"expected {kind}, got {value!r}")
    res = Resources(**raw)
    if res.cpus_per_run <= 0:
        raise ConfigError("sweep.resources.cpus_per_run", f"expected a number > 0, got {res.cpus_per_run!r}")
    return res
