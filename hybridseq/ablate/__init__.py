"""Ablation studies: sweep expansion, a parallel resumable runner, the results store, tables and plots.

```python
from hybridseq.ablate import ablate
records, table = ablate("configs/sweeps/quickstart.yaml", "runs/ablate/quickstart", workers=2)
```
"""
from __future__ import annotations

from pathlib import Path

from .plots import plot_curves, plot_metric
from .runner import run_sweep
from .store import ResultStore
from .summary import metric_keys, summarize, write_summary
from .sweep import Run, Sweep, load_sweep, shard


def report(sweep: Sweep, out_dir, records: list[dict]) -> str:
    """Write ``summary.md``, ``summary.csv`` and ``plots/*.png`` for ``records``; returns the table."""
    out = Path(out_dir)
    table = write_summary(out, records, sweep.metric)
    keys = metric_keys(records, sweep.metric)
    if keys:
        plot_metric(summarize(records, sweep.metric), keys[0], out / "plots" / f"{keys[0]}.png")
    plot_curves(records, out / "plots" / "curves.png")
    return table


def ablate(source, out_dir=None, *, overrides=(), workers: int = 1, shard_spec: str | None = None,
           retry_failed: bool = False, summary_only: bool = False, echo=print,
           force: bool = False) -> tuple[list[dict], str]:
    """Run (or resume) the sweep ``source`` (a YAML path or a mapping) into ``out_dir`` and report it.

    ``overrides`` (dotlist) apply to every run. Returns the latest record of each run and the Markdown
    summary table. With ``summary_only`` nothing is trained: the table covers every run recorded in
    ``out_dir`` (e.g. after shards were merged). ``force`` writes into a non-empty folder that is not a
    hybridseq output folder.
    """
    sweep = load_sweep(source, overrides=overrides)
    out = Path(out_dir or Path("runs") / "ablate" / sweep.name)
    if summary_only:
        latest = ResultStore(out).latest()
        records = [latest[r.run_id] for r in sweep.runs() if r.run_id in latest]
    else:
        records = run_sweep(sweep, out, workers=workers, shard_spec=shard_spec, retry_failed=retry_failed,
                            echo=echo, force=force)
    return records, report(sweep, out, records)


__all__ = ["ResultStore", "Run", "Sweep", "ablate", "load_sweep", "plot_curves", "plot_metric", "report",
           "run_sweep", "shard", "summarize", "write_summary"]
