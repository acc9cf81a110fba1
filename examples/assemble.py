"""Assemble a hybrid model from Python: a config dict (or YAML) plus overrides, then use it like any module.

    python examples/assemble.py
"""
import torch

import hybridseq as hs

config = {
    "model": {
        "d_model": 32,
        "input": {"kind": "irregular", "channels": 6},
        "encoder": {"type": "linear"},
        "blocks": [
            {"type": "pattern", "pattern": "TMT",
             "legend": {"T": {"type": "transformer"}, "M": {"type": "mlp", "hidden_ratio": 2}}},
            {"type": "mlp", "name": "skip", "inputs": ["encoder", "b0"], "merge": "concat"},
        ],
        "head": {"type": "classify", "classes": 4},
    }
}
cfg = hs.load_config(config, overrides=["model.blocks[0].legend.T.heads=8", "model.head.pool=max"])
model = hs.assemble(cfg.model)
print(hs.describe(model))

# An irregular batch: 2 series of 10 and 7 time points, each channel missing independently.
times = torch.cumsum(torch.rand(2, 10) + 0.1, dim=1)
mask = torch.rand(2, 10, 6) > 0.3
batch = hs.IrregularBatch(values=torch.randn(2, 10, 6), times=times, mask=mask, lengths=torch.tensor([10, 7]))
logits = model(batch).x                                   # [2, 4]
loss = torch.nn.functional.cross_entropy(logits, torch.tensor([1, 3]))
loss.backward()
print("logits", tuple(logits.shape), "loss", round(loss.item(), 4))

# One block on its own, validated like a YAML section, for plain PyTorch code.
block = hs.build_block("transformer", d_model=32, heads=4, causal=True)
print("block output", tuple(block(hs.Seq(torch.randn(2, 5, 32))).x.shape))
