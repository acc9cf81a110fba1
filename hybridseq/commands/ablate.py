"""CLI sub-command ``hybridseq ablate`` (registered through the commands hook): its options all live here."""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ..hookspecs import hookimpl


def cmd_ablate(args) -> int:
    from ..ablate import ablate
    from ..ablate.jobs import listing
    from ..ablate.store import ResultStore
    from ..ablate.sweep import load_sweep

    sweep = load_sweep(args.sweep, overrides=args.overrides)
    out = args.out or str(Path("runs") / "ablate" / sweep.name)
    if args.list:
        if sweep.tune is not None:
            raise ConfigError("sweep.tune", "a tuned sweep picks its runs as trials finish: it has no fixed list")
        print("\n".join(listing(sweep.runs(), ResultStore(out).latest())))
        return 0
    print(f"sweep {args.sweep} -> {out}")
    records, table = ablate(args.sweep, out, overrides=args.overrides, executor=args.executor,
                            workers=args.workers, threads=args.threads, address=args.address,
                            shard_spec=args.shard, run_id=args.run, index=args.index,
                            retry_failed=args.retry_failed, summary_only=args.summary_only, force=args.force)
    print()
    print(table)
    if args.shard is None and args.run is None and args.index is None:
        print(f"summary: {Path(out) / 'summary.md'}, {Path(out) / 'summary.csv'}; plots: {Path(out) / 'plots'}")
    else:
        print(f"part of the sweep recorded under {Path(out) / 'results.d'}; when every part is done: "
              f"hybridseq ablate {args.sweep} --out {out} --summary-only")
    return 1 if any(r.get("status") != "ok" for r in records) else 0


@hookimpl
def hybridseq_register_commands(cli):
    p = cli.add_parser("ablate", help="run a sweep of configs (variants x axes x seeds) and summarise it")
    p.add_argument("sweep", help="sweep YAML file (base config, variants, axes, seeds)")
    p.add_argument("overrides", nargs="*", help="dotlist overrides for every run, applied last (they win over "
                   "variants and axes), "
                   "e.g. train.epochs=2 (they change the run ids: a different config is a different run)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: runs/ablate/<sweep name>)")
    p.add_argument("--retry-failed", action="store_true", help="run again the runs recorded as failed")
    p.add_argument("--summary-only", action="store_true",
                   help="train nothing; summarise the recorded runs (every results file, shards included)")
    p.add_argument("--force", action="store_true", help="write into --out even if it is a non-empty folder "
                   "that is not a hybridseq output folder")
    where = p.add_argument_group("where runs train")
    where.add_argument("--executor", choices=("local", "ray"), default="local",
                       help="local: worker processes on this machine; ray: Ray tasks with the sweep's resources")
    where.add_argument("--address", metavar="auto|HOST:PORT",
                       help="the Ray cluster to use (default: start a Ray on this machine)")
    where.add_argument("--workers", type=int, default=None,
                       help="local worker processes (default: one per visible GPU, else one per core up to 4; "
                       "0 = in this process)")
    where.add_argument("--threads", type=int, default=None,
                       help="torch threads per run (default: OMP_NUM_THREADS if set, else the cores this "
                       "process may use shared by the workers; under Ray: cpus_per_run)")
    part = p.add_argument_group("one part of the sweep (job arrays; each part records into its own file)")
    part.add_argument("--list", action="store_true",
                      help="print the runs in order (index, run id, variant, seed, status) and exit")
    part.add_argument("--run", metavar="ID", help="train exactly the run with this id")
    part.add_argument("--index", type=int, metavar="K",
                      help="train exactly run K of --list (e.g. $SLURM_ARRAY_TASK_ID)")
    part.add_argument("--shard", metavar="i/n", help="train the runs k with k mod n = i (0 <= i < n)")
    p.set_defaults(func=cmd_ablate)
