"""CLI sub-command ``hybridseq ablate`` (registered through the commands hook)."""
from __future__ import annotations

import os
from pathlib import Path

from ..hookspecs import hookimpl


def cmd_ablate(args) -> int:
    from ..ablate import ablate
    from ..ablate.sweep import load_sweep

    out = args.out or str(Path("runs") / "ablate" / load_sweep(args.sweep, overrides=args.overrides).name)
    print(f"sweep {args.sweep} -> {out}")
    workers = args.workers if args.workers is not None else default_workers()
    records, table = ablate(args.sweep, out, overrides=args.overrides, workers=workers, shard_spec=args.shard,
                            retry_failed=args.retry_failed, summary_only=args.summary_only, force=args.force)
    print()
    print(table)
    print(f"summary: {Path(out) / 'summary.md'}, {Path(out) / 'summary.csv'}; plots: {Path(out) / 'plots'}")
    return 1 if any(r.get("status") != "ok" for r in records) else 0


def default_workers() -> int:
    """One worker per CPU core, at most 4: small models gain more from processes than from threads."""
    return max(1, min(os.cpu_count() or 1, 4))


@hookimpl
def hybridseq_register_commands(cli):
    p = cli.add_parser("ablate", help="run a sweep of configs (variants x axes x seeds) and summarise it")
    p.add_argument("sweep", help="sweep YAML file (base config, variants, axes, seeds)")
    p.add_argument("overrides", nargs="*", help="dotlist overrides for every run, applied last (they win over "
                   "variants and axes), "
                   "e.g. train.epochs=2 (they change the run ids: a different config is a different run)")
    p.add_argument("--workers", type=int, default=None,
                   help="parallel worker processes (default: CPU cores, at most 4; 0 = in this process)")
    p.add_argument("--shard", metavar="i/n", help="run only shard i of n (0 <= i < n), for many machines")
    p.add_argument("--out", metavar="DIR", help="output folder (default: runs/ablate/<sweep name>)")
    p.add_argument("--retry-failed", action="store_true", help="run again the runs recorded as failed")
    p.add_argument("--summary-only", action="store_true", help="train nothing; summarise the recorded runs")
    p.add_argument("--force", action="store_true", help="write into --out even if it is a non-empty folder "
                   "that is not a hybridseq output folder")
    p.set_defaults(func=cmd_ablate)
