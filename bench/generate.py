"""Generation speed and memory vs sequence length: a causal transformer (key/value cache) vs mamba (recurrent
step), both through `hybridseq.generate`.

    python bench/generate.py [--lengths 256 1024 4096] [--d-model 64] [--layers 2] [--device cpu]
    python bench/generate.py --quick   # smoke run: L = 32 and 64

Each model is an `embedding` encoder, ``--layers`` blocks and an `lm` head over 256 tokens, untrained
(speed does not depend on the weights); the transformer has learned positions and ``causal: true``, mamba
none. One prompt token, then L - 1 greedy tokens, batch ``--batch``: L positions read in all. tokens/s is
L × batch over the wall time of that loop (after a short warm-up), one thread; "ms/token at the end" is
the mean time of the last L/8 steps (the cost of a token at context about L). Params leave out the
embedding (token table; the transformer's position table grows with the longest L). Memory: ``state`` is the
decoder state after the L-th position, the exact bytes of every tensor in it (the key/value caches, or the
SSM and convolution states): what a longer sequence adds. On a GPU ``peak`` is also
``torch.cuda.max_memory_allocated`` over the loop (weights included).
"""
from __future__ import annotations

import argparse
import time

import torch

import hybridseq as hs
from hybridseq.generate import Decoder, generate

VOCAB = 256
WARMUP = 8                       # tokens generated before timing
TAIL = 8                         # ms/token at the end: over the last 1/TAIL of the positions


def model_for(kind: str, d_model: int, layers: int, max_len: int) -> hs.HybridModel:
    if kind == "transformer":
        encoder = {"type": "embedding", "positions": "learned", "max_len": max_len}
        block = {"type": "transformer", "heads": 4, "mlp_ratio": 2.0, "causal": True, "repeat": layers}
    else:
        encoder = {"type": "embedding", "positions": "none"}
        block = {"type": "mamba", "d_state": 16, "n_layer": layers, "repeat": layers}
    torch.manual_seed(0)
    return hs.assemble({"d_model": d_model, "input": {"kind": "tokens", "vocab": VOCAB}, "encoder": encoder,
                        "blocks": [block], "head": {"type": "lm", "vocab": VOCAB}}).eval()


class Recording(Decoder):
    """A decoder that keeps the state after its latest step and the time each step ended."""

    def __init__(self, model):
        super().__init__(model)
        self.ends: list[float] = []

    def step(self, tokens, state):
        logits, self.last = super().step(tokens, state)
        self.ends.append(time.perf_counter())
        return logits, self.last


def state_bytes(state) -> int:
    """Bytes of every tensor in a decoder state (nested dicts of tensors)."""
    if isinstance(state, torch.Tensor):
        return state.nbytes
    if isinstance(state, dict):
        return sum(state_bytes(v) for v in state.values())
    return 0


def measure(kind: str, length: int, args) -> dict:
    device = torch.device(args.device)
    model = model_for(kind, args.d_model, args.layers, max(args.lengths)).to(device)
    decoder = Recording(model)
    prompt = torch.zeros(args.batch, 1, dtype=torch.long, device=device)
    generate(model, prompt, WARMUP, temperature=0.0, decoder=decoder)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    decoder.ends.clear()
    start = time.perf_counter()
    generate(model, prompt, length, temperature=0.0, decoder=decoder)     # reads L positions
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    tail = decoder.ends[-max(2, length // TAIL):]
    row = {"model": kind, "L": length, "tok_s": length * args.batch / seconds,
           "last_ms": 1000 * (tail[-1] - tail[0]) / (len(tail) - 1), "state_kib": state_bytes(decoder.last) / 1024,
           "params": sum(p.numel() for n, p in model.named_parameters() if not n.startswith("nodes.encoder."))}
    if device.type == "cuda":
        row["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return row


def table(rows: list[dict]) -> str:
    cuda = any("peak_mib" in r for r in rows)
    head = "| model | L | tokens/s | ms/token at the end | state KiB | params w/o embedding |"
    head += " peak MiB |" if cuda else ""
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        line = (f"| {r['model']} | {r['L']} | {r['tok_s']:.0f} | {r['last_ms']:.2f} | {r['state_kib']:.1f} "
                f"| {r['params']:,} |")
        lines.append(line + (f" {r['peak_mib']:.1f} |" if cuda else ""))
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="L = 32 and 64 only (a smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.lengths = [32, 64]
    torch.set_num_threads(args.threads)
    rows = [measure(kind, length, args) for length in args.lengths for kind in ("transformer", "mamba")]
    print(table(rows))


if __name__ == "__main__":
    main()
