"""Sweep throughput on one machine: runs per hour of the same small sweep on the local process pool and on
a local Ray (each run a Ray task of 1 CPU), with the same number of runs in flight. Prints the ratio
(target: Ray within 10% of the pool at 2 CPUs, the Ray start included).

    python bench/sweep_throughput.py [--cpus 2] [--seeds 6] [--epochs 3] [--repeats 2]

Each repeat runs both executors in turn into fresh folders, so drift on a busy machine affects both.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from hybridseq.ablate import ablate

BASE = {
    "data": {"name": "spirals", "n_train": 200, "n_test": 50, "points": 30, "batch_size": 32},
    "model": {"d_model": 32, "encoder": {"type": "linear"}, "blocks": [{"type": "transformer", "heads": 4}],
              "head": {"type": "classify"}},
    "train": {"progress": False},
}


def sweep(seeds: int, epochs: int) -> dict:
    return {"name": "throughput", "base": BASE, "overrides": [f"train.epochs={epochs}"],
            "variants": {"transformer": [], "s4d": ["model.blocks[0]={type: s4d}"]},
            "seeds": list(range(seeds)), "resources": {"cpus_per_run": 1}}


def on_pool(spec: dict, out: Path, cpus: int) -> float:
    start = time.perf_counter()
    records, _ = ablate(spec, out, workers=cpus, threads=1, echo=lambda line: None)
    assert all(r["status"] == "ok" for r in records)
    return time.perf_counter() - start


def on_ray(spec: dict, out: Path, cpus: int) -> tuple[float, float]:
    """Seconds for the whole sweep, the Ray start and stop included, and for the Ray start alone."""
    import ray

    start = time.perf_counter()
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    started = time.perf_counter() - start
    try:
        records, _ = ablate(spec, out, executor="ray", echo=lambda line: None)
    finally:
        ray.shutdown()
    assert all(r["status"] == "ok" for r in records)
    return time.perf_counter() - start, started


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpus", type=int, default=2, help="pool workers = Ray CPUs (runs in flight)")
    ap.add_argument("--seeds", type=int, default=6, help="seeds per variant (2 variants)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    spec = sweep(args.seeds, args.epochs)
    runs = 2 * args.seeds
    pool, ray_total, ray_start = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.repeats):
            pool.append(on_pool(spec, Path(tmp) / f"pool{k}", args.cpus))
            total, started = on_ray(spec, Path(tmp) / f"ray{k}", args.cpus)
            ray_total.append(total)
            ray_start.append(started)
    p, r, s = (statistics.median(x) for x in (pool, ray_total, ray_start))
    print(f"{runs} runs, {args.cpus} in flight, {args.epochs} epochs each; medians of {args.repeats} repeats")
    print(f"process pool : {p:7.1f} s  {3600 * runs / p:8.0f} runs/hour")
    print(f"ray (local)  : {r:7.1f} s  {3600 * runs / r:8.0f} runs/hour  (Ray start {s:.1f} s of it)")
    print(f"ray / pool time ratio: {r / p:.3f}  (without the Ray start: {(r - s) / p:.3f})")


if __name__ == "__main__":
    main()
