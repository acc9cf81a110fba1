"""Helpers shared by the benchmarks: interleaved timing (medians), the activation memory autograd holds,
and where a benchmark keeps its runs."""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Callable

import torch


def interleaved(fns: dict[str, Callable[[], object]], repeats: int = 20, warmup: int = 3) -> dict[str, float]:
    """Median seconds per call of each function, calling them in turn so drift affects all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in samples.items()}


def peak_saved_bytes(run: Callable[[], object], params) -> int:
    """Peak bytes of the distinct non-parameter storages autograd holds for backward while ``run`` (a
    forward, and usually its backward) executes: a storage counts from when a graph saves it until the
    last graph holding it is freed. The count is the same on every device."""
    skip = {p.untyped_storage().data_ptr() for p in params}
    live: dict[int, list[int]] = {}                          # storage pointer -> [references, bytes]
    total = {"now": 0, "peak": 0}

    class Held:
        """A saved tensor; its storage counts while any graph still holds it."""

        def __init__(self, t):
            self.t, self.ptr = t.detach(), t.untyped_storage().data_ptr()     # no cycle via t.grad_fn
            entry = live.setdefault(self.ptr, [0, t.untyped_storage().nbytes()])
            if entry[0] == 0:
                total["now"] += entry[1]
                total["peak"] = max(total["peak"], total["now"])
            entry[0] += 1

        def __del__(self):
            entry = live[self.ptr]
            entry[0] -= 1
            if entry[0] == 0:
                total["now"] -= entry[1]
                del live[self.ptr]

    with torch.autograd.graph.saved_tensors_hooks(
            lambda t: t if t.untyped_storage().data_ptr() in skip else Held(t),
            lambda h: h.t if isinstance(h, Held) else h):
        run()
    return total["peak"]


def results_store(parser: argparse.ArgumentParser, out: str) -> Path:
    """The results file ``<out>/results.jsonl`` of a benchmark; ``--out`` naming a file is a usage error."""
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        parser.error(f"--out: expected a folder (the runs are kept in <out>/results.jsonl), got the file {out}")
    return folder / "results.jsonl"


def fit_within(cfg, splits, cost: dict, projected: float, budget: float, **trainer_options):
    """Train ``cfg`` with hybridseq's trainer unless its projected seconds pass ``budget``.

    Returns ``(skipped, results)``: the skip record (status, projected time, ``cost``) and None, or None
    and the trainer's results."""
    if projected > budget:
        return {"status": "skipped", "projected_s": projected, **cost}, None
    from hybridseq.train.trainer import Trainer

    trainer = Trainer(cfg, splits=splits, **trainer_options)
    try:
        return None, trainer.fit()
    finally:
        trainer.close()
