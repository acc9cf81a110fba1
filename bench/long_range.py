"""The long-range token benchmark: sequence models at one width and parameter budget on selective copying
and ListOps, trained by hybridseq's own trainer from ``configs/sweeps/long_range.yaml``.

Each run of the sweep (a variant ``<problem>/<model>`` at a seed) is composed by the sweep machinery, so
a row here is exactly the run ``hybridseq ablate configs/sweeps/long_range.yaml`` would train; ``--set``
adds overrides after the sweep's (smaller data, fewer epochs) and they are part of the run's key. Before
training, two optimizer steps on one batch are timed and the activation memory autograd holds for one
step is counted (``act. MiB``, the same on every device); a run whose projected training time is over
``--budget`` seconds is recorded as skipped with that projection and memory, never dropped. Accuracy is
the task's test accuracy: per answer token on selective copying, per sequence on ListOps.

Each run is one line of ``OUT/results.jsonl``; a rerun skips the runs already there (a skipped one runs
when a later ``--budget`` covers its projection), so the grid can be run in parts (``--problems``,
``--models``, ``--seeds``) and printed as a whole.

    python bench/long_range.py [--out runs/bench/long_range] [--budget 3600] [--set data.tokens=4 ...]
    python bench/long_range.py --quick      # smoke run: tiny sequences, two steps per model
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).parent))
from _timing import fit_within, peak_saved_bytes, results_store  # noqa: E402

import hybridseq as hs  # noqa: E402
from hybridseq.ablate.sweep import load_sweep  # noqa: E402
from hybridseq.data import load_data  # noqa: E402
from hybridseq.io import append_jsonl, read_jsonl  # noqa: E402
from hybridseq.train.config import train_config  # noqa: E402
from hybridseq.train.prepare import prepare  # noqa: E402
from hybridseq.train.tasks import with_placeholder_widths  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "configs" / "sweeps" / "long_range.yaml"
# --quick: every model, tiny problems, two optimizer steps (the test suite runs this)
QUICK_PROBLEMS = {"copy256": ["data.length=24", "data.tokens=4", "data.n_train=16", "data.n_test=8"],
                  "listops2048": ["data.min_length=8", "data.max_length=40", "data.n_train=16", "data.n_test=8"]}
QUICK = ["train.epochs=1", "train.max_steps_per_epoch=2", "data.batch_size=4"]


def retry(record: dict, budget: float) -> bool:
    """A recorded run runs again only if it was skipped and the budget now covers its projection."""
    return record["status"] == "skipped" and record["projected_s"] <= budget


def split_label(variant: str) -> tuple[str, str]:
    """``copy256/mamba`` -> (``copy256``, ``mamba``)."""
    problem, model = variant.split("/", 1)
    return problem, model


def run_key(run, cfg) -> str:
    """A digest of the sweep's run id (base config, overrides, seed), every block's validated config with
    its defaults and the validated train section, so a changed default reruns the row."""
    model = hs.validate_model(with_placeholder_widths(cfg).model)
    nodes = [(n.type, repr(n.cfg)) for n in model.nodes]
    text = json.dumps([run.run_id, nodes, asdict(train_config(cfg.train))], sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def probe(cfg, splits) -> tuple[dict, float]:
    """Parameters, activation MiB of one training step, steps per epoch, and the projected seconds of
    the run's training (two timed optimizer steps on one batch, times the steps of all epochs)."""
    p = prepare(cfg, splits=splits)
    model, task = p.model.train(), p.task
    opt = torch.optim.AdamW(model.parameters(), lr=p.tcfg.lr)
    loader = splits.loader("train", batch_size=p.batch_size)
    batch, targets = next(iter(loader))

    def step():
        loss = task.loss(model(batch).x, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()

    memory = peak_saved_bytes(step, list(model.parameters())) / 2**20
    start = time.perf_counter()
    for _ in range(2):
        step()
        opt.step()
    steps = min(len(loader), p.tcfg.max_steps_per_epoch or len(loader))
    projected = (time.perf_counter() - start) / 2 * steps * p.tcfg.epochs
    cost = {"params": sum(q.numel() for q in model.parameters()), "act_mib": memory, "steps_per_epoch": steps,
            "epochs": p.tcfg.epochs, "length": splits.info.max_len}
    return cost, projected


def bench_run(cfg, splits, budget: float, progress: bool = False) -> dict:
    """Train one run with hybridseq's trainer, or record it as skipped with its projected cost."""
    cost, projected = probe(cfg, splits)
    skipped, results = fit_within(cfg, splits, cost, projected, budget, progress=progress)
    if skipped:
        return skipped
    return {"status": "ok", "accuracy": results["test_accuracy"], "s_per_epoch": results["time_per_epoch"],
            "epochs": results["epochs"], "selection": results["selection"], "peak_mem_mb": results["peak_mem_mb"],
            "mem_kind": results["mem_kind"], "projected_s": projected, **cost}


def duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def table(records: list[dict]) -> str:
    """Markdown, one row per (problem, model): the longest sequence, params, accuracy, s/epoch, activation
    MiB and the epochs × optimizer steps trained."""
    head = ["problem", "L", "model", "params", "test acc. %", "s/epoch", "act. MiB", "epochs × steps"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        problem, model = split_label(r["variant"])
        if r["status"] == "ok":
            cells = [f"{100 * r['accuracy']:.1f}", f"{r['s_per_epoch']:.1f}"]
        elif r["status"] == "skipped":
            cells = [f"skipped (projected {duration(r['projected_s'])})", "—"]
        elif r["status"] == "failed":
            cells = [f"failed: {r['error']['type']}", "—"]
        else:
            cells = ["not run", "—"]
        act = f"{r['act_mib']:.0f}" if "act_mib" in r else "—"
        shape = f"{r['epochs']} × {r['steps_per_epoch']}" if "epochs" in r and "steps_per_epoch" in r else "—"
        cost = [f"{r['length']:,}", model, f"{r['params']:,}"] if "params" in r else ["—", model, "—"]
        lines.append("| " + " | ".join([problem, *cost, *cells, act, shape]) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(ROOT / "runs" / "bench" / "long_range"))
    p.add_argument("--problems", nargs="*", help="problems to run (copy256, copy1024, copy4096, listops2048)")
    p.add_argument("--models", nargs="*", help="models to run (default: all of the sweep)")
    p.add_argument("--seeds", nargs="*", type=int)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="overrides after the sweep's (recorded in each run's key), e.g. train.epochs=5")
    p.add_argument("--budget", type=float, default=3600.0, help="seconds a run may be projected to take")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--progress", action="store_true", help="show each run's epochs as it trains")
    p.add_argument("--print-only", action="store_true", help="print the table of the runs already done")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny problems, two steps per model")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    sweep = load_sweep(SWEEP)
    labels = [split_label(label) for label, _ in sweep.groups()]
    problems = args.problems or (list(QUICK_PROBLEMS) if args.quick else list(dict.fromkeys(q for q, _ in labels)))
    models = args.models or list(dict.fromkeys(m for _, m in labels))
    seeds = args.seeds or sweep.seeds
    known = {x for pair in labels for x in pair}
    unknown = sorted({*problems, *models} - known)
    if unknown:
        p.error(f"unknown problems or models {unknown}; the sweep has {sorted(known)}")
    store = results_store(p, args.out)
    done = {r["key"]: r for r in read_jsonl(store)} if store.exists() else {}
    chosen, data_cache = [], {}
    for problem in problems:
        extra = [*(QUICK + QUICK_PROBLEMS.get(problem, []) if args.quick else []), *args.set]
        for label, over in sweep.groups():
            where, model = split_label(label)
            if where != problem or model not in models:
                continue
            for seed in seeds:
                run = sweep.run(label, over, seed, extra)
                cfg = sweep.config(run)
                key = run_key(run, cfg)
                chosen.append((key, label))
                if args.print_only or key in done and not retry(done[key], args.budget):
                    continue
                data_key = OmegaConf.to_yaml(cfg.data, resolve=True)
                if data_key not in data_cache:
                    data_cache.clear()                                   # one problem's data at a time
                    data_cache[data_key] = load_data(cfg.data)
                start = time.perf_counter()
                try:
                    result = bench_run(cfg, data_cache[data_key], args.budget, args.progress)
                except Exception as err:  # a run that breaks is a row of the table, not the end of the grid
                    result = {"status": "failed", "error": {"type": type(err).__name__, "message": str(err)}}
                record = {"key": key, "variant": label, "seed": seed, "overrides": run.overrides, **result,
                          "threads": torch.get_num_threads(), "wall_s": time.perf_counter() - start}
                append_jsonl(store, record)
                done[key] = record
                acc = f"{100 * record['accuracy']:.1f}%" if record["status"] == "ok" else record["status"]
                print(f"{label} seed {seed}: {acc} ({record['wall_s']:.0f} s)", file=sys.stderr, flush=True)
    rows = [done.get(key, {"variant": label, "status": "not run"}) for key, label in chosen]
    print(f"# long-range token benchmark ({SWEEP.relative_to(ROOT)}{' --quick' if args.quick else ''}"
          f"{' --set ' + ' '.join(args.set) if args.set else ''}), seeds {seeds}, {args.threads} thread(s)")
    print(table(rows))


if __name__ == "__main__":
    main()
