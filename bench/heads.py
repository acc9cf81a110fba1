"""Reasoning heads: activation memory of `neural_ode_transformer` with and without adjoint as the number
of depth steps grows, and time and memory of every reasoning head (`pde_attention` variants,
`ode_transformer`, `neural_ode_transformer`) vs a plain `transformer` layer at equal width, per length.

Memory is the peak, over one forward AND its backward pass, of the bytes autograd holds for backward:
every tensor packed by a saved-tensors hook is counted (each storage once) while the graph holding it
is alive, parameters excluded. Without adjoint that peak is the forward's whole graph; with adjoint the
forward keeps nothing and the backward builds and frees one step's graph at a time, so the peak is one
step's. The count is the same on any device. Time is forward + backward, interleaved repeats, median.

    python bench/heads.py [--batch 8] [--length 128] [--lengths 512 2048] [--d-model 64] [--repeats 10]
    python bench/heads.py --quick      # tiny sizes, a few seconds: checks that it runs
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _timing import interleaved, peak_saved_bytes  # noqa: E402

import hybridseq as hs  # noqa: E402

MiB = 2**20


def memory_table(args) -> None:
    print(f"neural_ode_transformer peak activation memory (saved tensors, forward + backward), "
          f"d_model={args.d_model}, batch={args.batch}, length={args.length}, solver rk4")
    print(f"{'steps':>5}  {'nfe (forward)':>4}  {'backprop MiB':>12}  {'adjoint MiB':>11}  {'ratio':>6}")
    seq = hs.Seq(x=torch.randn(args.batch, args.length, args.d_model, requires_grad=True))
    base = {}
    for steps in (4, 8, 16, 32):
        row = {}
        for adjoint in (False, True):
            torch.manual_seed(0)
            block = hs.build_block("neural_ode_transformer", d_model=args.d_model, heads=4, steps=steps,
                                   solver={"method": "rk4", "adjoint": adjoint})
            stats = {}

            def forward_backward():
                block.solver.reset()
                out = block(seq).x
                stats.update(block.stats())                   # forward NFE, before backward adds any
                out.sum().backward()
            row[adjoint] = peak_saved_bytes(forward_backward, list(block.parameters()))
        base.setdefault("plain", row[False])
        base.setdefault("adjoint", row[True])
        print(f"{steps:>5}  {stats['nfe']:>13}  {row[False] / MiB:>12.2f}  {row[True] / MiB:>11.2f}  "
              f"{row[False] / row[True]:>6.1f}x")
    print("growth 4 -> 32 steps: backprop {:.1f}x, adjoint {:.2f}x".format(
        row[False] / base["plain"], row[True] / base["adjoint"]))


VARIANTS = {
    "transformer": ("transformer", {}),
    "pde diffusion/states explicit": ("pde_attention", {}),
    "pde diffusion/states spectral": ("pde_attention", {"stepper": "spectral"}),
    "pde wave/states explicit": ("pde_attention", {"pde": "wave"}),
    "pde diffusion/weights explicit": ("pde_attention", {"target": "weights"}),
    "pde advection_diffusion/weights": ("pde_attention", {"pde": "advection_diffusion", "target": "weights"}),
    "pde diffusion/weights causal": ("pde_attention", {"target": "weights", "causal": True}),
    "ode_transformer rk2": ("ode_transformer", {}),
    "neural_ode_transformer (default)": ("neural_ode_transformer", {}),
}


def time_table(args, length: int) -> None:
    """Forward + backward time and saved-tensor memory of every variant, as ratios to a transformer layer."""
    d = args.d_model
    seq = hs.Seq(x=torch.randn(args.batch, length, d, requires_grad=True))
    blocks = {name: hs.build_block(kind, d_model=d, heads=4, **opts) for name, (kind, opts) in VARIANTS.items()
              if name == "transformer" or not any(word in name for word in args.exclude)}

    def run(block):
        return lambda: block(seq).x.sum().backward()

    times = interleaved({name: run(b) for name, b in blocks.items()}, repeats=args.repeats, warmup=1)
    memory = {name: peak_saved_bytes(run(b), list(b.parameters())) for name, b in blocks.items()}
    print(f"\nforward+backward, d_model={d}, batch={args.batch}, length={length}, heads=4, "
          f"{torch.get_num_threads()} thread(s), median of {args.repeats} interleaved repeats")
    print(f"{'layer':<34} {'ms':>9} {'time':>7} {'MiB':>9} {'memory':>7}  substeps")
    for name, seconds in times.items():
        block = blocks[name]
        steps = block.cfg.substeps() if hasattr(block.cfg, "substeps") else ""
        print(f"{name:<34} {seconds * 1e3:9.1f} {seconds / times['transformer']:6.2f}x "
              f"{memory[name] / MiB:9.1f} {memory[name] / memory['transformer']:6.2f}x  {steps}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=128, help="sequence length of the memory table")
    ap.add_argument("--lengths", type=int, nargs="+", default=[512, 2048], help="lengths of the time tables")
    ap.add_argument("--skip-memory", action="store_true", help="only the time tables")
    ap.add_argument("--exclude", nargs="*", default=[], help="skip variants whose name contains any of these words")
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (1: stable timings on a shared CPU)")
    ap.add_argument("--quick", action="store_true", help="batch 2, length 16, d_model 16, 2 repeats")
    args = ap.parse_args()
    if args.quick:
        args.batch, args.length, args.d_model, args.repeats, args.lengths = 2, 16, 16, 2, [32]
    torch.set_num_threads(args.threads)
    if not args.skip_memory:
        memory_table(args)
    for length in args.lengths:
        time_table(args, length)


if __name__ == "__main__":
    main()
