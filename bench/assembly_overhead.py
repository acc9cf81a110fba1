"""Assembled model vs the same modules wired by hand: forward + backward time ratio (target <= 1.02).

    python bench/assembly_overhead.py [--batch 16] [--length 128] [--d-model 64] [--repeats 60] [--threads 1]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _timing import interleaved  # noqa: E402

import hybridseq as hs  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=60)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (one: steadier on a busy machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = hs.assemble({
        "d_model": args.d_model, "input": {"kind": "irregular", "channels": 6}, "encoder": {"type": "linear"},
        "blocks": [{"type": "transformer", "heads": 4, "repeat": 4}, {"type": "mlp"}],
        "head": {"type": "classify", "classes": 4}})
    modules = [model.nodes[n.name] for n in model.spec.nodes]   # the very same modules, same parameters
    seq = hs.Seq(torch.randn(args.batch, args.length, 6))
    batch = hs.IrregularBatch.from_seq(seq)

    def by_hand():
        out = batch
        for m in modules:
            out = m(out)
        return out

    def step(forward):
        def run():
            model.zero_grad(set_to_none=True)
            forward().x.sum().backward()
        return run

    torch.testing.assert_close(model(batch).x, by_hand().x)
    times = interleaved({"assembled": step(lambda: model(batch)), "by_hand": step(by_hand)}, repeats=args.repeats)
    ratio = times["assembled"] / times["by_hand"]
    print(f"forward+backward  batch={args.batch} L={args.length} d_model={args.d_model}  "
          f"{len(modules)} nodes, {sum(p.numel() for p in model.parameters()):,} params, {args.threads} thread(s)")
    print(f"assembled {times['assembled'] * 1e3:.2f} ms | by hand {times['by_hand'] * 1e3:.2f} ms | "
          f"ratio {ratio:.3f} (target <= 1.02)")


if __name__ == "__main__":
    main()
