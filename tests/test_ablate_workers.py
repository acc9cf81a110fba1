"""Local sweep workers: cores from the affinity mask, OMP_NUM_THREADS and --threads respected, one GPU per
worker (round robin over CUDA_VISIBLE_DEVICES)."""
import os

import pytest

from hybridseq import ConfigError
from hybridseq.ablate import ablate, load_sweep
from hybridseq.ablate.executors import make_executor
from hybridseq.ablate.resources import (
    cpu_budget,
    default_workers,
    gpu_of,
    parse_resources,
    threads_per_worker,
    visible_gpus,
)
from hybridseq.ablate.runner import InProcess, ProcessPool

from ablate_cases import TWO_BY_TWO, sweep


def test_cores_come_from_the_affinity_mask(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert cpu_budget() == 4
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads_per_worker(2) == 2 and threads_per_worker(8) == 1
    assert default_workers([], cpu_budget()) == 4 and default_workers(["0", "1"], 4) == 2


def test_omp_num_threads_and_the_option_set_the_threads():
    assert threads_per_worker(4, environ={"OMP_NUM_THREADS": "3"}, budget=64) == 3
    assert threads_per_worker(4, environ={"OMP_NUM_THREADS": ""}, budget=64) == 16
    assert threads_per_worker(4, threads=5, environ={"OMP_NUM_THREADS": "3"}, budget=64) == 5
    with pytest.raises(ConfigError, match="--threads: expected a positive number of threads, got 0"):
        threads_per_worker(1, threads=0)


def test_executor_options(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    s = load_sweep(sweep())
    pool = make_executor("local", s, workers=3)
    assert isinstance(pool, ProcessPool) and (pool.workers, pool.threads, pool.gpus) == (3, 2, [])
    assert make_executor("local", s, workers=3, threads=1).threads == 1
    assert isinstance(make_executor("local", s, workers=0), InProcess)
    with pytest.raises(ConfigError, match="--executor: unknown executor 'slurm'"):
        make_executor("slurm", s)
    with pytest.raises(ConfigError, match="--address: an address is for --executor ray"):
        make_executor("local", s, address="auto")
    with pytest.raises(ConfigError, match="--workers: worker processes are for --executor local"):
        make_executor("ray", s, workers=2)


def test_visible_gpus_and_round_robin():
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "3, 5,7"}) == ["3", "5", "7"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == [] == visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"})
    assert [gpu_of(k, ["3", "5"]) for k in range(5)] == ["3", "5", "3", "5", "3"]
    assert gpu_of(0, []) is None


def test_each_worker_gets_its_own_gpu_and_thread_count(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")         # a fake device list: the CPU build ignores it
    pool = make_executor("local", load_sweep(sweep()), workers=2, threads=1)
    assert pool.gpus == ["3", "5"]
    records, _ = ablate(sweep(**TWO_BY_TWO), tmp_path, workers=2, threads=1, echo=lambda line: None)
    assert len(records) == 4 and all(r["status"] == "ok" for r in records)
    gpu_of_pid = {}
    for r in records:
        w = r["worker"]
        assert w["threads"] == 1 and w["cuda_visible_devices"] in ("3", "5")
        assert gpu_of_pid.setdefault(w["pid"], w["cuda_visible_devices"]) == w["cuda_visible_devices"]
    assert len(set(gpu_of_pid.values())) == len(gpu_of_pid)     # two workers never share a GPU here
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3,5"           # the driver's own list is left alone


@pytest.mark.parametrize("bad, message", [
    ({"cpus_per_run": -1}, "sweep.resources.cpus_per_run: expected a non-negative number, got -1"),
    ({"cpus_per_run": 0}, "sweep.resources.cpus_per_run: expected a number > 0"),
    ({"gpu_per_run": 1}, "sweep.resources.gpu_per_run: unknown key 'gpu_per_run'; did you mean 'gpus_per_run'?"),
    ({"max_retries": 1.5}, "sweep.resources.max_retries: expected a non-negative integer"),
    ([2], "sweep.resources: expected a mapping"),
])
def test_bad_resources_name_the_key(bad, message):
    with pytest.raises(ConfigError) as err:
        parse_resources(bad)
    assert message in str(err.value)
    assert parse_resources({"cpus_per_run": 1.5, "gpus_per_run": 0.5}).threads == 2
