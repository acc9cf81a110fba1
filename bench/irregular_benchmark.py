"""The irregular benchmark: hybridseq's configurations beside two references, in one protocol.

Every problem of ``configs/benchmarks/irregular.yaml`` is made irregular by dropping a share of each
series' time points (seeded by the run's seed), through hybridseq's data layer, so every model of one
(problem, drop, seed) sees exactly the same tensors. The protocol is the references': the archive's
train split, all of it (no validation split), a fixed number of epochs, the last epoch's weights scored
on the archive's test split. The references are written below in plain PyTorch, not from hybridseq's
blocks:

- ``ref:transformer``: ``[values, mask]`` -> Linear(2C, 64) + the fixed sinusoidal encoding of 1000 t
  (base 10000), two pre-norm ``nn.TransformerEncoderLayer`` (4 heads, feed-forward 128, dropout 0.1),
  LayerNorm, mean over valid positions, Linear; Adam.
- ``ref:gru``: ``[values, mask, Δt]`` -> a one-layer GRU of width 64, the state at the last valid
  position, Linear; Adam.

Each run is one line of ``OUT/results.jsonl``; a rerun skips the runs already there, so the benchmark
can be run in parts (``--configs``, ``--problems``, ``--drops``, ``--seeds``) and printed as a whole. A run
whose projected time (from two timed training steps) is over ``--budget`` seconds is recorded as
skipped with its projected time and activation memory, never dropped; a rerun whose budget covers that
projection trains it.

    python bench/irregular_benchmark.py [--data-root ../shared/data] [--out runs/bench/irregular]
    python bench/irregular_benchmark.py --quick      # smoke run: one small problem, 2 epochs
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
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _irregular_table import table  # noqa: E402
from _timing import fit_within, peak_saved_bytes, results_store  # noqa: E402

import hybridseq as hs  # noqa: E402
from hybridseq.data import collate, load_data  # noqa: E402
from hybridseq.io import append_jsonl, read_jsonl  # noqa: E402
from hybridseq.train.config import train_config  # noqa: E402
from hybridseq.train.evaluate import total_nfe  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "configs" / "benchmarks" / "irregular.yaml"
REFERENCES = ("ref:transformer", "ref:gru")


# -- references, in plain PyTorch ----------------------------------------------------------------------
class RefTransformer(nn.Module):
    def __init__(self, channels: int, classes: int, width: int = 64, time_scale: float = 1000.0):
        super().__init__()
        self.width, self.time_scale = width, time_scale
        self.inp = nn.Linear(2 * channels, width)
        layer = nn.TransformerEncoderLayer(width, 4, 128, dropout=0.1, batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, classes)

    def encode_time(self, t):                                            # t [B, N] -> [B, N, width]
        i = torch.arange(0, self.width, 2, dtype=t.dtype, device=t.device)
        angle = self.time_scale * t[..., None] / 10000 ** (i / self.width)
        return torch.stack([angle.sin(), angle.cos()], -1).flatten(-2)

    def forward(self, batch):
        valid = batch.valid                                                # [B, N]
        observed = batch.mask & valid[..., None]
        x = torch.cat([batch.values * observed, observed.float()], -1)     # [B, N, 2C]
        h = self.inp(x) + self.encode_time(batch.times)
        h = self.norm(self.layers(h, src_key_padding_mask=~valid))
        w = valid.float()[..., None]
        return self.out((h * w).sum(1) / w.sum(1).clamp_min(1))            # [B, classes]


class RefGRU(nn.Module):
    def __init__(self, channels: int, classes: int, width: int = 64):
        super().__init__()
        self.gru = nn.GRU(2 * channels + 1, width, batch_first=True)
        self.out = nn.Linear(width, classes)

    def forward(self, batch):
        valid = batch.valid
        observed = batch.mask & valid[..., None]
        dt = torch.diff(batch.times, dim=1, prepend=batch.times[:, :1])   # [B, N], 0 at the first point
        x = torch.cat([batch.values * observed, observed.float(), dt[..., None]], -1)
        h, _ = self.gru(x)                                                  # [B, N, width]
        last = batch.lengths.clamp_min(1) - 1
        return self.out(h[torch.arange(h.shape[0]), last])


def reference_run(name: str, splits, protocol: dict, seed: int, budget: float) -> dict:
    torch.manual_seed(seed)
    info = splits.info
    model = (RefTransformer if name == "ref:transformer" else RefGRU)(info.channels, info.classes)
    opt = torch.optim.Adam(model.parameters(), lr=protocol["lr"])
    loss_fn = nn.CrossEntropyLoss()

    def step(batch, label):
        loss = loss_fn(model(batch), label)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    loader = splits.loader("train", batch_size=protocol["batch_size"], generator=torch.Generator().manual_seed(seed))
    steps = len(loader)
    batch, targets = next(iter(loader))
    memory = peak_saved_bytes(lambda: model(batch).sum().backward(), list(model.parameters())) / 2**20
    start = time.perf_counter()
    for _ in range(2):
        step(batch, targets["label"])
    projected = (time.perf_counter() - start) / 2 * steps * protocol["epochs"]
    cost = {"params": sum(p.numel() for p in model.parameters()), "nfe": 0, "act_mib": memory}
    if projected > budget:
        return {"status": "skipped", "projected_s": projected, **cost}
    torch.manual_seed(seed)
    model = (RefTransformer if name == "ref:transformer" else RefGRU)(info.channels, info.classes)
    opt = torch.optim.Adam(model.parameters(), lr=protocol["lr"])
    start = time.perf_counter()
    for _ in range(protocol["epochs"]):
        model.train()
        for batch, targets in loader:
            step(batch, targets["label"])
    per_epoch = (time.perf_counter() - start) / protocol["epochs"]
    model.eval()
    right = total = 0
    with torch.no_grad():
        for batch, targets in splits.loader("test", batch_size=64):
            right += int((model(batch).argmax(-1) == targets["label"]).sum())
            total += len(targets["label"])
    return {"status": "ok", "accuracy": right / total, "s_per_epoch": per_epoch, **cost}


# -- hybridseq configurations ---------------------------------------------------------------------------
def hybridseq_config(suite, name: str, splits, protocol: dict, seed: int, **train_over) -> dict:
    info = splits.info
    cfg = hs.load_config(SUITE.parent / suite.base, [*suite.configs[name],
                         f"model.input={{kind: irregular, channels: {info.channels}}}",
                         f"model.head.classes={info.classes}"])
    cfg.data = {"name": "uea", "val_fraction": 0.0}            # the splits are given; this records the rule
    cfg.train = hybridseq_train(protocol, seed, **train_over)
    return cfg


def hybridseq_train(protocol: dict, seed: int, **over) -> dict:
    """The train section of a hybridseq row: the protocol's settings, hybridseq's defaults otherwise."""
    return {"epochs": protocol["epochs"], "lr": protocol["lr"], "batch_size": protocol["batch_size"],
            "seed": seed, "progress": False, "device": "cpu", **over}


def hybridseq_run(suite, name: str, splits, protocol: dict, seed: int, budget: float) -> dict:
    cfg = hybridseq_config(suite, name, splits, protocol, seed)
    model = hs.assemble(cfg.model)
    opt = torch.optim.AdamW(model.parameters())
    loader = splits.loader("train", batch_size=protocol["batch_size"])
    batch, _ = next(iter(loader))
    memory = peak_saved_bytes(lambda: model(batch).x.sum().backward(), list(model.parameters())) / 2**20
    nfe = total_nfe(model)
    start = time.perf_counter()
    for _ in range(2):                                                  # timed steps, for the projection
        model(batch).x.sum().backward()
        opt.step()
    projected = (time.perf_counter() - start) / 2 * len(loader) * protocol["epochs"]
    cost = {"params": sum(p.numel() for p in model.parameters()), "nfe": nfe, "act_mib": memory}
    skipped, results = fit_within(cfg, splits, cost, projected, budget, collate=collate)
    if skipped:
        return skipped
    assert results["selection"] == "last_epoch", results["selection"]
    return {"status": "ok", "accuracy": results["test_accuracy"], "s_per_epoch": results["time_per_epoch"],
            **cost, "nfe": results["nfe"]}


# -- the driver ----------------------------------------------------------------------------------------
def load_splits(problem: dict, data_root: Path, drop: float, seed: int):
    data = {"name": "uea", "val_fraction": 0.0, "irregular": {"drop": drop, "seed": seed}}
    if "folder" in problem:
        data["path"] = str(data_root / problem["folder"] / problem["dataset"])
    else:
        data["dataset"] = problem["dataset"]
    return load_data(data)


def run_key(config: str, problem: str, drop: float, seed: int, protocol: dict, suite) -> str:
    """A digest of everything a run depends on: for hybridseq rows every block's validated config (its
    defaults included) and the full train section, so a changed default reruns them."""
    entry = config
    if config in suite.configs:
        entry = [model_nodes(suite, config), asdict(train_config(hybridseq_train(protocol, seed)))]
    text = json.dumps([config, entry, problem, drop, seed, protocol], sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


_NODES: dict[str, list] = {}


def model_nodes(suite, config: str) -> list:
    """Every block of a configuration with its validated config, as (type, repr) pairs, and a digest of
    the initial weights of a small instance, so that a changed initialisation reruns too (cached)."""
    if config not in _NODES:
        _NODES[config] = file_nodes(SUITE.parent / suite.base, suite.configs[config])
    return _NODES[config]


def file_nodes(path, overrides) -> list:
    """`model_nodes` of the model in a config file with overrides, on 1 channel and 2 classes."""
    cfg = hs.load_config(path, [*overrides, "model.input.channels=1", "model.head.classes=2"])
    torch.manual_seed(0)
    init = hashlib.sha1(b"".join(p.detach().numpy().tobytes() for p in hs.assemble(cfg.model).parameters()))
    return [(n.type, repr(n.cfg)) for n in hs.validate_model(cfg.model).nodes] + [init.hexdigest()]


def settled(record: dict | None, budget: float) -> bool:
    """Whether a recorded run stands: trained, or skipped under a budget it still passes."""
    return record is not None and (record["status"] != "skipped" or record["projected_s"] > budget)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--out", default=str(ROOT / "runs" / "bench" / "irregular"))
    p.add_argument("--configs", nargs="*", help="configurations to run (default: the references and all)")
    p.add_argument("--problems", nargs="*")
    p.add_argument("--drops", nargs="*", type=float)
    p.add_argument("--seeds", nargs="*", type=int)
    p.add_argument("--epochs", type=int, help="override the protocol's epochs (recorded in each run's key)")
    p.add_argument("--budget", type=float, default=1800.0, help="seconds a run may be projected to take")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--print-only", action="store_true", help="print the table of the runs already done")
    p.add_argument("--quick", action="store_true", help="smoke run: BasicMotions, 50%% drop, seed 0, 2 epochs")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    suite = OmegaConf.load(SUITE)
    protocol = {**OmegaConf.to_container(suite.protocol), **({"epochs": args.epochs} if args.epochs else {})}
    configs = args.configs or [*REFERENCES, *suite.configs]
    problems = args.problems or list(suite.problems)
    drops, seeds = args.drops or list(suite.drops), args.seeds or list(suite.seeds)
    if args.quick:
        protocol["epochs"], problems, drops, seeds = 2, ["BasicMotions"], [0.5], [0]
        configs = args.configs or [*REFERENCES, "linear+transformer", "ode_rnn+transformer", "linear+mamba"]
    unknown = [c for c in configs if c not in REFERENCES and c not in suite.configs]
    if unknown:
        p.error(f"unknown configurations {unknown}; choose from {[*REFERENCES, *suite.configs]}")
    store = results_store(p, args.out)
    done = {r["key"]: r for r in read_jsonl(store)} if store.exists() else {}
    for problem in problems if not args.print_only else []:
        spec = dict(suite.problems[problem])
        if "folder" in spec and not (Path(args.data_root) / spec["folder"] / spec["dataset"]).exists():
            print(f"{problem}: not found under {args.data_root}; skipped", file=sys.stderr)
            continue
        for drop in drops:
            for seed in seeds:
                todo = [c for c in configs if not settled(done.get(run_key(c, problem, drop, seed, protocol, suite)),
                                                          args.budget)]
                if not todo:
                    continue
                splits = load_splits(spec, Path(args.data_root), drop, seed)
                for config in todo:
                    key = run_key(config, problem, drop, seed, protocol, suite)
                    start = time.perf_counter()
                    if config in REFERENCES:
                        result = reference_run(config, splits, protocol, seed, args.budget)
                    else:
                        result = hybridseq_run(suite, config, splits, protocol, seed, args.budget)
                    record = {"key": key, "config": config, "problem": problem, "drop": drop, "seed": seed,
                              "epochs": protocol["epochs"], **result, "wall_s": time.perf_counter() - start}
                    append_jsonl(store, record)
                    done[key] = record
                    acc = f"{100 * record['accuracy']:.1f}%" if record["status"] == "ok" else record["status"]
                    print(f"{problem} drop {drop} seed {seed} {config}: {acc} ({record['wall_s']:.0f} s)",
                          file=sys.stderr, flush=True)
    current = [r for r in done.values() if r["epochs"] == protocol["epochs"]
               and r["key"] == run_key(r["config"], r["problem"], r["drop"], r["seed"], protocol, suite)]
    stale = sum(r["epochs"] == protocol["epochs"] for r in done.values()) - len(current)
    if stale:
        print(f"{stale} recorded runs were made under other settings or defaults and are left out of the "
              "table; run the benchmark to redo them", file=sys.stderr)
    latest = {(r["config"], r["problem"], r["drop"], r["seed"]): r for r in current}   # one record per run
    keep = [r for (c, p_, d, s_), r in latest.items() if c in configs and p_ in problems and d in drops
            and s_ in seeds]
    print(f"# irregular benchmark: {protocol['epochs']} epochs, lr {protocol['lr']}, batch {protocol['batch_size']}, "
          f"seeds {seeds}, last epoch's weights, accuracy in % (mean ± std over seeds)")
    print(table(keep, configs, problems, drops, len(seeds)))


if __name__ == "__main__":
    main()
