"""CLI sub-commands ``hybridseq train`` and ``hybridseq evaluate`` (registered through the commands hook)."""
from __future__ import annotations

import os
import time
from pathlib import Path

from ..errors import ConfigError
from ..hookspecs import hookimpl
from ..io import to_json


def cmd_train(args) -> int:
    from ..config import compose, split_args
    from ..train.checkpoint import RunDir
    from ..train.trainer import train

    if args.config is not None and "=" in args.config and not Path(args.config).exists():
        args.overrides, args.config = [args.config, *args.overrides], None   # `train --resume --out R k=v`
    if args.config is None:
        if not (args.resume and args.out):
            raise ConfigError("CONFIG", "a config file is needed (or --resume --out RUN_DIR to continue a run)")
        args.config = str(RunDir(args.out).config)
    files, overrides = split_args(args.overrides)
    cfg = compose([args.config, *files], overrides)
    out = args.out or f"runs/{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    results = train(cfg, out, resume=args.resume, compile=True if args.compile else None,
                    progress=False if args.no_progress else None, force=args.force)
    if int(os.environ.get("RANK", "0")) == 0:          # under torchrun, rank 0 reports
        print(to_json({k: v for k, v in results.items() if k != "curves"}, indent=2))
        print(f"run directory: {out}")
    return 0


def cmd_config(args) -> int:
    from ..config import compose, printable, split_args

    files, overrides = split_args(args.overrides)
    print(printable(compose([args.config, *files], overrides), resolve=not args.unresolved), end="")
    return 0


def cmd_evaluate(args) -> int:
    from ..train.evaluate import evaluate_run

    result = evaluate_run(args.run_dir, args.data or (), args.split, args.checkpoint, overrides=args.overrides)
    print(to_json(result, indent=2))
    return 0


@hookimpl
def hybridseq_register_commands(cli):
    p = cli.add_parser("train", help="train a model from a config; writes a resumable run directory")
    p.add_argument("config", nargs="?", help="YAML config file (optional with --resume --out RUN_DIR)")
    p.add_argument("overrides", nargs="*", help="more YAML files (a later model section replaces the earlier "
                   "one: EXPERIMENT.yaml MODEL.yaml) and dotlist overrides: train.epochs=5 model.d_model=32")
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (default: runs/<config>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (train.compile=true)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or per-epoch lines")
    p.add_argument("--force", action="store_true", help="write into --out even if it is a non-empty folder "
                   "that is not a hybridseq run directory")
    p.set_defaults(func=cmd_train)

    p = cli.add_parser("config", help="print the composed config (files merged, overrides applied, "
                       "interpolations resolved) without validating or running it")
    p.add_argument("config", help="YAML config file")
    p.add_argument("overrides", nargs="*", help="more YAML files and dotlist overrides, as for train")
    p.add_argument("--unresolved", action="store_true", help="keep interpolations as written")
    p.set_defaults(func=cmd_config)

    p = cli.add_parser("evaluate", help="score a run's checkpoint on a data split; prints JSON")
    p.add_argument("run_dir", help="run directory written by `hybridseq train`")
    p.add_argument("overrides", nargs="*", help="dotlist overrides of the saved config that keep the weights' "
                   "shapes, e.g. model.blocks[0].steps=16 (a continuous-depth head at another depth)")
    p.add_argument("--data", action="append", metavar="KEY=VALUE",
                   help="override data.KEY for evaluation (repeatable), e.g. --data irregular.drop=0.7")
    p.add_argument("--split", default="test", help="train, val or test (default: test)")
    p.add_argument("--checkpoint", default="best", help="checkpoint name in the run dir (default: best)")
    p.set_defaults(func=cmd_evaluate)
