"""The results store: ``results.jsonl``, one record per finished run, appended atomically.

A record holds the run's id, variant, seed and overrides, ``status`` ("ok" or "failed"), and either the
run's results (metrics, parameter count, time per epoch, NFE, peak memory, learning curves) or its error
(type, message, the tail of the traceback). The latest record of a run id wins, so a retried run
supersedes its failure.
"""
from __future__ import annotations

from pathlib import Path

from ..io import append_jsonl, read_jsonl

RESULTS_FILE = "results.jsonl"


class ResultStore:
    def __init__(self, out_dir):
        self.path = Path(out_dir) / RESULTS_FILE

    def append(self, record: dict) -> None:
        append_jsonl(self.path, record)

    def latest(self) -> dict[str, dict]:
        """run id -> its latest record, in first-seen order."""
        out: dict[str, dict] = {}
        for record in read_jsonl(self.path):
            if "run_id" in record:
                out[record["run_id"]] = record
        return out

    def finished(self, retry_failed: bool = False) -> set[str]:
        """Ids of runs that need no new attempt: ok ones, and failed ones unless ``retry_failed``."""
        return {rid for rid, r in self.latest().items() if r.get("status") == "ok" or not retry_failed}
