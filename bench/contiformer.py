"""ContiFormer attention: our all-pairs batched solve vs a straightforward per-pair implementation.

The reference below loops over every (series, query i, key j) and integrates that one pair's key/value
ODE on its own, with the same parameters, solver and Gauss–Legendre nodes; the outputs must agree. Both
run forward + backward, interleaved, and the script prints median times and the bytes of activations
autograd keeps for backward (saved tensors, each storage once, parameters excluded), plus the CUDA peak
memory when run on a GPU.

    python bench/contiformer.py [--batch 4] [--length 16] [--d-model 16] [--repeats 3] [--device cpu]
    python bench/contiformer.py --quick   # smoke run: B=1, N=4, one repeat
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _timing import interleaved, peak_saved_bytes  # noqa: E402

from hybridseq import build_block  # noqa: E402
from hybridseq.blocks.encoders.common import clean_inputs  # noqa: E402
from hybridseq.blocks.encoders.contiformer import _PairField  # noqa: E402
from hybridseq.testing import example_input  # noqa: E402


def per_pair_forward(block, batch):
    """The encoder's forward written pair by pair (no batching over pairs)."""
    values, observed, times, valid = clean_inputs(batch)
    b, n, _ = values.shape
    h = block.cfg.heads
    x = block.embed(torch.cat([values, observed.to(values.dtype), block.time(times)], -1))
    q, k, v = block.qkv(x).chunk(3, dim=-1)
    d = k.shape[-1]
    e = d // h
    grid = torch.cat([block.nodes.new_zeros(1), block.nodes]).to(x.dtype)
    rows = []
    for s in range(b):
        outs = []
        for i in range(n):
            scores, means = [], []
            for j in range(int(batch.lengths[s])):
                start, span = times[s, j].view(1), (times[s, i] - times[s, j]).view(1)
                y0 = torch.cat([k[s, j], v[s, j]])[None]                               # [1, 2D]
                path = block.solver(_PairField(block.field, start, span), y0, grid)[1:, 0]   # [Q, 2D]
                mean = block.weights.to(x.dtype) @ path                                 # [2D]
                k_mean, v_mean = mean[:d].view(h, e), mean[d:].view(h, e)
                scores.append((q[s, i].view(h, e) * k_mean).sum(-1) / math.sqrt(e))      # [H]
                means.append(v_mean)
            attn = torch.softmax(torch.stack(scores, -1), dim=-1)                        # [H, J]
            outs.append(torch.einsum("hj,jhe->he", attn, torch.stack(means)).reshape(d))
        rows.append(torch.stack(outs))
    return x + block.proj(torch.stack(rows))


def train_step(fn, device):
    """Forward + backward of ``fn``, finished on the device when the call returns."""
    def run():
        fn().square().sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=16)
    parser.add_argument("--d-model", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="smoke run: B=1, N=4, one repeat")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.length, args.repeats = 1, 4, 1
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    block = build_block("contiformer", d_in=3, d_model=args.d_model).to(device)
    batch = example_input(type(block), block.cfg, batch=args.batch, length=args.length).to(device)
    valid = batch.valid

    ours, reference = (lambda: block(batch).x[valid]), (lambda: per_pair_forward(block, batch)[valid])
    with torch.no_grad():
        a, b = ours(), reference()
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    print(f"outputs agree, max |difference| {(a - b).abs().max().item():.1e} (B={args.batch}, N={args.length}, "
          f"d_model={args.d_model}, "
          f"{int(valid.sum())} valid observations, {block.cfg.quadrature} Gauss-Legendre nodes, "
          f"solver {block.cfg.solver.method})")

    fns = {"batched": ours, "per-pair": reference}
    times = interleaved({name: train_step(fn, device) for name, fn in fns.items()}, repeats=args.repeats, warmup=1)
    memory = {name: peak_saved_bytes(train_step(fn, device), list(block.parameters())) for name, fn in fns.items()}
    for name in fns:
        print(f"{name:>9}: forward+backward median {times[name] * 1e3:9.1f} ms, "
              f"peak activations held for backward {memory[name] / 2**20:8.2f} MiB")
    print(f"speed-up (per-pair / batched): {times['per-pair'] / times['batched']:.1f}x; "
          f"saved-memory ratio (batched / per-pair): {memory['batched'] / memory['per-pair']:.2f} "
          f"(median of {args.repeats} interleaved repeats, {torch.get_num_threads()} thread(s))")
    if device.type == "cuda":
        peaks = {}
        for name, fn in fns.items():
            torch.cuda.reset_peak_memory_stats()
            train_step(fn, device)()
            peaks[name] = torch.cuda.max_memory_allocated()
        print(f"CUDA peak memory ratio (batched / per-pair): {peaks['batched'] / peaks['per-pair']:.2f}")


if __name__ == "__main__":
    main()
