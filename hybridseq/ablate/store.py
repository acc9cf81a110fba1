"""The results store: one record per finished run, appended atomically by one writer per file.

A record holds the run's id, variant, seed and overrides, ``status`` ("ok" or "failed"), ``recorded_at``
(seconds since the epoch), and either the run's results (metrics, parameter count, time per epoch, NFE,
peak memory, learning curves) or its error (type, message, the tail of the traceback).

A whole sweep writes ``results.jsonl``. A part of it run on its own (a shard, or one run of a job
array) writes its own file ``results.d/<part>.jsonl``, so no file on a shared filesystem is ever
appended to by two machines (appends over NFS are not atomic). Reading merges every file; the latest
record of a run id wins, so a retried run supersedes its failure wherever each was written.
"""
from __future__ import annotations

import time
from pathlib import Path

from ..io import append_jsonl, read_jsonl

RESULTS_FILE = "results.jsonl"
PARTS_DIR = "results.d"


class ResultStore:
    def __init__(self, out_dir, part: str | None = None):
        self.dir = Path(out_dir)
        self.path = self.dir / RESULTS_FILE if part is None else self.dir / PARTS_DIR / f"{part}.jsonl"

    def append(self, record: dict) -> None:
        append_jsonl(self.path, {**record, "recorded_at": time.time()})

    def files(self) -> list[Path]:
        return [self.dir / RESULTS_FILE, *sorted((self.dir / PARTS_DIR).glob("*.jsonl"))]

    def latest(self) -> dict[str, dict]:
        """run id -> its latest record over every file (by ``recorded_at``; file order breaks ties)."""
        records = [r for path in self.files() for r in read_jsonl(path) if "run_id" in r]
        records.sort(key=lambda r: r.get("recorded_at") or 0.0)          # stable: ties keep file order
        out: dict[str, dict] = {}
        for record in records:
            out[record["run_id"]] = record
        return out

    def finished(self, retry_failed: bool = False) -> set[str]:
        """Ids of runs that need no new attempt: ok ones, and failed ones unless ``retry_failed``."""
        return {rid for rid, r in self.latest().items() if r.get("status") == "ok" or not retry_failed}
