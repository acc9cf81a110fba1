"""Mamba layer, forward + backward: hybridseq's pure-PyTorch scan vs mambapy (and mamba-ssm on a GPU).

    pip install -e ".[bench]"          # mambapy: used by this script only
    python bench/ssm_scan.py [--lengths 1024 4096] [--repeats 5]
    python bench/ssm_scan.py --quick   # smoke run: L = 256, one repeat, s4d at L = 256 and 1024

One residual Mamba layer (d_model 128, d_state 16, expand 2, conv width 4, dt_rank ceil(128/16) = 8,
the same for both), batch 8. Times are medians of interleaved repeats in one process. Peak memory:
on a GPU, ``torch.cuda.max_memory_allocated`` during one forward + backward; on CPU, the rise of the
process's peak resident set size (VmHWM, reset just before) over its size before the pass, each variant measured
in a fresh subprocess (it counts everything the pass touches: activations, saved tensors, workspaces,
allocator slack). Then s4d forward + backward at L = 1k, 4k, 16k to show the O(L log L) scaling, and
s4d / s4 with observation times (irregular gaps): their vectorised timed pass (s4d: the segmented
chunk-parallel scan; s4: ``scan: chunked``) against the same block on a regular grid and against the
sequential recurrence (s4d: ``step`` per position; s4: ``scan: loop``), printing both ratios.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time

import torch

import hybridseq as hs

BATCH, D_MODEL, D_STATE, EXPAND, D_CONV = 8, 128, 16, 2, 4


def make(name: str, device: str) -> torch.nn.Module:
    """One residual Mamba layer: 'ours' (impl torch), 'cuda' (ours on mamba-ssm's kernel), 'mambapy'."""
    if name == "mambapy":
        from mambapy.mamba import MambaConfig, ResidualBlock
        cfg = MambaConfig(d_model=D_MODEL, n_layers=1, d_state=D_STATE, expand_factor=EXPAND, d_conv=D_CONV)
        return ResidualBlock(cfg).to(device)
    impl = "torch" if name == "ours" else "cuda"
    return hs.build_block("mamba", d_model=D_MODEL, d_state=D_STATE, expand=EXPAND, d_conv=D_CONV,
                          impl=impl).to(device)


def run_once(model, x: torch.Tensor, wants_seq: bool) -> float:
    """Seconds for one forward + backward."""
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    y = model(hs.Seq(x=x)).x if wants_seq else model(x)
    y.square().mean().backward()
    sync()
    return time.perf_counter() - start


def status_kib(key: str) -> int:
    """A field of /proc/self/status in KiB: VmRSS (resident now) or VmHWM (peak resident)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))


def peak_memory(name: str, length: int, device: str) -> float:
    """MiB of peak memory of one forward + backward of variant ``name`` (see the module docstring)."""
    if device == "cuda":
        model = make(name, device)
        x = torch.randn(BATCH, length, D_MODEL, device=device, requires_grad=True)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run_once(model, x, name != "mambapy")
        return (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    out = subprocess.run([sys.executable, __file__, "--child", name, str(length), "--threads",
                          str(torch.get_num_threads())], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["mib"]


def child(name: str, length: int) -> None:
    torch.manual_seed(0)
    model = make(name, "cpu")
    x = torch.randn(BATCH, length, D_MODEL, requires_grad=True)
    with open("/proc/self/clear_refs", "w") as f:     # reset the peak (VmHWM) to the current size
        f.write("5")
    before = status_kib("VmRSS")
    run_once(model, x, name != "mambapy")
    print(json.dumps({"mib": (status_kib("VmHWM") - before) / 1024}))


def compare(lengths, repeats: int, device: str) -> None:
    names = ["ours", "mambapy"]
    if device == "cuda" and hs.ops.cuda_kernels_available():
        names.append("cuda")
    print(f"Mamba layer fwd+bwd, batch {BATCH}, d_model {D_MODEL}, d_state {D_STATE}, expand {EXPAND}, "
          f"device {device}, threads {torch.get_num_threads()}")
    for length in lengths:
        torch.manual_seed(0)
        models = {n: make(n, device) for n in names}
        x = torch.randn(BATCH, length, D_MODEL, device=device, requires_grad=True)
        for n in names:                                  # warm-up
            run_once(models[n], x, n != "mambapy")
        times = {n: [] for n in names}
        for _ in range(repeats):                         # interleaved
            for n in names:
                times[n].append(run_once(models[n], x, n != "mambapy"))
        med = {n: statistics.median(v) for n, v in times.items()}
        mem = {n: peak_memory(n, length, device) for n in names}
        for n in names:
            print(f"  L={length:5d} {n:8s} time {med[n] * 1e3:9.1f} ms   peak {mem[n]:8.1f} MiB")
        print(f"  L={length:5d} mambapy/ours: time x{med['mambapy'] / med['ours']:.2f}, "
              f"memory x{mem['mambapy'] / max(mem['ours'], 1e-9):.2f}")
        if "cuda" in names:
            print(f"  L={length:5d} ours/mamba-ssm: time x{med['ours'] / med['cuda']:.2f}, "
                  f"memory x{mem['ours'] / max(mem['cuda'], 1e-9):.2f}")


def s4d_scaling(lengths, repeats: int, device: str) -> None:
    print(f"s4d fwd+bwd, batch {BATCH}, d_model {D_MODEL}, d_state 64")
    model = hs.build_block("s4d", d_model=D_MODEL, d_state=64).to(device)
    base = None
    for length in lengths:
        x = torch.randn(BATCH, length, D_MODEL, device=device, requires_grad=True)
        run_once(model, x, True)
        t = statistics.median(run_once(model, x, True) for _ in range(repeats))
        per = t / (length * math.log2(length))
        base = base or per
        print(f"  L={length:6d} time {t * 1e3:9.1f} ms   time / (L log L) relative to L={lengths[0]}: {per / base:.2f}")


def timed_cost(lengths, repeats: int, device: str, batch: int, ref_max: int) -> None:
    """s4d and s4 with observation times: the vectorised timed pass against the sequential recurrence and
    against the same block on a regular grid."""
    print(f"timed fwd+bwd, batch {batch}, d_model {D_MODEL}, d_state 64, gaps ~ U(0.1, 2); sequential references "
          f"up to L={ref_max}")
    # name, vectorised timed pass, sequential reference (s4d: step() per position; s4: its per-position scan)
    for name, fast, slow in (("s4d", {}, "step"), ("s4", {"scan": "chunked"}, {"scan": "loop"})):
        torch.manual_seed(0)
        model = hs.build_block(name, d_model=D_MODEL, d_state=64, **fast).to(device)
        ref = None
        if isinstance(slow, dict):
            ref = hs.build_block(name, d_model=D_MODEL, d_state=64, **slow).to(device)
            ref.load_state_dict(model.state_dict())
        for length in lengths:
            x = torch.randn(batch, length, D_MODEL, device=device, requires_grad=True)
            t = torch.cumsum(0.1 + 1.9 * torch.rand(batch, length, device=device), 1)
            runs = {"regular": lambda: run_seq(model, hs.Seq(x=x)),
                    "timed": lambda: run_seq(model, hs.Seq(x=x, t=t))}
            if length <= ref_max:
                runs["sequential"] = ((lambda: run_stepped(model, hs.Seq(x=x, t=t))) if ref is None
                                      else (lambda: run_seq(ref, hs.Seq(x=x, t=t))))
            res = {}
            for label, run in runs.items():
                if repeats > 1:
                    run()                                                  # warm-up
                res[label] = statistics.median(run() for _ in range(repeats))
            line = (f"  {name:4s} L={length:6d} regular {res['regular'] * 1e3:9.1f} ms   timed "
                    f"{res['timed'] * 1e3:9.1f} ms   timed/regular x{res['timed'] / res['regular']:.2f}")
            if "sequential" in res:
                line += (f"   sequential {res['sequential'] * 1e3:9.1f} ms   sequential/timed "
                         f"x{res['sequential'] / res['timed']:.2f}")
            print(line, flush=True)


def run_stepped(model, seq) -> float:
    """Seconds for forward + backward of the recurrence one position at a time (``step``), with autograd."""
    sync = torch.cuda.synchronize if seq.x.is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    gaps, state, ys = model.gaps(seq), model.allocate_state(seq.x.shape[0], seq.x.device), []
    for step in range(seq.x.shape[1]):
        y, state = model.step(seq.x[:, step], state, gaps[:, step])
        ys.append(y)
    torch.stack(ys, 1).square().mean().backward()
    sync()
    return time.perf_counter() - start


def run_seq(model, seq) -> float:
    """Seconds for one forward + backward of ``model`` on a `Seq`."""
    sync = torch.cuda.synchronize if seq.x.is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    model(seq).x.square().mean().backward()
    sync()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smoke run: L=256, one repeat, s4d at 256 and 1024")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (default 1: on a shared machine a second thread that is descheduled "
                             "stalls every parallel op by a scheduler slice, which drowns what is measured)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--only", choices=("mamba", "s4d", "timed"), nargs="+", default=("mamba", "s4d", "timed"))
    parser.add_argument("--timed-batch", type=int, default=BATCH, help="batch of the timed s4d / s4 runs")
    parser.add_argument("--timed-lengths", type=int, nargs="+", help="L of the timed runs (default 1k, 4k, 16k)")
    parser.add_argument("--ref-max", type=int, default=16384,
                        help="longest L at which the sequential references run (they are slow and memory-hungry)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        return child(args.child[0], int(args.child[1]))
    if args.quick:
        args.lengths, args.repeats = [256], 1
    long = (256, 1024) if args.quick else (1024, 4096, 16384)
    if "mamba" in args.only:
        compare(args.lengths, args.repeats, args.device)
    if "s4d" in args.only:
        s4d_scaling(long, max(1, args.repeats // 2), args.device)
    if "timed" in args.only:
        timed_cost(args.timed_lengths or long, max(1, args.repeats // 2), args.device, args.timed_batch, args.ref_max)


if __name__ == "__main__":
    main()
