"""Parts of a sweep for job schedulers: a static shard (``--shard i/n``), or exactly one run of a job
array (``--run ID`` or ``--index K``, with ``--list`` to see the runs in order). A part records into its
own results file, named by `part_name`, so array tasks on a shared filesystem never append to one file.
"""
from __future__ import annotations

from ..errors import ConfigError
from .sweep import Run, shard


def select(runs: list[Run], *, shard_spec: str | None = None, run_id: str | None = None,
           index: int | None = None) -> tuple[list[Run], str | None]:
    """The runs of one part and the name of its results file (None: the whole sweep)."""
    given = [name for name, value in (("--shard", shard_spec), ("--run", run_id), ("--index", index))
             if value is not None]
    if len(given) > 1:
        raise ConfigError(given[1], f"choose one of --shard, --run and --index, not {' and '.join(given)}")
    if shard_spec is not None:
        i, n = shard_spec.split("/") if shard_spec.count("/") == 1 else ("", "")
        return shard(runs, shard_spec), f"shard-{i}-of-{n}"
    if index is not None:
        if not 0 <= index < len(runs):
            raise ConfigError("--index", f"expected 0 <= K < {len(runs)} (the sweep has {len(runs)} runs), got {index}")
        return [runs[index]], f"run-{runs[index].run_id}"
    if run_id is not None:
        match = [r for r in runs if r.run_id == run_id]
        if not match:
            raise ConfigError("--run", f"no run {run_id!r} in this sweep (hybridseq ablate SWEEP.yaml --list "
                              "prints the run ids)")
        return match, f"run-{run_id}"
    return runs, None


def listing(runs: list[Run], latest: dict[str, dict]) -> list[str]:
    """One tab-separated line per run, in expansion order: index, run id, variant, seed, status
    (ok, failed, or todo when nothing is recorded)."""
    return [f"{k}\t{r.run_id}\t{r.variant}\t{r.seed}\t{latest.get(r.run_id, {}).get('status', 'todo')}"
            for k, r in enumerate(runs)]
