"""Define a block in your own script, register it with a plugin object, and use it from YAML.

    python examples/inline_block.py

A block that lives in your code needs no package or entry point: a plugin object with a
``hybridseq_register_blocks`` hook method, added with `hybridseq.plugins.add_plugin`, registers it like
an installed plugin would. To share it, move the class and the hook into a package (docs/plugins.md).
"""
from dataclasses import dataclass, replace

import torch
import yaml
from omegaconf import MISSING
from torch import nn

import hybridseq as hs
from hybridseq import plugins
from hybridseq.testing import check_block


class GatedFeedForward(hs.Block):
    """Position-wise gated feed-forward (the GLU variants of Shazeer, 2020) with a residual connection."""

    @dataclass
    class Config:
        d_model: int = MISSING       # stream width (injected)
        hidden: int = 64             # width of the gated hidden layer

    example = {"hidden": 8}

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.gate_value = nn.Linear(cfg.d_model, 2 * cfg.hidden)
        self.out = nn.Linear(cfg.hidden, cfg.d_model)

    def forward(self, seq: hs.Seq) -> hs.Seq:
        gate, value = self.gate_value(self.norm(seq.x)).chunk(2, dim=-1)     # 2 x [B, L, hidden]
        return replace(seq, x=seq.x + self.out(torch.sigmoid(gate) * value))  # [B, L, D]


class MyBlocks:
    @hs.hookimpl
    def hybridseq_register_blocks(self, register):
        register("gated_ff", GatedFeedForward)


info = plugins.add_plugin(MyBlocks(), "my-blocks")
print("registered:", info.registered)
check_block("gated_ff")                      # the conformance checks every block passes
print("gated_ff passes hybridseq.testing.check_block")

CONFIG = """
model:
  d_model: 32
  input: {kind: irregular, channels: 3}
  encoder: {type: linear}
  blocks:
    - {type: gated_ff, hidden: 64}
    - {type: transformer, heads: 4}
    - {type: gated_ff, hidden: 64}
  head: {type: classify, classes: 2}
"""
cfg = hs.load_config(yaml.safe_load(CONFIG))
model = hs.assemble(cfg.model)
print(hs.describe(model))

# A typo in the new block's section is caught like any other, with the key path and a suggestion.
typo = hs.load_config(yaml.safe_load(CONFIG), overrides=["+model.blocks[0].hiden=16"])
try:
    hs.assemble(typo.model)
except hs.ConfigError as err:
    print("config error:", err)

# A few optimizer steps on a toy task: is the mean of channel 0 positive?
torch.manual_seed(0)
times = torch.cumsum(torch.rand(16, 12) + 0.1, dim=1)                      # [B, N]
batch = hs.IrregularBatch(values=torch.randn(16, 12, 3), times=times, mask=torch.rand(16, 12, 3) > 0.2,
                          lengths=torch.randint(6, 13, (16,)))
labels = (batch.values[..., 0].mean(dim=1) > 0).long()                     # [B]
opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
for step in range(5):
    loss = nn.functional.cross_entropy(model(batch).x, labels)
    opt.zero_grad()
    loss.backward()
    opt.step()
    print(f"step {step}  loss {loss.item():.4f}")
