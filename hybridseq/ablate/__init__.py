"""Ablation studies: sweep expansion, a parallel resumable runner, the results store, tables and plots.

```python
from hybridseq.ablate import ablate
records, table = ablate("configs/sweeps/quickstart.yaml", "runs/ablate/quickstart", workers=2)
records, table = ablate("configs/sweeps/quickstart.yaml", executor="ray")       # on a local Ray
```
"""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .executors import make_executor
from .jobs import select
from .plots import plot_curves, plot_metric
from .runner import run_sweep
from .store import ResultStore
from .summary import metric_keys, summarize, to_markdown, write_summary
from .sweep import Run, Sweep, load_sweep, shard
from .tune import SAMPLER_NAMES


def report(sweep: Sweep, out_dir, records: list[dict]) -> str:
    """Write ``summary.md``, ``summary.csv`` and ``plots/*.png`` for ``records``; returns the table."""
    out = Path(out_dir)
    table = write_summary(out, records, sweep.metric, tune_note(sweep, records))
    keys = metric_keys(records, sweep.metric)
    if keys:
        plot_metric(summarize(records, sweep.metric), keys[0], out / "plots" / f"{keys[0]}.png", sweep.numeric_axis())
    plot_curves(records, out / "plots" / "curves.png")
    return table


def tune_note(sweep: Sweep, records: list[dict]) -> str:
    """The sentence under a tuned sweep's table: how each variant's setting was chosen."""
    t = sweep.tune
    if t is None:
        return ""
    metric = next((r["tune"]["metric"] for r in records if r.get("tune", {}).get("metric")), t.metric or "val_*")
    return (f"Each variant at its own best setting of {', '.join(t.params)}: {t.trials} trials of "
            f"{SAMPLER_NAMES[t.sampler]} "
            f"search (seed {t.seed}) on {metric} at seed {sweep.seeds[0]}; the test metrics are those of the "
            f"selected setting only, trained at every seed.")


def ablate(source, out_dir=None, *, overrides=(), executor: str = "local", workers: int | None = None,
           threads: int | None = None, address: str | None = None, shard_spec: str | None = None,
           run_id: str | None = None, index: int | None = None, retry_failed: bool = False,
           summary_only: bool = False, echo=print, force: bool = False) -> tuple[list[dict], str]:
    """Run (or resume) the sweep ``source`` (a YAML path or a mapping) into ``out_dir`` and report it.

    ``overrides`` (dotlist) apply to every run. ``executor`` is "local" (``workers`` processes, default
    one per GPU, else one per core up to 4; ``workers=0``: in this process) or "ray" (``address``: a
    cluster; none: a Ray started here). ``threads``: torch threads per run. ``shard_spec`` ("i/n"),
    ``run_id`` or ``index`` run one part of the sweep, which records into its own results file and
    writes no summary (the returned table covers the part). With ``summary_only`` nothing is trained:
    the table covers every run recorded in ``out_dir``, whichever file it was recorded in. ``force``
    writes into a non-empty folder that is not a hybridseq output folder. Returns the latest record of
    each run and the Markdown summary table.
    """
    sweep = load_sweep(source, overrides=overrides)
    out = Path(out_dir or Path("runs") / "ablate" / sweep.name)
    runs, part = select(sweep.runs(), shard_spec=shard_spec, run_id=run_id, index=index)
    if sweep.tune is not None and part is not None:
        raise ConfigError("sweep.tune", "a tuned sweep picks its runs as trials finish, so it runs whole "
                          "(on many machines: --executor ray), not as --shard/--run/--index parts")
    if summary_only and sweep.tune is not None:
        from .runner import Driver
        from .search import tune_sweep

        records = tune_sweep(sweep, Driver(sweep, out, None, echo=echo), echo)
    elif summary_only:
        latest = ResultStore(out).latest()
        records = [latest[r.run_id] for r in runs if r.run_id in latest]
    else:
        runner = make_executor(executor, sweep, workers=workers, threads=threads, address=address)
        records = run_sweep(sweep, out, runner, runs, part=part, retry_failed=retry_failed, echo=echo,
                            force=force)
    if part is not None:
        return records, to_markdown(summarize(records, sweep.metric), records)
    return records, report(sweep, out, records)


__all__ = ["ResultStore", "Run", "Sweep", "ablate", "load_sweep", "plot_curves", "plot_metric", "report",
           "make_executor", "run_sweep", "select", "shard", "summarize", "write_summary"]
